"""Suite-wide setup: a base temporary directory of this session's own.

pytest's default base, ``/tmp/pytest-of-root``, is shared by every pytest session on the
machine, and each new session sets it back to 0700. The peers run as other users
(Debian-exim, postfix, dovecot) and reach sockets below it only while it is open
(``runtime_dir`` opens it), so a second session starting mid-run made Exim answer 435.
A base made for this session alone is opened once and never touched by another.
"""

from __future__ import annotations

import shutil
import tempfile

import pytest

_MADE_HERE = "_authbridge_basetemp_made_here"


def pytest_configure(config: pytest.Config) -> None:
    if config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix="authbridge-pytest-")
        setattr(config, _MADE_HERE, True)


def pytest_unconfigure(config: pytest.Config) -> None:
    if getattr(config, _MADE_HERE, False):
        shutil.rmtree(config.option.basetemp, ignore_errors=True)
