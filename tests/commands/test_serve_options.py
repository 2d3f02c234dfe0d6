"""``authbridge serve``'s options: store flags add to the config, every option is explained.

``--exim-file`` used to drop the config's ``[[store]]`` tables although its help said it
adds; ``--passwd-file`` did the same. Both now add after the config's stores (as for
``capabilities``), and a file the config already serves is not opened twice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from authbridge.cli import OneLineParser
from authbridge.commands import serve
from authbridge.config import ConfigError, StoreConfig


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="authbridge serve")
    serve.add_arguments(parser)
    return parser


def _config(tmp_path: Path, *argv: str) -> list[tuple[str, str]]:
    args = _parser().parse_args(list(argv))
    return [(store.type, store.path) for store in serve.build_config(args).stores]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "authbridge.toml"
    path.write_text('[[store]]\ntype = "passwd-file"\npath = "users"\n')
    return path


def test_exim_file_adds_to_the_configs_stores(tmp_path: Path, config_file: Path) -> None:
    stores = _config(tmp_path, "--config", str(config_file), "--exim-file", "/srv/exim.md5")
    assert stores == [("passwd-file", str(tmp_path / "users")), ("exim-file", "/srv/exim.md5")]


def test_store_flags_come_after_the_config_in_the_documented_order(
    tmp_path: Path, config_file: Path
) -> None:
    stores = _config(
        tmp_path,
        "--exim-file", "/srv/a.md5",
        "--config", str(config_file),
        "--passwd-file", "/srv/b.passwd",
        "--exim-file", "/srv/c.md5",
    )  # fmt: skip
    assert stores == [
        ("passwd-file", str(tmp_path / "users")),
        ("passwd-file", "/srv/b.passwd"),
        ("exim-file", "/srv/a.md5"),
        ("exim-file", "/srv/c.md5"),
    ]


def test_a_file_the_config_serves_is_not_added_twice(tmp_path: Path, config_file: Path) -> None:
    same = str(tmp_path / "users")
    stores = _config(tmp_path, "--config", str(config_file), "--passwd-file", same)
    assert stores == [("passwd-file", same)]
    # the same file as another type is another store
    both = _config(tmp_path, "--config", str(config_file), "--exim-file", same)
    assert both == [("passwd-file", same), ("exim-file", same)]


def test_add_stores_keeps_order_and_drops_repeats() -> None:
    configured = (StoreConfig("sql", driver="sqlite", dsn="x"), StoreConfig("passwd-file", "/a"))
    flagged = (StoreConfig("passwd-file", "/a"), StoreConfig("exim-file", "/b"))
    merged = serve.add_stores(configured, flagged + flagged)
    assert merged == (*configured, StoreConfig("exim-file", "/b"))


def test_a_failure_delay_flag_too_long_for_the_penalty_is_refused(config_file: Path) -> None:
    args = _parser().parse_args(["--config", str(config_file), "--failure-delay", "5"])
    with pytest.raises(ConfigError, match=r"^--failure-delay: failure_delay \(5 s\) plus"):
        serve.build_config(args)
    compat = ["--config", str(config_file), "--failure-delay", "5", "--dovecot-compat"]
    assert serve.build_config(_parser().parse_args(compat)).policy.failure_delay == 5


def test_every_option_has_a_help_text() -> None:
    missing = [
        action.option_strings
        for action in _parser()._actions
        if action.option_strings and not (action.help and action.help != argparse.SUPPRESS)
    ]
    assert missing == []


def test_the_help_shows_the_real_registries() -> None:
    text = " ".join(_parser().format_help().split())
    assert "scram-sha-256" in text.replace("scram- sha-256", "scram-sha-256")
    assert "added after the config's [[store]] tables" in text
