#!/bin/sh
# Install authbridge's system integration on Debian 12: the authbridge user and group,
# /etc/authbridge with an example config and users file, the systemd units, the man pages
# (authbridge(1), authbridge-COMMAND(1)) and bash completion, under /usr/local/share.
# Idempotent: run it again after an upgrade; it never overwrites your config or users file,
# and the unit files it owns are refreshed (put your own changes in drop-ins).
#
# usage: install-debian.sh [options]
#   --root DIR         install into DIR instead of / (a staging tree or a test; DIR/etc/passwd
#                      and DIR/etc/group must exist). systemctl is never run then.
#   --mta exim|postfix which MTA's user may use the socket (default: auto, from the groups
#                      Debian-exim / postfix). postfix puts the socket inside Postfix's chroot.
#   --replace-dovecot  listen on /run/dovecot/auth-client, for hosts WITHOUT Dovecot
#   --rehash           give the daemon a writable /var/lib/authbridge for rehash on login
#                      (a service drop-in; also installed, without the option, when
#                      the installed authbridge.toml has "[rehash] enabled = true")
#   --bin PATH         the authbridge executable the service runs
#                      (default /usr/local/bin/authbridge)
#   --venv DIR         also create a virtualenv at DIR, pip install this checkout into it and
#                      link PATH (--bin) to DIR/bin/authbridge; e.g. --venv /opt/authbridge
#   --venv-args ARGS   extra arguments for "python3 -m venv" (e.g. --system-site-packages)
#   --pip-args ARGS    extra arguments for "pip install" (e.g. "--no-deps --no-build-isolation")
#   --no-enable        do not run systemctl even when systemd is running
set -eu

ROOT=/
MTA=auto
REPLACE_DOVECOT=no
REHASH=no
BIN=/usr/local/bin/authbridge
VENV=
VENV_ARGS=
PIP_ARGS=
ENABLE=yes

die() { echo "install-debian.sh: $*" >&2; exit 1; }
need_arg() { [ $# -ge 2 ] || die "$1 needs an argument"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) need_arg "$@"; ROOT=$2; shift 2 ;;
    --mta) need_arg "$@"; MTA=$2; shift 2 ;;
    --replace-dovecot) REPLACE_DOVECOT=yes; shift ;;
    --rehash) REHASH=yes; shift ;;
    --bin) need_arg "$@"; BIN=$2; shift 2 ;;
    --venv) need_arg "$@"; VENV=$2; shift 2 ;;
    --venv-args) need_arg "$@"; VENV_ARGS=$2; shift 2 ;;
    --pip-args) need_arg "$@"; PIP_ARGS=$2; shift 2 ;;
    --no-enable) ENABLE=no; shift ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (try --help)" ;;
  esac
done

[ "$(id -u)" = 0 ] || die "must run as root (it creates a system user and root-owned files)"
case "$BIN" in /*) ;; *) die "--bin must be an absolute path" ;; esac
case "$VENV" in ""|/*) ;; *) die "--venv must be an absolute path" ;; esac
ROOT=$(cd "$ROOT" 2>/dev/null && pwd) || die "--root: no such directory"
[ "$ROOT" = / ] && R= || R=$ROOT
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
UNITS=$R/etc/systemd/system
ETC=$R/etc/authbridge

group_exists() { [ -f "$R/etc/group" ] && grep -q "^$1:" "$R/etc/group"; }
gid_of() { awk -F: -v g="$1" '$1 == g { print $3 }' "$R/etc/group"; }

# --- the authbridge user and group ------------------------------------------------------
[ -f "$R/etc/passwd" ] && [ -f "$R/etc/group" ] || die "$R/etc/passwd or $R/etc/group missing"
install -d -m 0755 "$R/etc/sysusers.d"
install -m 0644 "$HERE/systemd/authbridge.sysusers" "$R/etc/sysusers.d/authbridge.conf"
if command -v systemd-sysusers >/dev/null 2>&1; then
  systemd-sysusers --root="$ROOT" "$R/etc/sysusers.d/authbridge.conf"
elif [ -z "$R" ]; then
  getent group authbridge >/dev/null || addgroup --system authbridge >/dev/null
  getent passwd authbridge >/dev/null || adduser --system --ingroup authbridge \
    --home /nonexistent --no-create-home --shell /usr/sbin/nologin \
    --gecos "authbridge SMTP AUTH server" authbridge >/dev/null
else
  die "--root needs systemd-sysusers (package systemd) to create the user inside $ROOT"
fi
GID=$(gid_of authbridge)
[ -n "$GID" ] || die "group authbridge was not created"

# --- /etc/authbridge: readable by the daemon's group, never by others -----------------------
install -d -m 0750 -o 0 -g "$GID" "$ETC"
install -m 0640 -o 0 -g "$GID" "$HERE/authbridge.toml.example" "$ETC/authbridge.toml.example"
created=
if [ ! -e "$ETC/authbridge.toml" ]; then
  install -m 0640 -o 0 -g "$GID" "$HERE/authbridge.toml.example" "$ETC/authbridge.toml"
  created="$created $ETC/authbridge.toml"
fi
if [ ! -e "$ETC/users" ]; then
  install -m 0640 -o 0 -g "$GID" "$HERE/users.example" "$ETC/users"
  created="$created $ETC/users"
fi

# --- optional: the program itself, in its own virtualenv ------------------------------------
if [ -n "$VENV" ]; then
  [ -x "$R$VENV/bin/python" ] || python3 -m venv $VENV_ARGS "$R$VENV"
  # shellcheck disable=SC2086  # word splitting of the extra arguments is intended
  "$R$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $PIP_ARGS "$REPO"
  install -d -m 0755 "$R$(dirname "$BIN")"
  ln -sfn "$VENV/bin/authbridge" "$R$BIN"
fi

# --- systemd units -----------------------------------------------------------------------
case "$MTA" in
  auto)
    if group_exists Debian-exim; then MTA=exim
    elif group_exists postfix; then MTA=postfix
    else die "neither Exim (group Debian-exim) nor Postfix (group postfix) is installed; pass --mta"
    fi ;;
  exim) group_exists Debian-exim || echo "warning: group Debian-exim does not exist yet" >&2 ;;
  postfix) group_exists postfix || echo "warning: group postfix does not exist yet" >&2 ;;
  *) die "--mta must be exim, postfix or auto" ;;
esac

install -d -m 0755 "$UNITS" "$UNITS/authbridge.socket.d" "$UNITS/authbridge.service.d"
install -m 0644 "$HERE/systemd/authbridge.socket" "$HERE/systemd/authbridge.service" "$UNITS/"

# Each drop-in below is present exactly when its option is given, so re-running the script
# with other options switches the setup over.
dropin() {  # dropin NAME yes|no: install or remove one of our shipped socket drop-ins
  if [ "$2" = yes ]; then
    install -m 0644 "$HERE/systemd/dropins/authbridge.socket.d/$1" "$UNITS/authbridge.socket.d/$1"
  else
    rm -f "$UNITS/authbridge.socket.d/$1"
  fi
}
[ "$MTA" = postfix ] && dropin postfix.conf yes || dropin postfix.conf no
dropin replace-dovecot.conf "$REPLACE_DOVECOT"

# Rehash on login writes the users file: asked for, or enabled in the installed config
# (a [rehash] section whose "enabled" is true; comments and other sections ignored).
if [ "$REHASH" = no ] && [ -f "$ETC/authbridge.toml" ] && awk '
    /^[ \t]*\[/ { section = $0; gsub(/[ \t]/, "", section) }
    section == "[rehash]" && /^[ \t]*enabled[ \t]*=[ \t]*true([ \t]|#|$)/ { found = 1 }
    END { exit !found }' "$ETC/authbridge.toml"; then
  REHASH=yes
fi
if [ "$REHASH" = yes ]; then
  install -m 0644 "$HERE/systemd/dropins/authbridge.service.d/rehash.conf" \
    "$UNITS/authbridge.service.d/rehash.conf"
else
  rm -f "$UNITS/authbridge.service.d/rehash.conf"
fi

if [ "$BIN" != /usr/local/bin/authbridge ]; then
  cat >"$UNITS/authbridge.service.d/executable.conf" <<EOF
# Written by install-debian.sh --bin: the authbridge executable on this host.
[Service]
ExecStart=
ExecStart=$BIN serve --config /etc/authbridge/authbridge.toml
EOF
  chmod 0644 "$UNITS/authbridge.service.d/executable.conf"
else
  rm -f "$UNITS/authbridge.service.d/executable.conf"
fi
rmdir "$UNITS/authbridge.service.d" "$UNITS/authbridge.socket.d" 2>/dev/null || true

install -d -m 0755 "$R/usr/local/share/doc/authbridge"
install -m 0644 "$HERE/README.md" "$R/usr/local/share/doc/authbridge/README.md"

# --- man pages (made from the installed program's options) and bash completion ----------
# The pages are generated, never shipped, so they always match the installed version.
if [ -n "$VENV" ]; then
  MANPY=$R$VENV/bin/python
elif [ -r "$R$BIN" ]; then
  MANPY=$(head -n 1 "$R$BIN" | sed -n 's/^#! *//p')  # the entry point's interpreter
else
  MANPY=
fi
MAN1=$R/usr/local/share/man/man1
install -d -m 0755 "$MAN1"
# shellcheck disable=SC2086  # a shebang may carry arguments (#!/usr/bin/env python3)
if [ -n "$MANPY" ] && $MANPY -m authbridge.commands.manpages "$MAN1" >/dev/null; then
  chmod 0644 "$MAN1"/authbridge*.1
else
  echo "warning: man pages not installed: no Python that imports authbridge (pass --venv or --bin)" >&2
fi
install -d -m 0755 "$R/usr/local/share/bash-completion/completions"
install -m 0644 "$HERE/completion/authbridge.bash" \
  "$R/usr/local/share/bash-completion/completions/authbridge"

# --- activate (only on a live systemd host) -------------------------------------------------
enabled=no
if [ -z "$R" ] && [ "$ENABLE" = yes ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable authbridge.socket authbridge.service
  enabled=yes
fi

# --- what next ----------------------------------------------------------------------------
[ -x "$R$BIN" ] || echo "warning: $BIN does not exist; install authbridge (see $REPO/deploy/README.md) or pass --bin/--venv" >&2
case "$MTA" in
  exim) socket_path=/run/authbridge/auth-client ;;
  postfix) socket_path=/var/spool/postfix/private/authbridge ;;
esac
[ "$REPLACE_DOVECOT" = yes ] && socket_path=/run/dovecot/auth-client
echo "authbridge installed into $ROOT (MTA: $MTA, socket: $socket_path)"
[ -n "$created" ] && echo "created:$created"
echo "next steps:"
echo "  1. add users to /etc/authbridge/users (authbridge pw -s SHA512-CRYPT makes hashes)"
echo "  2. review /etc/authbridge/authbridge.toml"
if [ "$enabled" = yes ]; then
  echo "  3. systemctl start authbridge.socket"
else
  echo "  3. systemctl daemon-reload && systemctl enable --now authbridge.socket"
fi
if [ "$MTA" = postfix ]; then
  echo "  4. main.cf: smtpd_sasl_type = dovecot, smtpd_sasl_path = private/authbridge, smtpd_sasl_auth_enable = yes"
else
  echo "  4. Exim: driver = dovecot authenticators with server_socket = $socket_path"
fi
echo "     (authbridge emit-exim-config / emit-postfix-config write them for you)"
echo "  5. check: authbridge auth test -a $socket_path USER   (or, with dovecot-core: doveadm auth test -a $socket_path USER)"
