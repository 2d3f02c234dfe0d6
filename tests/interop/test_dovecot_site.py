"""``serve --dovecot-config`` beside the REAL Dovecot on the same site config.

The config is the one Debian's dovecot-core ships, copied, with its auth-deny and
auth-passwdfile examples enabled and one more passdb of ours after them; each variant
changes the chaining rules. The real Dovecot and authbridge serve that same tree, and
the same logins (doveadm auth test, a secured SMTP session) must succeed and fail on
both, as expected.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from authbridge.schemes import generate
from tests.support import require_binary, runtime_dir, wait_for_value
from tests.support.dovecot_site import SiteAuthbridge, SiteDovecot, copy_site, outcomes

pytestmark = pytest.mark.interop

CASES = [
    ("alice", "alicepw"),  # passwd-file, SHA512-CRYPT
    ("ALICE", "alicepw"),  # auth_username_format = %Lu
    ("alice", "wrong"),
    ("bob", "bobold"),  # the example's users file
    ("bob", "bobnew"),  # ... mismatch there, our passdb after it has this one
    ("bob", "other"),
    ("carol", "carolpw"),  # listed in deny-users
    ("dave", "davepw"),  # no {SCHEME}: the example's scheme=CRYPT
    ("erin@example.org", "erinpw"),  # only in ours, looked up by username_format=%n
    ("erin", "erinpw"),
    ("nobody", "x"),
]

#: Each variant: lines changed in the site, and the logins that succeed there.
VARIANTS = {
    # Dovecot's defaults: a failure continues, a success returns.
    "defaults": (
        {},
        {"alice/alicepw", "ALICE/alicepw", "bob/bobold", "bob/bobnew", "dave/davepw"}
        | {"erin@example.org/erinpw", "erin/erinpw"},
    ),
    # The example's failures end the chain: ours is never asked.
    "return-fail": (
        {"auth-passwdfile": "  result_failure = return-fail"},
        {"alice/alicepw", "ALICE/alicepw", "bob/bobold", "dave/davepw"},
    ),
    # A success continues to ours, which only runs for authenticated users: it must know
    # them too (alice and dave it does not know: their login fails at the end).
    "continue-skip": (
        {"auth-passwdfile": "  result_success = continue", "ours": "  skip = unauthenticated"},
        {"bob/bobold"},
    ),
}


def site_users(site: Path) -> None:
    crypt = generate("SHA512-CRYPT", b"alicepw", "alice", rounds=5000).removeprefix(
        "{SHA512-CRYPT}"
    )
    md5 = generate("MD5-CRYPT", b"davepw", "dave").removeprefix("{MD5-CRYPT}")
    (site / "users").write_text(
        f"alice:{{SHA512-CRYPT}}{crypt}\nbob:{{PLAIN}}bobold\ncarol:{{PLAIN}}carolpw\ndave:{md5}\n"
    )
    (site / "deny-users").write_text("carol\n")
    (site / "users-ours").write_text("bob:{PLAIN}bobnew\nerin:{PLAIN}erinpw\n")
    assert crypt.startswith("$6$") and md5.startswith("$1$")


def make_site(base: Path, changes: dict[str, str]) -> Path:
    ours = [
        "passdb {",
        "  driver = passwd-file",
        f"  args = scheme=PLAIN username_format=%n {base}/users-ours",
        changes.get("ours", ""),
        "}",
    ]
    mechanisms = ["auth_mechanisms = plain login cram-md5"]
    config = copy_site(base, enable=("deny", "passwdfile"), extra=[*mechanisms, *ours])
    if "auth-passwdfile" in changes:
        example = base / "conf.d" / "auth-passwdfile.conf.ext"
        text = example.read_text()
        passdb = re.search(r"(?m)^passdb \{\n", text)
        assert passdb is not None
        example.write_text(
            text[: passdb.end()] + changes["auth-passwdfile"] + "\n" + text[passdb.end() :]
        )
    site_users(base)
    return config


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def servers(request: pytest.FixtureRequest) -> Iterator[tuple[str, Path, Path]]:
    require_binary("dovecot")
    require_binary("doveadm")
    base = runtime_dir(None, "authbridge-site")
    config = make_site(base / "site", VARIANTS[request.param][0])
    dovecot = SiteDovecot(config, base / "dovecot.sock", base / "dovecot")
    ours = SiteAuthbridge(config, base / "authbridge.sock")
    dovecot.start()
    try:
        ours.start()
        try:
            yield request.param, dovecot.socket_path, ours.socket_path
        finally:
            ours.stop()
    finally:
        dovecot.stop()


def test_the_same_logins_succeed_and_fail(servers: tuple[str, Path, Path]) -> None:
    variant, dovecot_socket, ours_socket = servers
    theirs = outcomes(dovecot_socket, CASES)
    ours = outcomes(ours_socket, CASES)
    expected = {
        (user, password): "ok" if f"{user}/{password}" in VARIANTS[variant][1] else "fail"
        for user, password in CASES
    }
    assert theirs == expected, "Dovecot itself disagrees with the expectation"
    assert ours == theirs


def test_sighup_rereads_the_dovecot_config(tmp_path_factory: pytest.TempPathFactory) -> None:
    require_binary("doveadm")
    base = runtime_dir(tmp_path_factory, "authbridge-site-reload")
    config = make_site(base / "site", {})
    ours = SiteAuthbridge(config, base / "authbridge.sock")
    ours.start()
    try:
        assert outcomes(ours.socket_path, [("bob", "bobnew")]) == {("bob", "bobnew"): "ok"}
        example = base / "site" / "conf.d" / "auth-passwdfile.conf.ext"
        example.write_text(
            example.read_text().replace(
                "passdb {\n", "passdb {\n  result_failure = return-fail\n", 1
            )
        )
        assert ours.proc is not None
        ours.proc.send_signal(signal.SIGHUP)
        wait_for_value(
            lambda: outcomes(ours.socket_path, [("bob", "bobnew")])[("bob", "bobnew")],
            lambda outcome: outcome == "fail",
            what="the reloaded chain to end at the example's passdb",
        )
        assert outcomes(ours.socket_path, [("bob", "bobold")]) == {("bob", "bobold"): "ok"}
    finally:
        ours.stop()


#: CRAM-MD5 needs a plaintext-equivalent: alice's and dave's hashes cannot serve it.
CRAM_SUCCEED = {
    "defaults": {"bob/bobold", "erin@example.org/erinpw", "erin/erinpw"},
    "return-fail": {"bob/bobold"},
    # After a continue, the last passdb's credentials are the ones compared.
    "continue-skip": {"bob/bobnew"},
}


def test_cram_md5_takes_the_same_credentials(servers: tuple[str, Path, Path]) -> None:
    variant, dovecot_socket, ours_socket = servers
    theirs = outcomes(dovecot_socket, CASES, "CRAM-MD5")
    expected = {
        (user, password): "ok" if f"{user}/{password}" in CRAM_SUCCEED[variant] else "fail"
        for user, password in CASES
    }
    assert theirs == expected, "Dovecot itself disagrees with the expectation"
    assert outcomes(ours_socket, CASES, "CRAM-MD5") == theirs
