"""The README's commands as a Debian 12 admin types them (issue #17 item 9).

A minimal Debian has no sudo, the Debian exim4 package reads conf.d/ only with
``dc_use_split_config='true'``, and Dovecot is only the alternative to
``authbridge auth test``. The demo commands themselves run in tests/test_serve.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
QUICK_START = "## From nothing to SMTP AUTH on Debian 12 (Exim)"


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def commands(block: str) -> list[str]:
    """The block's command lines, comments dropped and continuation lines joined."""
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and line[0] != "#"]


def quick_start() -> list[str]:
    section = README[README.index(QUICK_START) :]
    return commands(shell_blocks(section)[0])


def test_no_readme_command_needs_sudo() -> None:
    for block in shell_blocks(README):
        for command in commands(block):
            assert not re.search(r"(^|[;&|(]\s*)sudo", command), command


def test_the_test_command_is_what_ci_runs() -> None:
    (block,) = [b for b in shell_blocks(README) if ".ci/test" in b]
    assert commands(block) == ["bash .ci/test"]
    assert "exec bash .ci/test" in (REPO / ".ci/run").read_text()


def index_of(lines: list[str], fragment: str) -> int:
    (found,) = [i for i, line in enumerate(lines) if fragment in line]
    return found


def test_quick_start_switches_exim_to_the_split_config_in_order() -> None:
    lines = quick_start()
    heavy = index_of(lines, "apt-get install exim4-daemon-heavy")
    split = index_of(lines, "dc_use_split_config='true'")
    emit = index_of(lines, "emit-exim-config --debian-split /etc/exim4")
    update = index_of(lines, "update-exim4.conf &&")
    # the package makes update-exim4.conf.conf, which emit-exim-config wants to see
    assert heavy < split < emit < update


def test_the_split_config_line_works_on_debians_file(tmp_path: Path) -> None:
    line = quick_start()[index_of(quick_start(), "dc_use_split_config='true'")]
    debian = Path("/etc/exim4/update-exim4.conf.conf")
    conf = tmp_path / "update-exim4.conf.conf"
    if debian.exists():
        shutil.copy(debian, conf)
        conf.write_text(
            conf.read_text().replace("dc_use_split_config='true'", "dc_use_split_config='false'")
        )
    else:  # as the exim4-config package writes it
        conf.write_text("dc_eximconfig_configtype='local'\ndc_use_split_config='false'\n")
    before = conf.read_text()
    subprocess.run(
        ["sh", "-c", line.replace("/etc/exim4/update-exim4.conf.conf", str(conf))], check=True
    )
    after = conf.read_text()
    assert "dc_use_split_config='true'" in after.splitlines()
    assert "dc_use_split_config='false'" not in after
    assert len(after.splitlines()) == len(before.splitlines())


def test_quick_start_tests_the_login_on_the_installed_socket() -> None:
    socket_unit = (REPO / "deploy/systemd/authbridge.socket").read_text()
    listen = re.search(r"^ListenStream=(/\S+)$", socket_unit, re.MULTILINE)
    assert listen is not None
    lines = quick_start()
    test = index_of(lines, "authbridge auth test")
    assert f"-a {listen.group(1)} " in lines[test]
    assert index_of(lines, "systemctl start authbridge.socket") < test
    assert not any("doveadm" in line for line in lines)


def test_dovecot_is_only_the_alternative() -> None:
    assert README.count("apt-get install dovecot-core") == 1
    demo = README.index(".venv/bin/authbridge auth test -a ./authbridge-demo/auth-client")
    paragraph = README[README.index("apt-get install dovecot-core") - 200 :][:400]
    assert README.index("apt-get install dovecot-core") > demo
    assert "With Dovecot's own client installed" in paragraph
