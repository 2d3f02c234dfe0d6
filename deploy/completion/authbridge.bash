# bash completion for authbridge: commands, sub-commands and options.
#
# Everything is read at run time from the installed program's own --help (once per shell
# and command), so completion never lags behind the options of the version installed:
#   authbridge <TAB>            the commands          authbridge auth <TAB>   test
#   authbridge pw --s<TAB>      --scheme              authbridge pw -s SHA5<TAB>  the schemes
#                                                     of `authbridge pw -l`
# An option whose value is a FILE, PATH or DIR completes file names; choices such as
# {PLAIN,LOGIN,CRAM-MD5} complete from the list --help shows.
# Installed by deploy/install-debian.sh as
# /usr/local/share/bash-completion/completions/authbridge (the bash-completion package
# loads it on first use); without that package: source this file from ~/.bashrc.

declare -gA _authbridge_help_cache

# _authbridge_help PROG [WORD...]: the --help text of that (sub-)command, cached.
_authbridge_help() {
    local key="$*"
    if [[ -z ${_authbridge_help_cache[$key]+set} ]]; then
        _authbridge_help_cache[$key]=$(COLUMNS=1000 "$@" --help 2>/dev/null)
    fi
    printf '%s\n' "${_authbridge_help_cache[$key]}"
}

# The option signature lines of a --help text: "-s SCHEME, --scheme SCHEME".
_authbridge_signatures() {
    awk '/^  -/ { sub(/^  /, ""); split($0, part, /  +/); print part[1] }'
}

# _authbridge_options PROG [WORD...]: every option string the (sub-)command accepts.
_authbridge_options() {
    _authbridge_help "$@" | _authbridge_signatures | tr ', ' '\n\n' | grep -- '^-'
}

# _authbridge_subcommands PROG [WORD...]: its sub-commands (argparse lists them indented by 4).
_authbridge_subcommands() {
    _authbridge_help "$@" | awk '/^    [a-z][-a-z]*( |$)/ { print $1 }'
}

# _authbridge_value_of OPTION PROG [WORD...]: what OPTION takes: "", FILE, a {choice,list}.
_authbridge_value_of() {
    local option=$1
    shift
    # alternatives are separated by ", "; a choice list {a,b} has no space after its commas
    _authbridge_help "$@" | _authbridge_signatures | awk -v opt="$option" '
        { n = split($0, alt, /, /)
          for (i = 1; i <= n; i++) { split(alt[i], w, " "); if (w[1] == opt) { print w[2]; exit } } }'
}

_authbridge() {
    local prog=${COMP_WORDS[0]} cur=${COMP_WORDS[COMP_CWORD]} prev=
    ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
    COMPREPLY=()

    # The command words typed so far ("authbridge auth test"): each word that is a
    # sub-command of the words before it.
    local -a path=("$prog")
    local i word
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        [[ $word == -* ]] && continue
        if _authbridge_subcommands "${path[@]}" | grep -qxF -- "$word"; then
            path+=("$word")
        fi
    done

    if [[ $prev == -* ]]; then
        local value
        value=$(_authbridge_value_of "$prev" "${path[@]}")
        case $value in
            "") ;;  # a flag: complete as usual below
            FILE | PATH | DIR)
                compopt -o filenames 2>/dev/null
                mapfile -t COMPREPLY < <(compgen -f -- "$cur")
                return 0 ;;
            \{*\})
                value=${value#\{}
                mapfile -t COMPREPLY < <(tr ',' '\n' <<<"${value%\}}" |
                    awk -v p="$cur" 'index($0, p) == 1')
                return 0 ;;
            SCHEME)
                mapfile -t COMPREPLY < <(compgen -W "$("$prog" pw -l 2>/dev/null)" -- "$cur")
                return 0 ;;
            *) return 0 ;;  # a value only the user knows (an IP, a user name)
        esac
    fi

    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$(_authbridge_options "${path[@]}")" -- "$cur")
        return 0
    fi
    local subcommands
    subcommands=$(_authbridge_subcommands "${path[@]}")
    if [[ -n $subcommands ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$subcommands" -- "$cur")
    else
        compopt -o filenames 2>/dev/null
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
    return 0
}

complete -F _authbridge authbridge
