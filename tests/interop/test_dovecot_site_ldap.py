"""``serve --dovecot-config`` with dovecot-ldap's example beside the REAL Dovecot.

Debian's shipped tree is copied with auth-ldap and auth-passwdfile enabled (the ldap
passdb first, as 10-auth.conf includes them); its dovecot-ldap.conf.ext is filled in
(hosts or uris, dn, dnpass, base, pass_filter, pass_attrs) to point at a throwaway slapd.
Each variant changes that file or the passdb: password lookups, authentication binds
after a search or to a DN template, and a failure that ends the chain. The real Dovecot
(its ldap driver) and authbridge serve the same tree; the same PLAIN (doveadm) and
CRAM-MD5 (raw client) logins must succeed, fail and fail internally on both. And
``authbridge check`` lists that ldap passdb without ever printing its dnpass.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import NamedTuple

import pytest

from authbridge.schemes import generate
from tests.ldap.slapd import (
    PEOPLE,
    PYTHON_LDAP_MISSING,
    READER_DN,
    READER_PW,
    Slapd,
    make_slapd,
    person_ldif,
)
from tests.support import missing_peer, require_binary, require_module, runtime_dir
from tests.support.dovecot_site import SiteAuthbridge, SiteDovecot, copy_site, outcomes
from tests.support.raw_auth import login

pytestmark = pytest.mark.interop

Case = tuple[str, str]
#: Logins at once against one server (each is a doveadm process or a raw connection).
WORKERS = 6
LDAP_DRIVER = Path("/usr/lib/dovecot/modules/auth/libauthdb_ldap.so")


def _crypt(scheme: str, password: str, user: str) -> str:
    return generate(scheme, password.encode(), user).split("}", 1)[1]


#: userPassword of each entry under ou=people.
DIRECTORY = {
    "ann": generate("SSHA", b"annpw", "ann"),
    "bob": "{CRYPT}" + _crypt("SHA512-CRYPT", "bobpw", "bob"),
    # no {SCHEME}: default_pass_scheme (CRYPT); slapd takes it for a cleartext value
    "carl": _crypt("MD5-CRYPT", "carlpw", "carl"),
    # slapd knows no {PLAIN}: a bind as erin never succeeds
    "erin": "{PLAIN}erinldap",
    # a cleartext userPassword: no scheme for a lookup (CRYPT), the password for a bind
    "gus": "guspw",
}
#: Entries beyond one userPassword: two values (the first one counts), none, and a
#: uid found twice (the filter matches two entries: an internal failure).
ODD_ENTRIES = [
    person_ldif("multi", "{PLAIN}one", "userPassword: {PLAIN}two"),
    f"dn: uid=nopw,{PEOPLE}\nobjectClass: inetOrgPerson\nuid: nopw\ncn: nopw\nsn: nopw\n\n",
    f"dn: ou=more,{PEOPLE}\nobjectClass: organizationalUnit\nou: more\n\n",
    person_ldif("twin", "twinpw"),
    person_ldif("twin", "twinpw").replace(f",{PEOPLE}", f",ou=more,{PEOPLE}", 1),
]
#: The example's passwd-file, after the ldap passdb.
USERS_FILE = (
    "".join(
        f"{user}:{{PLAIN}}{user}file\n" for user in ("ann", "erin", "multi", "nopw", "twin", "gus")
    )
    + "dan:{PLAIN}danpw\n"
)

CASES = [
    ("ann", "annpw"),
    ("ANN", "annpw"),  # auth_username_format = %Lu
    ("ann@example.org", "annpw"),  # the filter and the DN template use %n
    ("ann", "wrong"),
    ("ann@example.org", "annfile"),  # the passwd-file is asked for "ann" (RENAMED)
    ("bob", "bobpw"),
    ("carl", "carlpw"),
    ("erin", "erinldap"),
    ("erin", "erinfile"),  # in the passwd-file only
    ("gus", "guspw"),
    ("gus", "gusfile"),
    ("dan", "danpw"),  # not in the directory
    ("nobody", "x"),
    ("ann", ""),  # never an anonymous bind
    ("multi", "one"),
    ("multi", "two"),
    ("multi", "multifile"),
    ("nopw", "nopwfile"),  # found without a password: the next passdb is asked
    ("twin", "twinpw"),  # the next passdb refuses: still an internal failure
    ("twin", "twinfile"),
]
HASHES_CHECKED_HERE = {"ann/annpw", "ANN/annpw", "ann@example.org/annpw", "bob/bobpw"}
LOOKUP_OK = HASHES_CHECKED_HERE | {"carl/carlpw", "erin/erinldap", "multi/one"}
#: slapd checks {SSHA} and {CRYPT} itself, and a cleartext userPassword.
BIND_OK = {"ann/annpw", "ANN/annpw", "ann@example.org/annpw", "bob/bobpw", "gus/guspw"}
#: Found by the passwd-file after the ldap passdb failed (or failed internally).
FALLBACK_OK = {"erin/erinfile", "dan/danpw", "multi/multifile", "nopw/nopwfile", "gus/gusfile"}
AFTER_INTERNAL_FAILURE = {"twin/twinfile"}
#: A found entry's uid=user renames ann@example.org to ann for the passdbs after it,
#: even when its password did not match (auth_bind_userdn finds no entry for PLAIN, but
#: it searches for CRAM-MD5).
RENAMED = {"ann@example.org/annfile"}
#: CRAM-MD5 needs the plaintext: ldap's {PLAIN} values, or the passwd-file's when the
#: directory has none (a bind has none ever) or no such user.
CRAM_FROM_LDAP = {"erin/erinldap", "multi/one"}
CRAM_FALLBACK = {"nopw/nopwfile", "gus/gusfile", "dan/danpw", "twin/twinfile"} | RENAMED
CRAM_CASES = [
    ("ann@example.org", "annfile"),
    ("erin", "erinldap"),
    ("erin", "erinfile"),
    ("multi", "one"),
    ("nopw", "nopwfile"),
    ("twin", "twinpw"),
    ("twin", "twinfile"),
    ("gus", "gusfile"),  # the directory's value is no CRAM-MD5 credential
    ("dan", "danpw"),
]


class Variant(NamedTuple):
    """Settings of dovecot-ldap.conf.ext, lines added to the ldap passdb, and the logins
    that succeed (PLAIN, CRAM-MD5) or fail internally (PLAIN: an ldap passdb that failed
    internally, the next one refused; CRAM-MD5 has none); all others fail."""

    settings: dict[str, str]
    passdb: list[str]
    ok: set[str]
    cram_ok: set[str]
    tempfail: set[str]


VARIANTS = {
    "lookup": Variant(
        {"hosts": "127.0.0.1:{port}"},
        [],
        LOOKUP_OK | FALLBACK_OK | AFTER_INTERNAL_FAILURE | RENAMED,
        CRAM_FROM_LDAP | CRAM_FALLBACK,
        {"twin/twinpw"},
    ),
    "lookup-return-fail": Variant(
        {"uris": "{uri}"},
        ["  result_failure = return-fail"],
        LOOKUP_OK | AFTER_INTERNAL_FAILURE,
        CRAM_FROM_LDAP | AFTER_INTERNAL_FAILURE,
        {"twin/twinpw"},
    ),
    "auth-bind": Variant(
        {"uris": "{uri}", "auth_bind": "yes"},
        [],
        BIND_OK | FALLBACK_OK | AFTER_INTERNAL_FAILURE | RENAMED,
        CRAM_FALLBACK | {"erin/erinfile"},
        {"twin/twinpw"},
    ),
    # The DN is made, not searched: both twins are a bind away.
    "auth-bind-userdn": Variant(
        {"uris": "{uri}", "auth_bind": "yes", "auth_bind_userdn": f"uid=%n,{PEOPLE}"},
        ["  result_failure = continue"],
        BIND_OK | FALLBACK_OK | {"twin/twinpw", "twin/twinfile"},
        CRAM_FALLBACK | {"erin/erinfile"},
        set(),
    ),
}


def fill_ldap_conf(path: Path, settings: dict[str, str]) -> None:
    """Uncomment and set each key of the shipped file (its first occurrence), as an admin
    edits it."""
    text = path.read_text()
    for key, value in settings.items():
        text, count = re.subn(rf"(?m)^#?{key} =.*$", f"{key} = {value}", text, count=1)
        assert count == 1, f"{key} is not in the shipped {path.name}"
    path.write_text(text)


def make_site(base: Path, directory: Slapd, variant: str) -> Path:
    settings, passdb_lines = VARIANTS[variant][:2]
    mechanisms = "auth_mechanisms = plain login cram-md5"
    config = copy_site(base, enable=("ldap", "passwdfile"), extra=[mechanisms])
    filled = {
        "dn": READER_DN,
        "dnpass": READER_PW,
        "base": PEOPLE,
        "pass_filter": "(&(objectClass=inetOrgPerson)(uid=%n))",
        "pass_attrs": "uid=user,userPassword=password",
    }
    for key, value in settings.items():
        filled[key] = value.format(port=directory.port, uri=directory.uri)
    fill_ldap_conf(base / "dovecot-ldap.conf.ext", filled)
    if passdb_lines:
        example = base / "conf.d" / "auth-ldap.conf.ext"
        text = example.read_text()
        example.write_text(
            text.replace("  driver = ldap\n", "  driver = ldap\n" + "\n".join(passdb_lines) + "\n")
        )
    (base / "users").write_text(USERS_FILE)
    return config


@pytest.fixture(scope="module")
def directory() -> Iterator[Slapd]:
    require_binary("slapd")
    require_module("ldap", PYTHON_LDAP_MISSING)
    server = make_slapd(runtime_dir(None, "authbridge-site-ldap") / "slapd")
    try:
        server.add("".join(person_ldif(uid, value) for uid, value in DIRECTORY.items()))
        server.add("".join(ODD_ENTRIES))
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.base.parent, ignore_errors=True)


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def servers(
    request: pytest.FixtureRequest, directory: Slapd
) -> Iterator[tuple[str, SiteDovecot, SiteAuthbridge]]:
    require_binary("dovecot")
    require_binary("doveadm")
    if not LDAP_DRIVER.is_file():
        missing_peer("Dovecot's ldap driver (dovecot-ldap) is not installed")
    base = directory.base.parent / request.param
    config = make_site(base / "site", directory, request.param)
    dovecot = SiteDovecot(config, base / "dovecot.sock", base / "dovecot")
    ours = SiteAuthbridge(config, base / "authbridge.sock")
    dovecot.start()
    try:
        ours.start()
        try:
            yield request.param, dovecot, ours
        finally:
            ours.stop()
    finally:
        dovecot.stop()


def expected(cases: list[Case], ok: set[str], tempfail: set[str] = frozenset()) -> dict[Case, str]:
    found = {}
    for user, password in cases:
        login = f"{user}/{password}"
        found[(user, password)] = (
            "ok" if login in ok else "tempfail" if login in tempfail else "fail"
        )
    return found


def test_the_same_logins_succeed_and_fail(
    servers: tuple[str, SiteDovecot, SiteAuthbridge],
) -> None:
    name, dovecot, ours = servers
    theirs = outcomes(dovecot.socket_path, CASES, workers=WORKERS)
    wanted = expected(CASES, VARIANTS[name].ok, VARIANTS[name].tempfail)
    assert theirs == wanted, f"Dovecot disagrees with the expectation:\n{dovecot.log_tail()}"
    assert outcomes(ours.socket_path, CASES, workers=WORKERS) == theirs, ours.stderr_text()[-3000:]


def cram_md5(socket_path: Path, case: Case) -> str:
    """A CRAM-MD5 login with the raw client (no process per login): ok, fail or tempfail
    (Dovecot's code=temp_fail, authbridge's closed connection)."""
    try:
        reply = login(socket_path, *case, mech="CRAM-MD5")
    except ConnectionError:
        return "tempfail"
    temporary = reply.fields.get("code") == "temp_fail" or "temp" in reply.fields
    return "ok" if reply.ok else "tempfail" if temporary else "fail"


def raw_outcomes(socket_path: Path, cases: list[Case]) -> dict[Case, str]:
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return dict(zip(cases, pool.map(partial(cram_md5, socket_path), cases), strict=True))


def test_cram_md5_takes_the_same_credentials(
    servers: tuple[str, SiteDovecot, SiteAuthbridge],
) -> None:
    name, dovecot, ours = servers
    theirs = raw_outcomes(dovecot.socket_path, CRAM_CASES)
    assert theirs == expected(CRAM_CASES, VARIANTS[name].cram_ok), (
        f"Dovecot disagrees with the expectation:\n{dovecot.log_tail()}"
    )
    assert raw_outcomes(ours.socket_path, CRAM_CASES) == theirs, ours.stderr_text()[-3000:]


def test_check_lists_the_ldap_passdb_without_its_password(directory: Slapd) -> None:
    base = directory.base.parent / "check"
    config = make_site(base / "site", directory, "lookup")
    done = subprocess.run(
        [sys.executable, "-m", "authbridge", "check", "--dovecot-config", str(config)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"passdb 1: ldap ldap://127.0.0.1:{directory.port} (" in output
    assert f"store ldap:ldap://127.0.0.1:{directory.port} (password lookup): connected" in output
    assert "passdb 2: passwd-file " in output
    assert READER_PW not in output
