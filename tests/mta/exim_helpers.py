"""Drive the real Exim with emitted configs: -bV, Debian's update-exim4.conf, -bs sessions."""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from tests.mta.conftest import run_checked
from tests.support import require_binary

EXIM_USER = "Debian-exim"


def exim_owned_dirs(*dirs: Path) -> None:
    """Spool and log directories the Exim user writes to."""
    account = pwd.getpwnam(EXIM_USER)
    for directory in dirs:
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, account.pw_uid, account.pw_gid)
        directory.chmod(0o750)


def exim_check(config: Path) -> None:
    """``exim -C FILE -bV``: Exim parses the whole file (macros, ACLs, drivers)."""
    run_checked([require_binary("exim"), "-C", str(config), "-bV"])


def exim_option(config: Path, *query: str) -> str:
    return run_checked([require_binary("exim"), "-C", str(config), "-bP", *query]).stdout.strip()


def bs_pipe(config: Path, client_ip: str | None, *, tls: bool, extra: tuple[str, ...] = ()) -> str:
    """A ``swaks --pipe`` command running one ``exim -bs`` session from ``client_ip``.

    STARTTLS needs a socket on stdin (GnuTLS uses recv()), hence socat when ``tls``.
    """
    exim = [require_binary("exim"), "-C", str(config), "-odq", *extra, "-bs"]
    if client_ip is not None:
        exim += ["-oMa", client_ip, "-oMi", "127.0.0.1"]
    if not tls:
        return shlex.join(exim)
    return shlex.join([require_binary("socat"), "STDIO", "EXEC:" + " ".join(exim)])


def debian_copy(dest: Path, *, spool: Path, log_dir: Path) -> Path:
    """A private copy of /etc/exim4 in split mode, with the admin's local macros a test box
    needs: no reverse DNS (G5), no implicit relaying for loopback (G2), own spool and log."""
    shutil.copytree("/etc/exim4", dest, symlinks=True)
    conf = dest / "update-exim4.conf.conf"
    text = re.sub(
        r"^dc_use_split_config=.*$",
        "dc_use_split_config='true'",
        conf.read_text(),
        flags=re.MULTILINE,
    )
    conf.write_text(text)
    exim_owned_dirs(spool, log_dir)
    (dest / "conf.d/main/000_localmacros").write_text(
        "MAIN_HOST_LOOKUP =\n"
        "MAIN_RELAY_NETS =\n"
        f"SPOOLDIR = {spool}\n"
        f"log_file_path = {log_dir}/%slog\n"
    )
    return dest


def update_exim4_conf(confdir: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """Debian's real generator, reading ``confdir`` instead of /etc/exim4."""
    return run_checked(
        [require_binary("update-exim4.conf"), "-v", "-d", str(confdir), "-o", str(out)]
    )
