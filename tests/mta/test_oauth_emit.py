"""emit-exim-config and emit-postfix-config offer OAUTHBEARER and XOAUTH2 when the
configuration has ``[oauth]`` (TLS-only, as any mechanism that carries a secret in clear),
and not without it. The emitted Exim authenticators run in the real Exim in
tests/interop/test_oauth_mta.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def emit(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "authbridge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


@pytest.fixture
def configs(tmp_path: Path) -> tuple[Path, Path]:
    with_oauth = tmp_path / "oauth.toml"
    with_oauth.write_text(
        '[server]\nsocket = "/run/authbridge/auth-client"\n'
        '[oauth]\njwks_url = "https://idp.example.org/certs"\n'
    )
    without = tmp_path / "plain.toml"
    without.write_text('[server]\nsocket = "/run/authbridge/auth-client"\n')
    return with_oauth, without


def test_postfix_filter_lists_them_only_with_oauth(configs: tuple[Path, Path]) -> None:
    with_oauth, without = configs
    out = emit("emit-postfix-config", "--config", str(with_oauth), "--allow-auth-without-tls")
    assert "smtpd_sasl_mechanism_filter = plain, login, cram-md5, oauthbearer, xoauth2\n" in out
    # Flagged plaintext: noplaintext hides them on sessions without TLS.
    assert "smtpd_sasl_security_options = noanonymous, noplaintext\n" in out
    out = emit("emit-postfix-config", "--config", str(without), "--allow-auth-without-tls")
    assert "oauthbearer" not in out


def test_exim_gets_one_tls_only_authenticator_each(configs: tuple[Path, Path]) -> None:
    with_oauth, without = configs
    out = emit("emit-exim-config", "--config", str(with_oauth), "--section", "auth")
    for name, public in (("oauthbearer", "OAUTHBEARER"), ("xoauth2", "XOAUTH2")):
        block = out[out.index(f"authbridge_{name}:") :].split("\n\n")[0]
        assert "driver = dovecot" in block and f"public_name = {public}" in block
        assert "server_advertise_condition = ${if def:tls_in_cipher}" in block
    assert "OAUTH" not in emit("emit-exim-config", "--config", str(without), "--section", "auth")
