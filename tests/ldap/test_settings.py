"""LdapSettings from a [[store]] table and from Dovecot's own key names: every key
checked, errors naming file, line and key, dnpass never shown; the filter and DN
templates escape every value (RFC 4515 / RFC 4514)."""

from __future__ import annotations

from pathlib import Path

import pytest

from authbridge.config import ConfigError, parse_config
from authbridge.config_ldap import IGNORED_DOVECOT_KEYS, LdapSettings, PassAttr, parse_pass_attrs
from authbridge.passdb.ldap_template import escape_dn, escape_filter, expand, values_of

STORE = """[[store]]
type = "ldap"
uris = ["ldap://ldap1.example.org", "ldaps://ldap2.example.org:636"]
dn = "cn=reader,dc=example,dc=org"
dnpass = "s3cret-dnpass"
base = "ou=people,dc=example,dc=org"
scope = "onelevel"
pass_filter = "(&(objectClass=posixAccount)(uid=%Ln))"
pass_attrs = "uid=user, userPassword=password, =nologin=%{ldap:mailNologin}"
default_pass_scheme = "ssha"
tls = true
tls_ca_cert_file = "ca.pem"
tls_require_cert = "hard"
timeout = 2
"""


def test_a_store_table_by_dovecots_names(tmp_path: Path) -> None:
    config = parse_config(STORE, "x.toml", tmp_path)
    (store,) = config.stores
    s = store.ldap
    assert store.type == "ldap" and s is not None
    assert s.uris == ("ldap://ldap1.example.org", "ldaps://ldap2.example.org:636")
    assert (s.dn, s.dnpass, s.base, s.scope) == (
        "cn=reader,dc=example,dc=org",
        "s3cret-dnpass",
        "ou=people,dc=example,dc=org",
        "onelevel",
    )
    assert s.pass_attrs == (
        PassAttr("uid", "user"),
        PassAttr("userPassword", "password"),
        PassAttr("", "nologin", "%{ldap:mailNologin}"),
    )
    assert s.default_pass_scheme == "SSHA" and store.default_scheme == "SSHA"
    assert s.tls and s.tls_require_cert == "hard" and s.timeout == 2.0
    assert s.tls_ca_cert_file == str(tmp_path / "ca.pem")  # relative to the config file
    assert not s.auth_bind and not s.uses_request
    # The password never shows: not in a repr of the config or of its store.
    assert "s3cret-dnpass" not in repr(config) and "s3cret-dnpass" not in repr(s)


def test_defaults_are_dovecots() -> None:
    config = parse_config('[[store]]\ntype = "ldap"\nuris = "ldap://h"\nbase = "dc=x"\n')
    s = config.stores[0].ldap
    assert s is not None
    assert s.pass_filter == "(&(objectClass=posixAccount)(uid=%u))"
    assert s.pass_attrs == (PassAttr("uid", "user"), PassAttr("userPassword", "password"))
    assert (s.scope, s.default_pass_scheme, s.tls_require_cert) == ("subtree", "CRYPT", "demand")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('base = "dc=x"\n', r"^x\.toml: store\[0\]\.uris: an ldap store needs uris"),
        ('uris = "ldap://h"\n', r"^x\.toml: store\[0\]\.base: an ldap store needs a base"),
        (
            'uris = "ldap://h"\nbase = "dc=x"\nscope = "sub"\n',
            r"^x\.toml:6: store\[0\]\.scope: must be one of base, onelevel, subtree",
        ),
        (
            'uris = "ldap://h"\nbase = "dc=x"\nauth_bind = "maybe"\n',
            r"^x\.toml:6: store\[0\]\.auth_bind: expected yes or no",
        ),
        (
            'uris = "ldap://h"\nbase = "dc=x"\npass_filter = "(uid=%x)"\n',
            r"^x\.toml:6: store\[0\]\.pass_filter: unknown variable '%x'",
        ),
        (
            'uris = "ldap://h"\nbase = "dc=x"\npass_filter = "uid=%u"\n',
            r"^x\.toml:6: store\[0\]\.pass_filter: expected an LDAP filter in parentheses",
        ),
        (
            'uris = "ldap://h"\nbase = "dc=x"\nauth_bind_userdn = "uid=%u"\n',
            r"^x\.toml:6: store\[0\]\.auth_bind_userdn: only used with auth_bind = yes",
        ),
        (
            'uris = "ldap://h"\nbase = "dc=x"\npass_attrs = "user Password=password"\n',
            r"^x\.toml:6: store\[0\]\.pass_attrs: 'user Password' is not an LDAP attribute",
        ),
        (
            'uris = "ldap://h"\nbase = "dc=x"\ndnpass = 12345678\n',
            r"^x\.toml:6: store\[0\]\.dnpass: expected a string, got int$",
        ),
        (
            'uris = "ldap://h"\nbase = "dc=x"\npool_size = 1.5\n',
            r"^x\.toml:6: store\[0\]\.pool_size: expected a number",
        ),
        (
            'uris = "ldap://h"\nbase = "dc=x"\ndefault_scheme = "MD5"\n',
            r"^x\.toml:6: store\[0\]\.default_scheme: unknown setting",
        ),
    ],
)
def test_errors_name_file_line_and_key(table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config('[server]\n[[store]]\ntype = "ldap"\n' + table, "x.toml")


def test_from_dovecot_reads_dovecots_strings() -> None:
    s = LdapSettings.from_dovecot(
        {
            "hosts": "ldap1.example.org ldap2.example.org:3890",
            "dn": "cn=reader,dc=example,dc=org",
            "dnpass": "pw",
            "auth_bind": "yes",
            "auth_bind_userdn": "uid=%n,ou=people,dc=example,dc=org",
            "base": "dc=example,dc=org",
            "scope": "subtree",
            "tls": "no",
            "ldap_version": "3",
            "user_attrs": "homeDirectory=home",  # a userdb's: ignored
            "user_filter": "(uid=%u)",
            "debug_level": "0",
        },
        "/etc/dovecot/dovecot-ldap.conf.ext",
    )
    assert s.uris == ("ldap://ldap1.example.org", "ldap://ldap2.example.org:3890")
    assert s.auth_bind and s.auth_bind_userdn == "uid=%n,ou=people,dc=example,dc=org"
    assert not s.tls and "user_attrs" in IGNORED_DOVECOT_KEYS


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"uris": "ldap://h", "base": "dc=x", "pas_filter": "(uid=%u)"},
            r"f:9: pas_filter: unknown",
        ),
        ({"uris": "ldap://h", "base": "dc=x", "auth_bind": "on"}, r"f:9: auth_bind: expected yes"),
        ({"uris": "ldap://h", "base": "dc=x", "sasl_bind": "yes"}, r"f:9: sasl_bind: SASL"),
        ({"uris": "ldap://h", "base": "dc=x", "ldap_version": "2"}, r"f:9: ldap_version: only"),
        ({"uris": "ldap://h"}, r"^f: base: an ldap store needs a base"),
    ],
)
def test_from_dovecot_errors_name_the_line(values: dict[str, str], message: str) -> None:
    lines = {key: 9 for key in values if key != "base"}
    with pytest.raises(ConfigError, match=message):
        LdapSettings.from_dovecot(values, "f", lines)


def test_pass_attrs_items() -> None:
    assert parse_pass_attrs(" uid=user ,mail, =proxy=y, =user=%{ldap:uid}@%d ,") == (
        PassAttr("uid", "user"),
        PassAttr("mail", "mail"),
        PassAttr("", "proxy", "y"),
        PassAttr("", "user", "%{ldap:uid}@%d"),
    )
    for bad in ("=proxy", "uid=", "=x=%{ldap:a b}", "=x=%q"):
        with pytest.raises(ValueError):
            parse_pass_attrs(bad)


def test_filter_values_are_escaped_per_rfc_4515() -> None:
    assert escape_filter("*)(uid=*") == r"\2a\29\28uid=\2a"
    assert escape_filter("a\\b\x00") == r"a\5cb\00"
    values = values_of("*)(UID=*@Example.org", None)
    assert expand("(&(uid=%Ln)(d=%d)(x=%%))", values, escape_filter) == (
        r"(&(uid=\2a\29\28uid=\2a)(d=Example.org)(x=%))"
    )


def test_dn_values_are_escaped_per_rfc_4514() -> None:
    assert escape_dn("a,ou=admins") == r"a\,ou\=admins"
    assert (escape_dn(" x"), escape_dn("#x"), escape_dn("x#")) == (r"\ x", r"\#x", "x#")
    assert escape_dn('x+"<>;\\ ') == r"x\+\"\<\>\;\\\ "
    values = values_of("evil,dc=org@example.org", None)
    assert expand("uid=%n,ou=people", values, escape_dn) == r"uid=evil\,dc\=org,ou=people"
