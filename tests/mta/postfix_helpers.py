"""A minimal Postfix around the emitted lines: only locations, logging, no delivery."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.mta.conftest import emit
from tests.support import require_binary
from tests.support.postfix import (
    LIB_DIR,
    POSTFIX_ROOT,
    PostfixConfig,
    PostfixMaster,
    _make_queue,
    postfix_env,
    require_postfix,
)
from tests.support.swaks import SwaksTimeout, run_swaks
from tests.support.tls import TlsFiles

BASE_MAIN_CF = """\
compatibility_level = 3.6
meta_directory = {root}/etc/postfix
queue_directory = {queue}
data_directory = {data}
daemon_directory = {root}/usr/lib/postfix/sbin
command_directory = {root}/usr/sbin
shlib_directory = {lib}
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C LD_LIBRARY_PATH={lib}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {run}/maillog
maillog_file_prefixes = {run}
mydomain = example.org
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
alias_maps =
alias_database =
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
default_transport = discard:test
relay_transport = discard:test
local_transport = discard:test
virtual_transport = discard:test
# lets the tests present another client address with XCLIENT (no traffic leaves loopback)
smtpd_authorized_xclient_hosts = 127.0.0.1
"""

BASE_MASTER_CF = """\
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


@dataclass(frozen=True)
class EmittedPostfix:
    config: PostfixConfig
    main_lines: str
    master_lines: str


def postfix_tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run an unpacked Postfix command; it prints diagnostics only to a tty (gotcha P1),
    so give it one with script(1)."""
    tool = POSTFIX_ROOT / "usr/sbin" / name
    command = " ".join([str(tool), *args])
    return subprocess.run(
        [require_binary("script"), "-qec", command, "/dev/null"],
        capture_output=True,
        text=True,
        env=postfix_env(),
        timeout=60,
        check=False,
    )


def emit_postfix(
    run: Path, socket_path: Path, tls: TlsFiles, port: int, *emit_args: str
) -> EmittedPostfix:
    """Run emit-postfix-config for a service on 127.0.0.1:``port`` and install its output
    (main.cf lines, master.cf entry, maps) into a fresh config under ``run``."""
    require_postfix()
    conf_dir, maps = run / "conf", run / "maps"
    conf_dir.mkdir(parents=True)
    maps.mkdir()
    queue, data = run / "spool", run / "data"
    _make_queue(queue, data)
    result = emit(
        "emit-postfix-config",
        "--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
        "--map-dir", str(maps), "--queue-directory", str(queue),
        "--service", f"127.0.0.1:{port}", "--write",
        *emit_args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    main_part, master_part = result.stdout.split("# ---- add to master.cf ----\n")
    base = BASE_MAIN_CF.format(root=POSTFIX_ROOT, lib=LIB_DIR, queue=queue, data=data, run=run)
    (conf_dir / "main.cf").write_text(base + main_part)
    (conf_dir / "master.cf").write_text(BASE_MASTER_CF + master_part)
    # Postfix waits for files modified within the current second to "cool down" (P2).
    past = time.time() - 10
    for path in [conf_dir / "main.cf", conf_dir / "master.cf", *maps.iterdir()]:
        os.utime(path, (past, past))
    config = PostfixConfig(conf_dir, run, run / "maillog", port, socket_path)
    return EmittedPostfix(config, main_part, master_part)


def wait_for_banner(master: PostfixMaster, timeout: float = 30.0) -> None:
    """master listens at once, but an smtpd that dies at start-up (say, the auth socket
    did not answer) gets its service throttled for a minute (gotcha P3): make that a
    clear failure here, with the maillog, instead of timeouts in the tests."""
    try:
        result = run_swaks(server=master.server, stop_after="BANNER", timeout=timeout)
    except SwaksTimeout as exc:
        raise AssertionError(f"{exc}\n{master.diagnostics()}") from None
    if result.last_code != 220:
        raise AssertionError(
            f"no SMTP banner from Postfix:\n{result.transcript}\n{master.diagnostics()}"
        )
