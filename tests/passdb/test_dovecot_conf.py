"""A site's dovecot.conf read for its passdbs: our parser, the translation into stores
and rules, and every refusal naming file, line and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from authbridge.config import Config, PassdbRules
from authbridge.errors import ConfigError
from authbridge.passdb.dovecot.dbfile import pgsql_dsn
from authbridge.passdb.dovecot.names import accepted, expand, format_problem
from authbridge.passdb.dovecot.syntax import parse_file, parse_text
from authbridge.passdb.dovecot.translate import load_dovecot_config, with_dovecot_config


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def own(path: Path) -> Config:
    """Our own parser's reading (doveconf is not asked)."""
    return load_dovecot_config(path, doveconf=None)


# ---------------------------------------------------------------------- syntax


def test_sections_settings_comments_and_continuation(tmp_path: Path) -> None:
    root = parse_text(
        "# comment\n"
        "auth_mechanisms = plain login # trailing comment\n"
        "auth_realms = a#b\n"
        'auth_default_realm = "example.org # not a comment"\n'
        "passdb {\n"
        "  driver = passwd-file\n"
        "  args = scheme=CRYPT \\\n"
        "     /etc/users\n"
        "}\n"
        "service auth {\n  unix_listener auth-userdb {\n    mode = 0600\n  }\n}\n",
        "test.conf",
    )
    assert root.value("auth_mechanisms") == "plain login"
    assert root.value("auth_realms") == "a#b"
    assert root.value("auth_default_realm") == "example.org # not a comment"
    [passdb] = root.children("passdb")
    assert passdb.value("args") == "scheme=CRYPT /etc/users"
    assert (passdb.file, passdb.line) == ("test.conf", 5)
    assert passdb.get("args").where == "test.conf:7"  # type: ignore[union-attr]
    [service] = root.children("service")
    assert service.label == "auth"
    assert service.children("unix_listener")[0].value("mode") == "0600"


def test_includes_globs_and_include_try(tmp_path: Path) -> None:
    write(tmp_path / "conf.d" / "20-b.conf", "passdb {\n  driver = sql\n}\n")
    write(tmp_path / "conf.d" / "10-a.conf", "passdb {\n  driver = passwd-file\n}\n")
    main = write(
        tmp_path / "dovecot.conf",
        "!include conf.d/*.conf\n!include_try missing.conf\n!include_try nothing/*.conf\n",
    )
    root = parse_file(main)
    assert [p.value("driver") for p in root.children("passdb")] == ["passwd-file", "sql"]
    assert root.children("passdb")[1].where == f"{tmp_path}/conf.d/20-b.conf:1"


def test_a_missing_include_names_the_line(tmp_path: Path) -> None:
    main = write(tmp_path / "dovecot.conf", "auth_mechanisms = plain\n!include gone.conf\n")
    with pytest.raises(
        ConfigError, match=rf"^{tmp_path}/dovecot.conf:2: .*gone.conf: cannot read: No such file"
    ):
        parse_file(main)


def test_an_include_loop_is_refused(tmp_path: Path) -> None:
    main = write(tmp_path / "dovecot.conf", "!include dovecot.conf\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_file(main)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("passdb {\n  driver = pam\n", "dovecot.conf:1: section 'passdb' not closed"),
        ("}\n", "dovecot.conf:1: '}' without an open section"),
        ("auth_mechanisms plain\n", "dovecot.conf:1: expected 'key = value'"),
        ("!exclude x\n", "dovecot.conf:1: unknown directive '!exclude'"),
    ],
)
def test_syntax_errors_name_file_and_line(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_file(write(tmp_path / "dovecot.conf", text))


def test_dollar_words_expand_at_top_level_only() -> None:
    root = parse_text(
        "auth_mechanisms = plain\n"
        "auth_realms = x $auth_mechanisms y$auth_mechanisms\n"
        'auth_default_realm = "$auth_mechanisms"\n'
        "passdb {\n  args = $auth_mechanisms\n}\n",
        "t",
    )
    assert root.value("auth_realms") == "x plain y$auth_mechanisms"
    assert root.value("auth_default_realm") == "$auth_mechanisms"
    assert root.children("passdb")[0].value("args") == "$auth_mechanisms"


# ---------------------------------------------------------------------- translation


def test_passwd_file_passdbs_become_stores_with_rules(tmp_path: Path) -> None:
    main = write(
        tmp_path / "dovecot.conf",
        "auth_mechanisms = plain login cram-md5\n"
        "disable_plaintext_auth = no\n"
        "auth_username_format = %u\n"
        "auth_default_realm = example.org\n"
        "passdb {\n  driver = passwd-file\n  deny = yes\n  args = /etc/deny\n}\n"
        "passdb {\n"
        "  driver = passwd-file\n"
        "  args = scheme=sha512-crypt username_format=%n /etc/users\n"
        "  result_failure = continue-fail\n"
        "  result_success = continue\n"
        "  skip = authenticated\n"
        "  mechanisms = plain login\n"
        "  username_filter = *@example.org !root@*\n"
        "}\n",
    )
    config = own(main)
    assert config.server.mechanisms == ("plain", "login", "cram-md5")
    assert config.policy.require_secured is False
    assert config.usernames.lowercase is False
    assert config.usernames.default_domain == "example.org"
    deny, users = config.stores
    assert (deny.type, deny.path, deny.default_scheme) == ("passwd-file", "/etc/deny", "CRYPT")
    assert deny.rules == PassdbRules(deny=True, where=f"{main}:5")
    assert (users.path, users.default_scheme) == ("/etc/users", "SHA512-CRYPT")
    assert users.rules == PassdbRules(
        result_success="continue",
        result_failure="continue-fail",
        skip="authenticated",
        username_format="%n",
        mechanisms=("PLAIN", "LOGIN"),
        username_filter=("*@example.org", "!root@*"),
        where=f"{main}:10",
    )
    assert config.dovecot_chain


def test_dovecot_defaults_apply_when_nothing_is_set(tmp_path: Path) -> None:
    main = write(tmp_path / "dovecot.conf", "passdb {\n  driver = passwd-file\n  args = /u\n}\n")
    config = own(main)
    assert config.server.mechanisms == ("plain",)
    assert config.policy.require_secured is True  # disable_plaintext_auth = yes
    assert config.usernames.lowercase is True  # %Lu
    assert config.stores[0].rules == PassdbRules(where=f"{main}:1")


def test_auth_allow_cleartext_of_dovecot_24(tmp_path: Path) -> None:
    main = write(
        tmp_path / "dovecot.conf",
        "auth_allow_cleartext = yes\npassdb {\n  driver = passwd-file\n  args = /u\n}\n",
    )
    assert own(main).policy.require_secured is False


def test_sql_passdb_reads_its_args_file(tmp_path: Path) -> None:
    sql = write(
        tmp_path / "dovecot-sql.conf.ext",
        "driver = pgsql\n"
        "connect = host=db1 host=db2 dbname=mail user=dovecot password=pa$$word maxconns=7\n"
        "default_pass_scheme = SHA512-CRYPT\n"
        "password_query = SELECT username AS user, password \\\n"
        "  FROM users WHERE username = '%u' AND active = 'Y'\n"
        "user_query = SELECT home FROM users WHERE username = '%u'\n",
    )
    main = write(tmp_path / "dovecot.conf", f"passdb {{\n  driver = sql\n  args = {sql}\n}}\n")
    [store] = own(main).stores
    assert store.type == "sql" and store.driver == "postgresql"
    assert store.dsn == "host=db1,db2 dbname=mail user=dovecot password=pa$$word"
    assert store.pool_size == 7
    assert store.default_scheme == "SHA512-CRYPT"
    assert store.password_query == (
        "SELECT username AS user, password FROM users WHERE username = '%u' AND active = 'Y'"
    )


def test_sql_defaults_are_dovecots(tmp_path: Path) -> None:
    sql = write(tmp_path / "sql.conf", "driver = sqlite\nconnect = /var/lib/users.db\n")
    main = write(tmp_path / "dovecot.conf", f"passdb {{\n  driver = sql\n  args = {sql}\n}}\n")
    [store] = own(main).stores
    assert (store.driver, store.dsn, store.default_scheme) == ("sqlite", "/var/lib/users.db", "MD5")
    assert "username = '%n' AND domain = '%d'" in store.password_query


def passdb_conf(tmp_path: Path, body: str, head: str = "") -> Path:
    return write(tmp_path / "dovecot.conf", f"{head}passdb {{\n{body}}}\n")


@pytest.mark.parametrize(
    ("head", "body", "problem"),
    [
        ("", "  driver = pam\n", r":2: passdb 1 \(pam\): driver: driver 'pam' is not supported"),
        ("", "  driver = checkpassword\n  args = /bin/x\n", "driver 'checkpassword' is not"),
        ("", "  driver = bsdauth\n", "driver 'bsdauth' is not supported"),
        ("", "  driver = static\n  args = password=x\n", "driver 'static' is not supported"),
        (
            "",
            "  driver = passwd-file\n  master = yes\n  args = /m\n",
            r":3: passdb 1 \(passwd-file\): master: master passdbs",
        ),
        ("", "  driver = passwd-file\n  args = blocking=no /u\n", r":3: .*args: expected"),
        ("", "  driver = passwd-file\n  args = /etc/%d/passwd\n", "a path with variables"),
        ("", "  driver = passwd-file\n  args = users\n", "must be an absolute path"),
        ("", "  driver = passwd-file\n  args = scheme=NOPE /u\n", "scheme=NOPE: unknown scheme"),
        ("", "  driver = passwd-file\n  args = username_format=%h /u\n", "'%h' is not supported"),
        ("", "  driver = passwd-file\n  args = /u\n  result_success = go\n", ":4: .*'go'"),
        ("", "  driver = passwd-file\n  args = /u\n  skip = sometimes\n", ":4: .*skip"),
        ("", "  driver = passwd-file\n  args = /u\n  override_fields = x=y\n", ":4: .*not supp"),
        ("", "  driver = passwd-file\n  args = /u\n  colour = red\n", ":4: .*unknown passdb"),
        (
            "auth_mechanisms = plain gssapi\n",
            "  driver = passwd-file\n  args = /u\n",
            ":1: auth_mech",
        ),
        ("auth_username_format = %Ln\n", "  driver = passwd-file\n  args = /u\n", ":1: .*%Ln"),
        (
            "disable_plaintext_auth = maybe\n",
            "  driver = passwd-file\n  args = /u\n",
            ":1: .*yes or",
        ),
    ],
)
def test_what_cannot_be_served_is_refused_with_file_line_reason(
    tmp_path: Path, head: str, body: str, problem: str
) -> None:
    main = passdb_conf(tmp_path, body, head)
    with pytest.raises(
        ConfigError, match=rf"^{main}{problem}" if problem.startswith(":") else problem
    ):
        own(main)


def test_no_passdb_is_refused(tmp_path: Path) -> None:
    main = write(tmp_path / "dovecot.conf", "auth_mechanisms = plain\n")
    with pytest.raises(ConfigError, match="no passdb section"):
        own(main)


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("driver = mysql\nconnect = host=x\n", "sql.conf:1: driver: mysql is not supported"),
        ("driver = pgsql\n", "sql.conf: connect: not set"),
        ("connect = x\n", r"sql.conf: driver: not set \(authbridge speaks"),
        (
            "driver = pgsql\nconnect = x\npassword_query = SELECT '%h'\n",
            "sql.conf:3: password_query: unknown variable",
        ),
        ("driver = pgsql\nconnect = x\nfrobnicate = 1\n", "sql.conf:3: frobnicate: unknown"),
    ],
)
def test_sql_args_file_problems_name_its_line(tmp_path: Path, sql: str, problem: str) -> None:
    path = write(tmp_path / "sql.conf", sql)
    main = passdb_conf(tmp_path, f"  driver = sql\n  args = {path}\n")
    with pytest.raises(ConfigError, match=problem):
        own(main)


def test_unreadable_args_file_names_the_passdb_line(tmp_path: Path) -> None:
    main = passdb_conf(tmp_path, f"  driver = sql\n  args = {tmp_path}/nope.conf\n")
    with pytest.raises(ConfigError, match=rf"^{main}:3: args: .*nope.conf: cannot read"):
        own(main)


def test_an_ldap_passdb_becomes_an_ldap_store_with_dovecot_s_keys(tmp_path: Path) -> None:
    ldap = write(
        tmp_path / "ldap.conf",
        "hosts = ldap.example.org\nbase = dc=example\npass_filter = (uid=%n)\nauth_bind = yes\n",
    )
    main = passdb_conf(tmp_path, f"  driver = ldap\n  args = {ldap}\n  result_failure = continue\n")
    (store,) = own(main).stores
    assert store.type == "ldap" and store.ldap is not None and store.rules is not None
    assert store.ldap.uris == ("ldap://ldap.example.org",) and store.ldap.auth_bind
    assert store.rules.result_failure == "continue"


def test_an_ldap_file_error_names_its_line_and_key(tmp_path: Path) -> None:
    ldap = write(
        tmp_path / "ldap.conf", "hosts = ldap.example.org\nbase = dc=example\nscope = deep\n"
    )
    main = passdb_conf(tmp_path, f"  driver = ldap\n  args = {ldap}\n")
    with pytest.raises(ConfigError, match=rf"{ldap}:3: scope"):
        own(main)


def test_toml_stores_and_dovecot_config_do_not_mix(tmp_path: Path) -> None:
    from authbridge.config import StoreConfig

    main = passdb_conf(tmp_path, "  driver = passwd-file\n  args = /u\n")
    config = Config(stores=(StoreConfig("passwd-file", "/x"),), source="a.toml")
    with pytest.raises(ConfigError, match=r"a\.toml: .*cannot be combined"):
        with_dovecot_config(config, main, doveconf=None)


# ---------------------------------------------------------------------- names


def test_username_format_expansion() -> None:
    assert expand("%u", "Ann@Ex.org") == "Ann@Ex.org"
    assert expand("%n", "ann@ex.org") == "ann"
    assert expand("%Ln-%Ud%%", "Ann@ex.org") == "ann-EX.ORG%"
    assert expand("%{username}@%{domain}", "ann") == "ann@"
    assert format_problem("%Lu") is None
    assert format_problem("%h") is not None
    assert format_problem("%u%") == "a lone % at the end"


def test_username_filter_is_dovecots() -> None:
    assert accepted(("*@example.org", "!root@*"), "ann@example.org")
    assert not accepted(("*@example.org", "!root@*"), "root@example.org")
    assert not accepted(("*@example.org",), "ann@other.org")
    assert accepted(("!bad?",), "ann")
    assert not accepted(("!bad?",), "bad1")


def test_pgsql_connect_becomes_a_libpq_string() -> None:
    assert pgsql_dsn("host=/run/postgresql dbname=mail") == (
        "host=/run/postgresql dbname=mail",
        None,
    )
    assert pgsql_dsn("host=a host=b user='x y' maxconns=3") == ("host=a,b user='x y'", 3)


def test_comment_lines_do_not_continue_or_end_a_continued_line() -> None:
    root = parse_text(
        "# example = SELECT a \\\n"
        "#   FROM b\n"
        "password_query = \\\n"
        "  SELECT x \\\n"
        "# a comment in between\n"
        "\n"
        "  FROM y\n"
        "driver = pgsql\n"
        "user_query = SELECT \\\n"
        "# the end of the file, the line unfinished\n",
        "sql.conf",
    )
    assert root.value("password_query") == "SELECT x FROM y"
    assert root.get("user_query") is None  # dropped, as by Dovecot
    assert root.get("password_query").where == "sql.conf:3"  # type: ignore[union-attr]
    assert root.value("driver") == "pgsql"


def test_a_toml_config_keeps_its_other_settings(tmp_path: Path) -> None:
    from dataclasses import replace

    from authbridge.config import PolicyConfig, ServerConfig

    main = passdb_conf(
        tmp_path, "  driver = passwd-file\n  args = /u\n", "auth_mechanisms = plain login\n"
    )
    toml = Config(
        server=ServerConfig(socket_path="/run/authbridge/auth-client", mechanisms=("plain",)),
        policy=replace(PolicyConfig(), failure_delay=1.0),
        source="authbridge.toml",
    )
    config = with_dovecot_config(toml, main, doveconf=None)
    assert config.server.socket_path == "/run/authbridge/auth-client"
    assert config.server.mechanisms == ("plain", "login")  # the Dovecot setting
    assert config.policy.failure_delay == 1.0 and config.policy.require_secured
    assert config.source == "authbridge.toml"
    assert [store.path for store in config.stores] == ["/u"]
    alone = with_dovecot_config(Config(source="<command line>"), main, doveconf=None)
    assert alone.source == str(main)
