"""deploy/install-debian.sh, run for real into a temporary root (--root), never into /."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import require_binary

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SCRIPT = DEPLOY / "install-debian.sh"

EXIM_GROUP = "Debian-exim:x:105:\n"
POSTFIX_GROUP = "postfix:x:109:\n"


def _make_root(base: Path, groups: str) -> Path:
    root = base / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\n" + groups)
    return root


def _run(root: Path, *args: str, script: Path = SCRIPT) -> subprocess.CompletedProcess[str]:
    require_binary("systemd-sysusers")
    if os.geteuid() != 0:
        pytest.skip("install-debian.sh must run as root (it chowns files)")
    return subprocess.run(
        ["sh", str(script), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _ok(root: Path, *args: str, script: Path = SCRIPT) -> subprocess.CompletedProcess[str]:
    result = _run(root, *args, script=script)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _entry(root: Path, name: str, database: str) -> list[str]:
    for line in (root / "etc" / database).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    raise AssertionError(f"{name} not in {database}")


def _mode_owner(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


@pytest.fixture
def exim_root(tmp_path: Path) -> Path:
    return _make_root(tmp_path, EXIM_GROUP)


def test_fresh_install_layout(exim_root: Path) -> None:
    root = exim_root
    result = _ok(root)
    user = _entry(root, "authbridge", "passwd")
    gid = int(_entry(root, "authbridge", "group")[2])
    assert user[3] == str(gid)
    assert (user[5], user[6]) == ("/nonexistent", "/usr/sbin/nologin")
    assert int(user[2]) < 1000  # a system account

    etc = root / "etc/authbridge"
    assert _mode_owner(etc) == (0o750, 0, gid)
    for name in ("authbridge.toml", "authbridge.toml.example", "users"):
        assert _mode_owner(etc / name) == (0o640, 0, gid), name
    assert (etc / "authbridge.toml").read_text() == (DEPLOY / "authbridge.toml.example").read_text()
    assert (etc / "users").read_text() == (DEPLOY / "users.example").read_text()

    units = root / "etc/systemd/system"
    for unit in ("authbridge.socket", "authbridge.service"):
        assert _mode_owner(units / unit)[0] == 0o644
        assert (units / unit).read_text() == (DEPLOY / "systemd" / unit).read_text()
    # Exim host, no options: no drop-ins at all.
    assert not (units / "authbridge.socket.d").exists()
    assert not (units / "authbridge.service.d").exists()
    assert (root / "etc/sysusers.d/authbridge.conf").read_text() == (
        DEPLOY / "systemd/authbridge.sysusers"
    ).read_text()
    assert (root / "usr/local/share/doc/authbridge/README.md").exists()
    assert "MTA: exim, socket: /run/authbridge/auth-client" in result.stdout
    assert "next steps:" in result.stdout


def test_rerun_keeps_local_edits_and_repairs_modes(exim_root: Path) -> None:
    root = exim_root
    _ok(root)
    etc = root / "etc/authbridge"
    (etc / "authbridge.toml").write_text("# mine\n")
    (etc / "users").write_text("alice:{PLAIN}x::::::\n")
    etc.chmod(0o755)
    stale_example = etc / "authbridge.toml.example"
    stale_example.write_text("old example\n")
    unit = root / "etc/systemd/system/authbridge.service"
    unit.write_text("edited\n")

    result = _ok(root)
    assert (etc / "authbridge.toml").read_text() == "# mine\n"
    assert (etc / "users").read_text() == "alice:{PLAIN}x::::::\n"
    assert "created:" not in result.stdout
    assert _mode_owner(etc)[0] == 0o750
    # Files the installer owns are refreshed.
    assert stale_example.read_text() == (DEPLOY / "authbridge.toml.example").read_text()
    assert unit.read_text() == (DEPLOY / "systemd/authbridge.service").read_text()
    # Still exactly one authbridge user and group.
    passwd = (root / "etc/passwd").read_text()
    assert passwd.count("\nauthbridge:") + passwd.startswith("authbridge:") == 1
    assert (root / "etc/group").read_text().count("authbridge:") == 1


def test_options_switch_dropins_on_and_off(exim_root: Path) -> None:
    root = exim_root
    socket_d = root / "etc/systemd/system/authbridge.socket.d"
    service_d = root / "etc/systemd/system/authbridge.service.d"
    dropins = DEPLOY / "systemd/dropins/authbridge.socket.d"

    result = _ok(root, "--replace-dovecot", "--bin", "/opt/authbridge/bin/authbridge")
    assert sorted(p.name for p in socket_d.iterdir()) == ["replace-dovecot.conf"]
    assert (socket_d / "replace-dovecot.conf").read_text() == (
        dropins / "replace-dovecot.conf"
    ).read_text()
    assert (service_d / "executable.conf").read_text().splitlines()[-2:] == [
        "ExecStart=",
        "ExecStart=/opt/authbridge/bin/authbridge serve --config /etc/authbridge/authbridge.toml",
    ]
    assert "socket: /run/dovecot/auth-client" in result.stdout

    _ok(root, "--mta", "postfix")
    assert sorted(p.name for p in socket_d.iterdir()) == ["postfix.conf"]
    assert not service_d.exists()

    _ok(root)
    assert not socket_d.exists()


def test_postfix_only_host_gets_the_chroot_socket(tmp_path: Path) -> None:
    root = _make_root(tmp_path, POSTFIX_GROUP)
    result = _ok(root)
    assert (root / "etc/systemd/system/authbridge.socket.d/postfix.conf").exists()
    assert "MTA: postfix, socket: /var/spool/postfix/private/authbridge" in result.stdout
    assert "smtpd_sasl_path = private/authbridge" in result.stdout


def test_no_mta_is_a_clear_error(tmp_path: Path) -> None:
    root = _make_root(tmp_path, "")
    result = _run(root)
    assert result.returncode == 1
    assert "neither Exim (group Debian-exim) nor Postfix (group postfix) is installed" in (
        result.stderr
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mta", "sendmail"], "--mta must be exim, postfix or auto"),
        (["--bin", "authbridge"], "--bin must be an absolute path"),
        (["--frobnicate"], "unknown option --frobnicate"),
        (["--venv"], "--venv needs an argument"),
    ],
)
def test_bad_options(exim_root: Path, args: list[str], message: str) -> None:
    result = _run(exim_root, *args)
    assert result.returncode == 1
    assert message in result.stderr


def test_missing_account_databases(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = _run(tmp_path / "empty")
    assert result.returncode == 1
    assert "etc/passwd or" in result.stderr


def _copy_checkout(destination: Path) -> Path:
    """The installable part of the checkout; pip must not write build/ into the real one."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    shutil.copytree(REPO / "authbridge", destination / "authbridge", ignore=ignore)
    shutil.copytree(DEPLOY, destination / "deploy", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, destination / name)
    return destination


def test_venv_option_installs_a_working_program(exim_root: Path, tmp_path: Path) -> None:
    checkout = _copy_checkout(tmp_path / "checkout")
    _ok(
        exim_root,
        "--venv",
        "/opt/authbridge",
        "--venv-args",
        "--system-site-packages",
        "--pip-args",
        "--no-deps",
        script=checkout / "deploy/install-debian.sh",
    )
    link = exim_root / "usr/local/bin/authbridge"
    assert os.readlink(link) == "/opt/authbridge/bin/authbridge"
    program = exim_root / "opt/authbridge/bin/authbridge"
    version = subprocess.run(
        [str(program), "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"authbridge {_version()}"
    # Installed, not a link back into the checkout (an editable install would break on rm).
    shown = subprocess.run(
        [
            str(exim_root / "opt/authbridge/bin/python"),
            "-c",
            "import authbridge; print(authbridge.__file__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert shown.stdout.startswith(str(exim_root / "opt/authbridge/lib")), shown.stdout
    # Running the installer again leaves the venv alone and succeeds.
    _ok(
        exim_root,
        "--venv",
        "/opt/authbridge",
        "--pip-args",
        "--no-deps",
        script=checkout / "deploy/install-debian.sh",
    )


def _version() -> str:
    namespace: dict[str, str] = {}
    init = (REPO / "authbridge/__init__.py").read_text()
    for line in init.splitlines():
        if line.startswith("__version__"):
            exec(line, namespace)
    return namespace["__version__"]


def test_pip_install_into_a_fresh_venv(tmp_path: Path) -> None:
    """`pip install .` from the checkout gives a working `authbridge` console script.

    The build is isolated: pyproject.toml asks for setuptools>=68 (which builds wheels by
    itself), newer than the interpreter's own; --no-deps because the runtime dependencies
    come from the system site (--system-site-packages).
    """
    checkout = _copy_checkout(tmp_path / "checkout")
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
        check=True,
        timeout=300,
    )
    pip = subprocess.run(
        [
            str(venv / "bin/python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            str(checkout),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    version = subprocess.run(
        [str(venv / "bin/authbridge"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"authbridge {_version()}"


def test_rehash_dropin_with_the_option_or_an_enabled_rehash_section(exim_root: Path) -> None:
    root = exim_root
    service_d = root / "etc/systemd/system/authbridge.service.d"
    shipped = (DEPLOY / "systemd/dropins/authbridge.service.d/rehash.conf").read_text()

    _ok(root, "--rehash")
    assert sorted(p.name for p in service_d.iterdir()) == ["rehash.conf"]
    assert (service_d / "rehash.conf").read_text() == shipped
    assert _mode_owner(service_d / "rehash.conf")[0] == 0o644
    assert "StateDirectory=authbridge" in shipped

    _ok(root)  # neither the option nor [rehash] in the config: removed again
    assert not service_d.exists()

    config = root / "etc/authbridge/authbridge.toml"
    config.write_text('[server]\nenabled = true\n[rehash]\nscheme = "ARGON2ID"\n')
    _ok(root)  # [rehash] present but not enabled; another section's enabled does not count
    assert not service_d.exists()

    config.write_text('[rehash]\n  enabled = true   # on\nscheme = "ARGON2ID"\n[cache]\n')
    _ok(root)
    assert (service_d / "rehash.conf").read_text() == shipped
