"""Reads from Redis on trio's own sockets: MGET, and the subscription of the mirror.

Why not redis-py here: its asyncio client does not run on trio, and its sync client
needs a worker thread per call. Measured on the 2-core test VM with Redis on a UNIX
socket, an MGET through ``trio.to_thread`` took 0.39-0.42 ms at p50, the same MGET on
a trio socket 0.12 ms (``benchmarks/fleet.py latency`` shows the login's figure): the
thread hop and its GIL hand-offs cost more than Redis. This module speaks just enough
of the protocol for its reads (connect, optional TLS, AUTH, SELECT, MGET, and the
subscription of :mod:`authbridge.checks.shared`: SUBSCRIBE, PING, SCAN, EVAL); the
writes, off the request's path, keep redis-py. The URL is read by redis-py's own parser, so both
understand the same ``redis://``, ``rediss://`` and ``unix://`` URLs.
"""

from __future__ import annotations

import ssl
from typing import Any

import trio

#: Idle connections kept for the next read (more are opened under load, then closed).
POOL = 8


class RespError(Exception):
    """Redis answered with an error (NOAUTH, WRONGPASS, LOADING, ...): it refuses."""


def encode(*words: str | bytes) -> bytes:
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        data = word.encode() if isinstance(word, str) else word
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Connection:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _line(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                return line
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            self.buffer += chunk

    async def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size + 2:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            self.buffer += chunk
        data = bytes(self.buffer[:size])
        del self.buffer[: size + 2]
        return data

    async def reply(self) -> Any:
        line = await self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RespError(rest.decode("utf-8", "replace").split(" ", 1)[0])
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else await self._exactly(size)
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [await self.reply() for _ in range(count)]
        raise ConnectionError("not a RESP2 reply")

    async def send(self, *words: str | bytes) -> None:
        await self.stream.send_all(encode(*words))

    async def call(self, *words: str | bytes) -> Any:
        await self.send(*words)
        return await self.reply()

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


class RespReader:
    """MGET on a small pool of trio connections to the Redis of ``url``, and single
    connections (:meth:`connect`) for the subscription that keeps the fleet's copy."""

    def __init__(self, url: str) -> None:
        from redis.connection import parse_url

        options = parse_url(url)  # type: ignore[no-untyped-call]
        self._path: str | None = options.get("path")
        self._host: str = options.get("host", "localhost")
        self._port = int(options.get("port", 6379))
        self._db = int(options.get("db", 0) or 0)
        self._username: str | None = options.get("username")
        self._password: str | None = options.get("password")
        self._tls: ssl.SSLContext | None = None
        if url.startswith("rediss://"):
            self._tls = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
            if options.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
                self._tls.check_hostname = False
                self._tls.verify_mode = ssl.CERT_NONE
        self._idle: list[_Connection] = []

    async def connect(self) -> _Connection:
        """A new connection, authenticated and on the URL's database (caller closes)."""
        return await self._connect()

    async def _connect(self) -> _Connection:
        stream: trio.abc.Stream
        if self._path is not None:
            stream = await trio.open_unix_socket(self._path)
        else:
            stream = await trio.open_tcp_stream(self._host, self._port)
        if self._tls is not None:
            stream = trio.SSLStream(stream, self._tls, server_hostname=self._host)
        conn = _Connection(stream)
        try:
            if self._password:
                auth = [self._username] if self._username else []
                await conn.call("AUTH", *auth, self._password)
            if self._db:
                await conn.call("SELECT", str(self._db))
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return conn

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        """The values of ``keys``; a pooled connection that broke (Redis restarted)
        is replaced once by a fresh one. The caller bounds the time."""
        reused = bool(self._idle)
        conn = self._idle.pop() if reused else await self._connect()
        try:
            try:
                values = await conn.call("MGET", *keys)
            except (ConnectionError, trio.BrokenResourceError, OSError):
                if not reused:
                    raise
                await self.close()  # the others are as stale
                await trio.aclose_forcefully(conn.stream)
                conn = await self._connect()
                values = await conn.call("MGET", *keys)
        except BaseException:
            await trio.aclose_forcefully(conn.stream)
            raise
        if len(self._idle) < POOL:
            self._idle.append(conn)
        else:
            await trio.aclose_forcefully(conn.stream)
        return values  # type: ignore[no-any-return]

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await trio.aclose_forcefully(conn.stream)
