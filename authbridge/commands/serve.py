"""``authbridge serve``: load config and stores, open listeners, serve until told to stop."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import resource
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import structlog
import trio

from authbridge import __version__
from authbridge.checks.authenticator import Authenticator
from authbridge.checks.cache import AuthCache
from authbridge.checks.chain import Link
from authbridge.checks.hashing import Hasher
from authbridge.commands.defaults import config_path, default_config
from authbridge.config import (
    DEFAULT_SOCKET,
    LOG_FORMATS,
    LOG_LEVELS,
    UNKNOWN_USER_MODES,
    Config,
    ConfigError,
    PassdbRules,
    PolicyConfig,
    ServerConfig,
    StoreConfig,
    load_config,
    oauth_mechanism_problem,
    parse_workers,
    total_delay_problem,
)
from authbridge.core.mechanisms import REGISTRY as MECHANISMS
from authbridge.core.mechanisms import UnknownMechanism, resolve
from authbridge.daemon import gctune, supervisor, systemd
from authbridge.daemon.listeners import (
    HANDOFF_SPACE,
    HandoffClosed,
    Listener,
    ListenerError,
    accept_connections,
    receive_connections,
    take_handed,
    tcp_listener,
    unix_listener,
)
from authbridge.daemon.server import AuthServer
from authbridge.observability.contained import Streak, report
from authbridge.observability.logs import configure, get_logger
from authbridge.observability.metrics import Metrics, MetricsHTTP, MetricsListenError
from authbridge.passdb import (
    EximFileStore,
    FileStore,
    Passdb,
    PasswdFileStore,
    attach_app_passwords,
    open_file_store,
)
from authbridge.passdb.base import (
    CountsInternalErrors,
    PassdbEntry,
    StoreFormatError,
    StoreUnavailable,
    pick_dummy_password,
    unreadable,
)
from authbridge.passdb.dovecot.translate import with_dovecot_config
from authbridge.passdb.drivers import postgresql_driver_problem
from authbridge.passdb.watch import StoreWatcher
from authbridge.schemes import StoredPassword

log = get_logger("authbridge.serve")

DEMO_DIR = "authbridge-demo"
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2)
#: How long shutdown waits for running checks before giving up on them.
DRAIN_TIMEOUT = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option with a help text; a flag given overrides the config file's setting."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML configuration file (default: {default_config()} when it exists "
        "and no --demo or store flag is given)",
    )
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help=f"UNIX socket path to listen on (default: {DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "--socket-mode",
        metavar="MODE",
        help=f"socket file mode, octal (default: {ServerConfig().socket_mode:04o})",
    )
    parser.add_argument(
        "--socket-owner",
        metavar="USER",
        help="owner of the socket file, a name or number (default: the daemon's user)",
    )
    parser.add_argument(
        "--socket-group",
        metavar="GROUP",
        help="group of the socket file, e.g. Debian-exim (default: the daemon's group)",
    )
    parser.add_argument(
        "--dovecot-config",
        metavar="FILE",
        help="serve the passdbs of a Dovecot config (e.g. /etc/dovecot/dovecot.conf) in "
        "order, with Dovecot's rules; read by doveconf when installed",
    )
    parser.add_argument(
        "--passwd-file",
        metavar="FILE",
        action="append",
        help="Dovecot passwd-file store (repeatable); added after the config's [[store]] "
        "tables, before any --exim-file",
    )
    parser.add_argument(
        "--exim-file",
        metavar="FILE",
        action="append",
        help="Exim-style login:md5hash store (repeatable); added after the config's "
        "[[store]] tables and any --passwd-file",
    )
    parser.add_argument(
        "--mechanisms",
        metavar="LIST",
        help="comma-separated SASL mechanisms to offer, in order; known: "
        f"{', '.join(name.lower() for name in MECHANISMS)} "
        f"(default: {','.join(ServerConfig().mechanisms)})",
    )
    parser.add_argument(
        "--failure-delay",
        metavar="SECONDS",
        type=float,
        help=f"delay before a FAIL reply, 0 = at once (default: {PolicyConfig().failure_delay})",
    )
    parser.add_argument(
        "--dovecot-compat",
        action="store_true",
        help="behave exactly like Dovecot 2.3 on the wire (policy gates off)",
    )
    parser.add_argument(
        "--protocol-24",
        action="store_true",
        help="with --dovecot-compat, still answer a client that announces Dovecot 2.4's "
        "protocol (VERSION minor 3+) at that level (default: on, off in compat mode)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse to start or reload when a store file has an invalid entry "
        "(default: each is a file:line warning; see authbridge check)",
    )
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve /metrics and /healthz there; ':PORT' = 127.0.0.1 (default: off)",
    )
    parser.add_argument(
        "--workers",
        metavar="N",
        help='serving processes sharing the sockets: N, or "auto" for one per core '
        f"(default: {ServerConfig().workers})",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="console (key=value), json (one object per line) or auto: console on a "
        "terminal, json otherwise (default: auto)",
    )
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, help="least severe level logged (default: info)"
    )
    parser.add_argument(
        "--log-unknown-users",
        choices=UNKNOWN_USER_MODES,
        help="log names no store knows (maybe passwords) as a fingerprint (default) or typed",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help=f"serve the bundled example users on ./{DEMO_DIR}/auth-client",
    )


def _demo_users() -> Path:
    return Path(str(resources.files("authbridge") / "data" / "example-users.passwd"))


def build_config(args: argparse.Namespace) -> Config:
    """The config file (if any) with command-line flags applied on top."""
    path = args.config
    dovecot = getattr(args, "dovecot_config", None)
    if path is None and not (args.demo or args.passwd_file or args.exim_file or dovecot):
        path = config_path(None)  # /etc/authbridge/authbridge.toml when it exists
    config = load_config(path) if path else Config(source="<command line>")
    if dovecot:
        if args.demo or args.passwd_file or args.exim_file:
            raise ConfigError(
                "--dovecot-config: its passdbs are the stores (no --demo, "
                "--passwd-file or --exim-file with it)"
            )
        config = with_dovecot_config(config, dovecot)
    server = config.server
    if args.demo:
        os.makedirs(DEMO_DIR, exist_ok=True)
        server = replace(
            server, socket_path=os.path.join(DEMO_DIR, "auth-client"), socket_mode=0o666
        )
        config = replace(config, stores=(StoreConfig("passwd-file", str(_demo_users())),))
    if args.socket:
        server = replace(server, socket_path=args.socket)
    if args.socket_mode:
        try:
            server = replace(server, socket_mode=int(args.socket_mode, 8))
        except ValueError:
            raise ConfigError(f"--socket-mode: {args.socket_mode!r} is not an octal mode") from None
    if args.socket_owner:
        server = replace(server, socket_owner=args.socket_owner)
    if args.socket_group:
        server = replace(server, socket_group=args.socket_group)
    if getattr(args, "workers", None):
        try:
            server = replace(server, workers=parse_workers(args.workers))
        except ValueError as exc:
            raise ConfigError(f"--workers: {exc}") from None
    if args.mechanisms:
        names = tuple(m.strip().lower() for m in args.mechanisms.split(",") if m.strip())
        try:
            resolve(list(names))
        except UnknownMechanism as exc:
            raise ConfigError(f"--mechanisms: {exc}") from None
        problem = oauth_mechanism_problem(names, config.oauth)
        if problem is not None:
            raise ConfigError(f"--mechanisms: {problem}")
        server = replace(server, mechanisms=names)
    config = replace(config, server=server)
    flagged = tuple(StoreConfig("passwd-file", p) for p in args.passwd_file or ()) + tuple(
        StoreConfig("exim-file", p) for p in args.exim_file or ()
    )
    if flagged:
        config = replace(config, stores=add_stores(config.stores, flagged))
    if args.failure_delay is not None:
        if args.failure_delay < 0:
            raise ConfigError("--failure-delay: must not be negative")
        problem = total_delay_problem(args.failure_delay, config.penalty)
        if problem is not None and not args.dovecot_compat:
            raise ConfigError(f"--failure-delay: {problem}")
        config = replace(config, policy=replace(config.policy, failure_delay=args.failure_delay))
    if args.log_format or args.log_level or args.log_unknown_users:
        config = replace(
            config,
            log=replace(
                config.log,
                format=args.log_format or config.log.format,
                level=args.log_level or config.log.level,
                unknown_users=args.log_unknown_users or config.log.unknown_users,
            ),
        )
    if args.metrics_listen:
        config = replace(config, metrics=replace(config.metrics, listen=args.metrics_listen))
    if args.dovecot_compat:
        config = config.dovecot_compatible()
    if args.protocol_24:
        config = replace(config, policy=replace(config.policy, protocol_24=True))
    if not config.stores and not config.oauth.enabled:  # [oauth] alone: tokens only
        raise ConfigError(
            f"{config.source}: no user store: add a [[store]] table, --passwd-file or --exim-file"
        )
    return config


def require_sql_backends(config: Config) -> None:
    """Refuse SQL stores that could only fail every login: an SQLite file that is not
    there (never created here: an empty database would hide the mistake) or a
    PostgreSQL (or LDAP) store without its driver. Raises ConfigError naming file and key."""
    for index, store in enumerate(config.stores):
        if store.type != "sql":
            continue
        where = f"{config.source}: store[{index}]"
        if store.driver == "sqlite":
            path = Path(store.dsn)
            if not path.exists():
                why: str | None = "does not exist (authbridge never creates it)"
            elif not path.is_file():
                why = "is not a file"
            else:
                why = unreadable(path)
            if why is not None:
                raise ConfigError(f"{where}.dsn: SQLite database {store.dsn}: {why}")
        elif store.driver == "postgresql":
            problem = postgresql_driver_problem()
            if problem is not None:
                raise ConfigError(f"{where}.driver: {problem}")
    if any(store.type == "ldap" for store in config.stores):
        from authbridge.passdb.ldap import ldap_driver_problem  # only LDAP sites pay

        problem = ldap_driver_problem()
        if problem is not None:
            index = next(i for i, s in enumerate(config.stores) if s.type == "ldap")
            raise ConfigError(f"{config.source}: store[{index}].type: {problem}")


def add_stores(
    configured: tuple[StoreConfig, ...], flagged: tuple[StoreConfig, ...]
) -> tuple[StoreConfig, ...]:
    """The config's stores, then the command line's, each file once.

    ``--passwd-file`` and ``--exim-file`` add to ``[[store]]`` (as for ``capabilities``);
    a file the config already serves as the same type is not opened twice.
    """
    stores = list(configured)
    seen = {(store.type, os.path.realpath(store.path)) for store in configured if store.path}
    for store in flagged:
        key = (store.type, os.path.realpath(store.path))
        if key not in seen:
            seen.add(key)
            stores.append(store)
    return tuple(stores)


def open_stores(config: Config, strict: bool = False) -> list[Passdb]:
    """Every configured store, file stores loaded; raises on the first that cannot be
    (``strict``: also on a file with an invalid entry, then and at every reload)."""
    require_sql_backends(config)
    stores: list[Passdb] = []
    for store_config in config.stores:
        if store_config.type == "sql":
            from authbridge.passdb.sql import open_sql_store  # only sites with SQL pay for it

            sql_store = open_sql_store(store_config)
            attach_app_passwords(sql_store, store_config, config.app_passwords)
            stores.append(sql_store)
            log.info("store opened", store=stores[-1].name)
            continue
        if store_config.ldap is not None:
            from authbridge.passdb.ldap import open_ldap_store  # only LDAP sites pay for it

            stores.append(open_ldap_store(store_config.ldap))
            log.info("store opened", store=stores[-1].name)
            continue
        store = open_file_store(store_config.type, store_config.path, store_config.default_scheme)
        store.strict = strict
        store.usernames = config.usernames
        if store_config.rules is not None and isinstance(store, PasswdFileStore):
            store.names_only = store_config.rules.deny
        count = store.load()
        log.info("store loaded", store=store.name, users=count, invalid_entries=len(store.problems))
        attach_app_passwords(store, store_config, config.app_passwords)
        stores.append(store)
    return stores


def passdb_chain(config: Config, stores: list[Passdb]) -> list[Link] | None:
    """The stores with their Dovecot rules when they are a dovecot.conf's passdbs."""
    if not config.dovecot_chain:
        return None
    return [
        (store, store_config.rules or PassdbRules())
        for store, store_config in zip(stores, config.stores, strict=True)
    ]


def _file_stores(stores: list[Passdb]) -> list[FileStore]:
    return [s for s in stores if isinstance(s, PasswdFileStore | EximFileStore)]


async def close_stores(stores: list[Passdb]) -> None:
    for store in stores:
        close = getattr(store, "aclose", None)
        if close is not None:
            await close()


def open_listeners(
    config: Config,
    inherited: list[tuple[str, socket.socket]] | None = None,
    prefix: str = "systemd:",
) -> list[Listener]:
    """Sockets handed over by systemd or a supervisor (see run()), or our own bound ones."""
    if inherited:
        # Whoever handed them over owns the socket files: unix_path stays None so we
        # never unlink them.
        # TCP sockets still get the client allow-list.
        networks = tuple(
            ipaddress.ip_network(n, strict=False) for n in config.server.tcp_allowed_networks
        )
        return [
            Listener(
                sock,
                f"{prefix}{name}",
                allowed=networks if sock.family in (socket.AF_INET, socket.AF_INET6) else (),
            )
            for name, sock in inherited
        ]
    server = config.server
    listeners = [
        unix_listener(
            server.socket_path, server.socket_mode, server.socket_owner, server.socket_group
        )
    ]
    listeners += [tcp_listener(spec, server.tcp_allowed_networks) for spec in server.tcp_listen]
    return listeners


async def _handle(
    server: AuthServer, listener: Listener, sock: socket.socket, address: Any
) -> None:
    """One accepted connection; never raises (the server's handle contains the session)."""
    try:
        allowed = listener.peer_allowed(address)
    except Exception as exc:  # an exception here would end every connection with it
        report(
            "connection",
            exc,
            "checking a peer's address failed; connection closed",
            server.metrics.internal_error,
        )
        sock.close()
        return
    if not allowed:
        log.warning(
            "refused connection from a client outside tcp_allowed_networks", listener=listener.label
        )
        sock.close()
        return
    await server.serve_socket(sock)


async def _handed(server: AuthServer, handoff: supervisor.Handoff, sock: socket.socket) -> None:
    """One connection handed over by the supervisor; counted as finished on the board."""
    try:
        await server.serve_socket(sock)
    finally:
        handoff.finished()


class Daemon:
    """The running service: server, stores, listeners, and what signals do to them."""

    def __init__(
        self,
        args: argparse.Namespace,
        config: Config,
        stores: list[Passdb],
        listeners: list[Listener],
        worker: bool = False,
        handoff: supervisor.Handoff | None = None,
    ) -> None:
        self.args = args
        self.worker = worker
        #: A worker's channel from its supervisor, which accepts on the listeners.
        self.handoff = handoff
        self.config = config
        self.stores = stores
        self.listeners = listeners
        self.notifier = systemd.Notifier()
        self.metrics = Metrics()
        self.cache = AuthCache(config.cache)
        self.hasher = Hasher()
        self.authenticator = Authenticator(
            list(stores), self.hasher, usernames=config.usernames, cache=self.cache
        )
        self.authenticator.chain = passdb_chain(config, stores)
        self.authenticator.dummy_password = _sample_password(stores)
        self.authenticator.broken_hash_is_tempfail = config.policy.broken_hash_is_tempfail
        self.authenticator.nologin_refuses = config.policy.nologin_refuses
        self.metrics.watch_cache(lambda: (self.cache.hits, self.cache.misses, len(self.cache)))
        self.authenticator.on_lookup = self.metrics.observe_lookup
        self.metrics.prime_stores(store.name for store in stores)
        self._wire_stores(stores)
        self.watcher = StoreWatcher(self.metrics, self.cache.flush)
        # Bound here, before the event loop, so a taken port is a clean start-up error.
        # A worker's metrics are served by its supervisor.
        self.http = (
            MetricsHTTP(self.metrics, config.metrics.listen, lambda: self.ready)
            if config.metrics.listen and not worker
            else None
        )
        self.server = AuthServer(config, self.authenticator, self.metrics)
        self.ready = False
        for _ in stores:
            self.metrics.reloaded(True)

    async def run(self) -> None:
        if self.http is not None:
            self.http.start()
            log.info("metrics listening", address=self.http.bound)
        try:
            await self._run()
        finally:
            if self.http is not None:
                self.http.stop()

    async def _run(self) -> None:
        server = self.server
        async with trio.open_nursery() as connections:
            await connections.start(server.run_background)
            with trio.CancelScope() as accepting:
                async with trio.open_nursery() as acceptors:
                    for listener in self.listeners:
                        handler = partial(_handle, server, listener)
                        acceptors.start_soon(accept_connections, listener, handler, connections)
                        log.info("listener bound", listener=listener.label)
                    if self.handoff is not None:
                        acceptors.start_soon(
                            receive_connections,
                            self.handoff.channel,
                            partial(_handed, server, self.handoff),
                            connections,
                            self.metrics.internal_error,
                        )
                    self.ready = True
                    labels = ", ".join(item.label for item in self.listeners) or "handoff"
                    self.notifier.ready(f"serving on {labels}")
                    interval = self.notifier.watchdog_interval()
                    if interval:
                        acceptors.start_soon(_watchdog, self.notifier, interval)
                    acceptors.start_soon(self._watch_stores)
                    if self.metrics.multiprocess:
                        acceptors.start_soon(self.metrics.sample_forever)
                    if self.worker:
                        acceptors.start_soon(supervisor.watch_supervisor)
                    await self._handle_signals()
                    accepting.cancel()
            if self.handoff is not None:
                self._take_last_handed(connections)
            self.ready = False
            self.notifier.stopping()
            log.info("shutting down", connections=len(server.connections))
            for listener in self.listeners:
                listener.remove()
                listener.sock.close()
            await server.drain(DRAIN_TIMEOUT)
            with trio.move_on_after(2):
                while any(c.outbox for c in server.connections):
                    await trio.sleep(0.01)
            connections.cancel_scope.cancel()
        self.metrics.sample()
        await close_stores(self.stores)
        log.info("stopped")

    def _take_last_handed(self, connections: trio.Nursery) -> None:
        """On shutdown: connections already handed over are served (and drained) too."""
        assert self.handoff is not None
        handler = partial(_handed, self.server, self.handoff)
        try:
            while True:
                for sock in take_handed(self.handoff.channel, HANDOFF_SPACE):
                    connections.start_soon(handler, sock)
        except (BlockingIOError, HandoffClosed):
            pass
        except Exception as exc:
            report(
                "worker",
                exc,
                "receiving a handed connection failed",
                self.metrics.internal_error,
            )

    async def _handle_signals(self) -> None:
        with trio.open_signal_receiver(*HANDLED_SIGNALS) as signals:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
            async for signum in signals:
                name = signal.Signals(signum).name
                log.info("signal received", signal=name)
                if signum == signal.SIGHUP:
                    await self.reload()
                elif signum == signal.SIGUSR2:
                    self._flush_cache()
                else:
                    return

    def _flush_cache(self) -> None:
        """SIGUSR2: empty the auth cache; a failure is contained (the cache stays as it is)."""
        try:
            log.info("auth cache flushed", entries=self.cache.flush())
        except Exception as exc:
            report(
                "reload", exc, "cache flush failed; the cache stays", self.metrics.internal_error
            )

    def _wire_stores(self, stores: list[Passdb]) -> None:
        """Let stores that contain their own surprises (sql) count them here."""
        for store in stores:
            if isinstance(store, CountsInternalErrors):
                store.on_internal_error = self.metrics.internal_error
        for file_store in _file_stores(stores):
            # Counted at every load from now on (watcher reloads too), and for this one.
            file_store.on_loaded = self._count_invalid_entries
            self._count_invalid_entries(file_store)

    def _count_invalid_entries(self, store: FileStore) -> None:
        self.metrics.store_invalid_entries(store.name, len(store.problems))

    async def reload(self) -> bool:
        """Re-read config and stores; swap them in whole, or keep the old ones.

        A new config or store that does not load is refused with its message; any other
        exception is contained the same way (logged by type and place, counted under
        ``where=reload``): the previous configuration keeps serving and the next SIGHUP
        tries again.
        """
        self.notifier.reloading("reloading")
        try:
            return await self._reload()
        except Exception as exc:
            report(
                "reload",
                exc,
                "reload failed; the previous configuration keeps serving",
                self.metrics.internal_error,
            )
            self.metrics.reloaded(False)
            self.notifier.ready("reload failed")
            return False

    async def _reload(self) -> bool:
        try:
            config = build_config(self.args)
            strict = bool(getattr(self.args, "strict", False))
            stores = await trio.to_thread.run_sync(open_stores, config, strict)
        except (ConfigError, StoreFormatError, StoreUnavailable) as exc:
            log.error("reload refused; the previous configuration keeps serving", error=str(exc))
            self.metrics.reloaded(False)
            self.notifier.ready("reload refused")
            return False
        if config.server.socket_path != self.config.server.socket_path or (
            config.server.mechanisms != self.config.server.mechanisms
        ):
            log.warning("socket and mechanism changes take effect at the next restart")
        old_config, old_stores = self.config, self.stores
        try:
            self._apply(config, stores)
        except BaseException:
            # Half applied: put the previous configuration back whole, drop the new stores.
            with contextlib.suppress(Exception):
                self._apply(old_config, old_stores)
            with contextlib.suppress(Exception):
                await close_stores(stores)
            raise
        self.metrics.reloaded(True)
        try:
            await close_stores(old_stores)
        except Exception as exc:  # the new configuration serves; only the old one leaked
            report("reload", exc, "closing the previous stores failed", self.metrics.internal_error)
        log.info("reloaded", config=config.source, stores=len(stores))
        self.notifier.ready("reloaded")
        return True

    def _apply(self, config: Config, stores: list[Passdb]) -> None:
        """Put ``config`` and ``stores`` in service (the cache is emptied: users changed)."""
        self.config = config
        self.stores = stores
        self.authenticator.stores = list(stores)
        self.authenticator.chain = passdb_chain(config, stores)
        self.authenticator.usernames = config.usernames
        self.authenticator.dummy_password = _sample_password(stores)
        self.authenticator.broken_hash_is_tempfail = config.policy.broken_hash_is_tempfail
        self.authenticator.nologin_refuses = config.policy.nologin_refuses
        self.cache.settings = config.cache
        self.cache.flush()
        self.server.apply_config(config)
        self._wire_stores(stores)
        self.metrics.prime_stores(store.name for store in stores)

    async def _watch_stores(self) -> None:
        """Re-read a store file when it changes (checked once a second, like Dovecot).

        Also reopens an SQLite database replaced by rename, and logs and flags a file
        that disappears or turns unreadable (see authbridge.passdb.watch). Nothing a
        check meets ends the watching: a file that does not load keeps the last good
        copy serving, and an unexpected exception is contained and counted
        (``where=reload``); the next change is picked up as usual.
        """
        streak = Streak(
            "reload",
            "store file check failed; the last good copies keep serving",
            self.metrics.internal_error,
        )
        while True:
            await trio.sleep(1)
            try:
                await self.watcher.check_all(self.stores)
            except Exception as exc:
                streak.failed(exc)
            else:
                streak.ok()


def _sample_password(stores: list[Passdb]) -> StoredPassword | None:
    samples = (store.sample_password() for store in _file_stores(stores))
    return pick_dummy_password(PassdbEntry("", s) for s in samples if s is not None)


async def _watchdog(notifier: systemd.Notifier, interval: float) -> None:
    while True:
        notifier.watchdog()
        await trio.sleep(interval)


def raise_fd_limit(wanted: int) -> int:
    """Lift the soft open-files limit toward ``wanted`` (at most the hard limit).

    Exim opens one connection per AUTH and Postfix keeps one per smtpd process: the
    default soft limit of 1024 would cap the server well below max_connections.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def run(args: argparse.Namespace) -> int:
    try:
        config = build_config(args)
        require_sql_backends(config)
    except ConfigError as exc:
        print(f"authbridge: {exc}", file=sys.stderr)
        return 2
    configure(config.log.format, config.log.level, unknown_users=config.log.unknown_users)
    slot = os.environ.get(supervisor.WORKER_ENV)
    if slot is not None:
        return _serve(args, config, worker=int(slot))
    if config.server.workers > 1:
        return _supervise(args, config)
    return _serve(args, config)


def _demo_hint(args: argparse.Namespace, config: Config) -> None:
    if args.demo:
        print(
            f"authbridge demo: socket {config.server.socket_path}, users from "
            f"{config.stores[0].path}\n  try: authbridge auth test -a "
            f"{config.server.socket_path} demo demopass\n  (or: doveadm auth test -a "
            f"{config.server.socket_path} -x secured demo demopass)",
            file=sys.stderr,
        )


def _startup_error(exc: Exception, listeners: Sequence[Listener] = ()) -> int:
    for listener in listeners:
        listener.remove()
    # Logs go to stderr (the journal under systemd) in the configured format: one line
    # there is the message; a plain copy beside it would say the same thing twice.
    log.error("cannot start", error=str(exc))
    return 1


def _supervise(args: argparse.Namespace, config: Config) -> int:
    """Bind the sockets here and let ``workers`` processes serve on them."""
    log.info(
        "starting",
        version=__version__,
        config=config.source,
        pid=os.getpid(),
        workers=config.server.workers,
    )
    try:
        inherited = systemd.inherited_sockets()
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        listeners = open_listeners(config, inherited)
    except (ListenerError, systemd.SocketActivationError) as exc:
        return _startup_error(exc)
    try:
        boss = supervisor.Supervisor(getattr(args, "argv", sys.argv[1:]), config, listeners)
    except (MetricsListenError, OSError) as exc:
        return _startup_error(exc, listeners)
    _demo_hint(args, config)
    try:
        return trio.run(boss.run)
    except KeyboardInterrupt:
        return 0
    finally:
        for listener in listeners:
            listener.remove()


def _serve(args: argparse.Namespace, config: Config, worker: int | None = None) -> int:
    """One serving process: on its own, or as worker ``worker`` of a supervisor."""
    fd_limit = raise_fd_limit(config.server.max_connections + 256)
    if worker is not None:
        structlog.contextvars.bind_contextvars(worker=worker)
    log.info(
        "starting",
        version=__version__,
        config=config.source,
        pid=os.getpid(),
        open_files_limit=fd_limit,
    )
    try:
        # Adopt systemd's sockets first, before anything else opens a file descriptor
        # that could be mistaken for fd 3 and up.
        handoff, inherited = None, None
        if worker is None:
            inherited = systemd.inherited_sockets()
        else:
            handoff = supervisor.worker_handoff(worker)
            if handoff is None:
                raise ListenerError("a worker started without its supervisor's handoff channel")
        stores = open_stores(config, bool(getattr(args, "strict", False)))
        # Signals wait (blocked) until the event loop listens for them: a SIGTERM
        # that arrives between bind() and then still means "drain and exit 0".
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        # A worker listens on nothing: its supervisor accepts and hands connections over.
        listeners = open_listeners(config, inherited) if handoff is None else []
    except (
        ConfigError,  # an SQLite file gone since run() looked
        StoreFormatError,
        StoreUnavailable,
        ListenerError,
        systemd.SocketActivationError,
    ) as exc:
        return _startup_error(exc)
    if worker is None:
        _demo_hint(args, config)
    try:
        daemon = Daemon(args, config, stores, listeners, worker=worker is not None, handoff=handoff)
    except MetricsListenError as exc:
        return _startup_error(exc, listeners)
    gctune.tune_after_startup()
    try:
        trio.run(daemon.run)
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        # Only a bug that got past every containment reaches here. Logged without its
        # message, counted (a worker's count survives it in the shared files), and a
        # non-zero exit so the supervisor or systemd starts a fresh process.
        report(
            "worker",
            exc,
            "serving process failed; exiting for a restart",
            daemon.metrics.internal_error,
        )
        return 1
    finally:
        for listener in listeners:
            listener.remove()
    return 0
