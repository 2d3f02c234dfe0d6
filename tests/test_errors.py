"""One error hierarchy for the package (issue #16 item 6)."""

from __future__ import annotations

import pytest

from authbridge import config, errors, schemes
from authbridge.checks.expand import ExpansionError, expand
from authbridge.core import wire
from authbridge.core.mechanisms import UnknownMechanism, resolve
from authbridge.core.session import ProtocolViolation
from authbridge.core.usernames import InvalidUsername, UsernamePolicy
from authbridge.passdb.base import StoreFormatError, StoreUnavailable
from authbridge.passdb.sql import SqlConfigError
from authbridge.passdb.sql_query import QueryError


@pytest.mark.parametrize(
    ("cls", "base"),
    [
        (ProtocolViolation, errors.ProtocolError),
        (wire.LineTooLong, errors.ProtocolError),
        (wire.InvalidBase64, errors.ProtocolError),
        (InvalidUsername, errors.ProtocolError),
        (StoreUnavailable, errors.StoreError),
        (StoreFormatError, errors.StoreError),
        (ExpansionError, errors.StoreError),
        (schemes.SchemeError, errors.SchemeError),
        (config.ConfigError, errors.ConfigError),
        (UnknownMechanism, errors.ConfigError),
        (QueryError, errors.ConfigError),
        (SqlConfigError, errors.ConfigError),
    ],
)
def test_every_error_is_in_the_hierarchy(cls: type[Exception], base: type[Exception]) -> None:
    assert issubclass(cls, base) and issubclass(cls, errors.AuthbridgeError)


def test_former_value_errors_still_are_and_keep_their_messages() -> None:
    with pytest.raises(wire.InvalidBase64, match="invalid base64"):
        wire.b64decode_strict("AAAA=")
    with pytest.raises(ValueError, match="invalid base64"):
        wire.b64decode_strict("!")
    with pytest.raises(InvalidUsername, match="empty username"):
        UsernamePolicy().normalise("")
    with pytest.raises(UnknownMechanism, match="unknown mechanism 'nope'"):
        resolve(["nope"])
    with pytest.raises(config.ConfigError, match="must be between 1 and"):
        config.parse_workers(0)
    with pytest.raises(ExpansionError):
        expand("%{nope}", {})
    assert issubclass(errors.SchemeError, ValueError) and issubclass(errors.ConfigError, ValueError)
