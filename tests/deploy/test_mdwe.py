"""MemoryDenyWriteExecute=yes in authbridge.service is safe: the daemon's stack never needs
writable+executable memory (no JIT; cffi in API mode; bcrypt is compiled Rust)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.deploy import mdwe

REPO = Path(__file__).resolve().parents[2]

_PROBE = textwrap.dedent(
    """
    import ctypes, hashlib, importlib, json, mmap, pkgutil, warnings
    libc = ctypes.CDLL(None)
    assert libc.prctl(66, 0, 0, 0, 0) == 1, "MDWE not active"
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except PermissionError:
        pass
    else:
        raise SystemExit("W+X mapping was allowed: MDWE is not enforced, the probe proves nothing")

    import argon2, bcrypt, prometheus_client, structlog, trio
    from passlib.hash import md5_crypt, sha256_crypt, sha512_crypt
    for scheme in (sha512_crypt, sha256_crypt, md5_crypt):
        assert scheme.verify("secret", scheme.hash("secret"))
    assert bcrypt.checkpw(b"secret", bcrypt.hashpw(b"secret", bcrypt.gensalt(4)))
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=1024)
    assert hasher.verify(hasher.hash("secret"), "secret")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    stored = crypt.crypt("secret", crypt.mksalt(crypt.METHOD_SHA512))
    assert crypt.crypt("secret", stored) == stored
    hashlib.pbkdf2_hmac("sha256", b"secret", b"salt", 1000)
    assert b"python_info" in prometheus_client.generate_latest()
    structlog.processors.JSONRenderer()(None, "info", {"event": "x"})

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep, 0.01)
            assert await trio.to_thread.run_sync(lambda: 41 + 1) == 42

    trio.run(main)

    import authbridge
    failed = {}
    for module in pkgutil.walk_packages(authbridge.__path__, "authbridge."):
        if module.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(module.name)
        except Exception as exc:  # reported below; MDWE shows up as MemoryError/OSError
            failed[module.name] = repr(exc)
    print(json.dumps(failed))
    """
)


def test_runtime_stack_works_under_mdwe() -> None:
    if not mdwe.supported():
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3); cannot check here")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    result = subprocess.run(
        [*mdwe.MDWE_PREFIX, sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{}", result.stdout
