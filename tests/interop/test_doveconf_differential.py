"""Our own dovecot.conf parser against the real ``doveconf`` on the same files.

Debian's shipped tree is copied with each of its auth examples enabled (alone and
together); both readings must give the same passdb list (every passdb setting, with
Dovecot's defaults filled in) and the same translation: the same stores and rules, or
the same refusal.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from authbridge.config import Config
from authbridge.errors import ConfigError
from authbridge.passdb.dovecot.doveconf import read_with_doveconf
from authbridge.passdb.dovecot.syntax import Section, parse_file
from authbridge.passdb.dovecot.translate import PASSDB_DEFAULTS, load_dovecot_config
from tests.support import require_binary
from tests.support.dovecot_site import EXAMPLES, copy_site

pytestmark = pytest.mark.interop

SETS = [
    ("system",),  # as shipped: PAM
    ("passwdfile",),
    ("deny", "passwdfile"),
    ("master", "passwdfile"),
    ("sql",),
    ("ldap",),
    ("checkpassword",),
    ("static",),
    ("deny", "master", "sql", "passwdfile"),
    EXAMPLES,
]


def passdb_list(root: Section) -> list[dict[str, str]]:
    return [
        {key: section.value(key, default) for key, default in PASSDB_DEFAULTS.items()}
        for section in root.children("passdb")
    ]


def translation(path: Path, doveconf: str | None) -> Config | str:
    try:
        return load_dovecot_config(path, doveconf)
    except ConfigError as exc:
        return str(exc)


def configure_sql(site: Path) -> None:
    """The shipped dovecot-sql.conf.ext with a driver, a connection and its example query."""
    sql = site / "dovecot-sql.conf.ext"
    text = sql.read_text().replace("#driver = \n", "driver = pgsql\n")
    text = text.replace("#connect =\n", "connect = host=/run/postgresql dbname=mail maxconns=3\n")
    text = text.replace("#password_query = \\\n#  SELECT", "password_query = \\\n  SELECT", 1)
    text = text.replace(
        "#  FROM users WHERE username = '%n' AND domain = '%d'\n\n# userdb",
        ("  FROM users WHERE username = '%n' AND domain = '%d'\n\n# userdb"),
    )
    sql.write_text(text)


#: Each set as shipped, and those with auth-sql also with the sql file filled in.
CASES = [(s, False) for s in SETS] + [(s, True) for s in SETS if "sql" in s]


@pytest.mark.parametrize(
    ("enabled", "sql_configured"),
    CASES,
    ids=["+".join(s) + ("/sql-set" if set_ else "") for s, set_ in CASES],
)
def test_own_parser_and_doveconf_agree(
    tmp_path: Path, enabled: tuple[str, ...], sql_configured: bool
) -> None:
    doveconf = require_binary("doveconf")
    config = copy_site(tmp_path / "site", enable=enabled)
    if sql_configured:
        configure_sql(tmp_path / "site")
    assert passdb_list(parse_file(config)) == passdb_list(read_with_doveconf(config, doveconf))
    ours, theirs = translation(config, None), translation(config, doveconf)
    assert ours == theirs
    if sql_configured and enabled == ("sql",):
        assert isinstance(ours, Config), ours
        [store] = ours.stores
        assert store.dsn == "host=/run/postgresql dbname=mail" and store.pool_size == 3
        assert store.password_query == (
            "SELECT username, domain, password FROM users WHERE username = '%n' AND domain = '%d'"
        )
    elif enabled == ("passwdfile",) or enabled == ("deny", "passwdfile"):
        assert isinstance(ours, Config), ours
        assert [s.path for s in ours.stores][-1] == f"{tmp_path}/site/users"
    else:
        assert isinstance(ours, str), "each other set has something authbridge refuses"
        assert ours.startswith(f"{tmp_path}/site/"), ours
