"""Fixtures for the ldap store tests: one real slapd shared by the session's store tests
(tests that stop or pause a directory start their own), and a store on it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authbridge.config_ldap import LdapSettings, build
from tests.ldap.slapd import (
    PEOPLE,
    PYTHON_LDAP_MISSING,
    READER_DN,
    READER_PW,
    SUFFIX,
    Slapd,
    make_slapd,
)
from tests.support import require_module, runtime_dir


@pytest.fixture(autouse=True)
def python_ldap() -> None:
    """The [ldap] extra is a peer here: skipped without it, a failure when CI=true."""
    require_module("ldap", PYTHON_LDAP_MISSING)


@pytest.fixture(scope="session")
def ldap_dir() -> Iterator[Path]:
    base = runtime_dir(None, "authbridge-ldap")
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def slapd(ldap_dir: Path) -> Iterator[Slapd]:
    server = make_slapd(ldap_dir / "shared")
    yield server
    server.stop()


def settings_for(server: Slapd, **values: Any) -> LdapSettings:
    """A store on ``server`` reading as the reader account; ``values`` override, by
    Dovecot's names (TOML types)."""
    merged: dict[str, Any] = {
        "uris": server.uri,
        "dn": READER_DN,
        "dnpass": READER_PW,
        "base": SUFFIX,
        "pass_filter": "(&(objectClass=inetOrgPerson)(uid=%n))",
        "pass_attrs": "uid=user,userPassword=password,mailNologin=nologin",
        "timeout": 2.0,
        "pool_size": 2,
        **values,
    }
    return build(merged, lambda key: f"test: {key}")


__all__ = ["PEOPLE", "settings_for"]
