"""libpam-pwdfile's ``password[NN]`` suffix in passwd-file entries (protocol.md §9.1)."""

from __future__ import annotations

from authbridge.schemes._core import SchemeError


def apply_compat_suffix(value: str) -> str:
    """Turn ``hash[34]`` / ``hash[56]`` / ``hash[NN]`` into a ``{SCHEME}`` value.

    Applies only to values longer than 4 characters that do not start with ``{`` or ``$``
    and end in ``[`` digit digit ``]``; anything else is returned unchanged. ``[34]`` is
    PLAIN-MD5, ``[56]`` DIGEST-MD5 (must then be 32 characters, else SchemeError: Dovecot
    drops such a user), every other number CRYPT.
    """
    if (
        len(value) <= 4
        or value[0] in "{$"
        or value[-4] != "["
        or value[-1] != "]"
        or not value[-3:-1].isdigit()
        or not value[-3:-1].isascii()
    ):
        return value
    number, password = value[-3:-1], value[:-4]
    if number == "34":
        return "{PLAIN-MD5}" + password
    if number == "56":
        if len(password) != 32:
            raise SchemeError("DIGEST-MD5: passwd-file [56] entry is not 32 characters")
        return "{DIGEST-MD5}" + password
    return "{CRYPT}" + password
