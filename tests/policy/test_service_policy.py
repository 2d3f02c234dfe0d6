"""Policy per service (issue 20 item 4): ``[policy.service.NAME]`` overrides the gates.

A client that never says ``secured`` (Radicale behind its own TLS, a local XMPP server)
gets its own gates while SMTP stays strict: the config, the merge, the O(1) lookup, the
daemon answering two services differently on one connection, and ``authbridge check``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from authbridge.checks.policy import PLAINTEXT_INSECURE, PolicyGate
from authbridge.commands.check import describe_gates
from authbridge.config import ConfigError, ServicePolicy, parse_config
from authbridge.core.session import RequestInfo
from tests.interop.test_radicale_policy import RECIPE as INTEROP_RECIPE
from tests.policy.authclient import AuthClient, plain_resp
from tests.policy.conftest import StartBridge

RECIPE = """
[policy]
failure_delay = 2.0

[policy.service.radicale]
require_secured = false
allowed_networks = ["127.0.0.0/8", "::1/128"]
allow_no_rip = false
failure_delay = 0

[policy.service.xmpp]
penalty = false
failure_delay = 0
"""


def info(service: str, rip: str | None = "127.0.0.1", secured: bool = False) -> RequestInfo:
    return RequestInfo(1, "PLAIN", service, rip=rip, secured=secured)


def test_the_tables_load_with_inheritance() -> None:
    policy = parse_config(RECIPE).policy
    services = dict(policy.services)
    assert services["radicale"] == ServicePolicy(
        require_secured=False,
        allowed_networks=("127.0.0.0/8", "::1/128"),
        allow_no_rip=False,
        failure_delay=0.0,
    )
    assert services["xmpp"] == ServicePolicy(penalty=False, failure_delay=0.0)
    assert parse_config("").policy.services == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[policy.service.http]\nrequire_secured = false\nrequire_secure = true\n",
            "<string>:3: policy.service.http.require_secure: unknown setting "
            "(did you mean 'require_secured'?)",
        ),
        (
            '[policy.service.http]\nfailure_delay = "1"\n',
            "<string>:2: policy.service.http.failure_delay: expected float, got str",
        ),
        (
            '[policy.service.http]\nallowed_networks = ["nonsense"]\n',
            "<string>:2: policy.service.http.allowed_networks: 'nonsense' is not a network",
        ),
        ("[policy.service.HTTP]\npenalty = false\n", "<string>:1: policy.service.HTTP: "),
        ("[policy.service]\nhttp = 1\n", "<string>:2: policy.service.http: expected a table"),
        (
            "[policy.service.http]\nfailure_delay = 8\n",
            "<string>:2: policy.service.http.failure_delay: failure_delay (8 s) plus",
        ),
    ],
)
def test_bad_tables_are_refused_with_line_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert str(caught.value).startswith(message)


def test_a_long_delay_is_fine_for_a_service_without_penalty() -> None:
    config = parse_config("[policy.service.http]\nfailure_delay = 8\npenalty = false\n")
    assert dict(config.policy.services)["http"].failure_delay == 8.0


def test_gates_per_service_and_the_default_for_others() -> None:
    gate = PolicyGate(parse_config(RECIPE).policy)
    assert gate.refusal(info("radicale"), True) is None
    assert gate.refusal(info("Radicale"), True) is None, "service names match in any case"
    assert gate.refusal(info("radicale", rip="192.0.2.1"), True) is not None
    assert gate.refusal(info("radicale", rip=None), True) is not None
    assert gate.refusal(info("smtp"), True) is PLAINTEXT_INSECURE
    assert gate.refusal(info("smtp", secured=True), True) is None
    assert gate.refusal(info("xmpp"), True) is PLAINTEXT_INSECURE, "xmpp inherits secured-only"
    assert gate.failure_delay(info("radicale")) == 0.0
    assert gate.failure_delay(info("smtp")) == 2.0
    assert not gate.gates(info("xmpp")).penalty and gate.gates(info("smtp")).penalty


def test_without_tables_every_service_shares_one_gates_object() -> None:
    gate = PolicyGate(parse_config("").policy)
    assert gate.services is None
    assert gate.gates(info("radicale")) is gate.default is gate.gates(info("smtp"))


def test_dovecot_compat_drops_the_service_tables() -> None:
    assert parse_config(RECIPE).dovecot_compatible().policy.services == ()


def _auth(client: AuthClient, request_id: int, service: str, password: str, *params: str) -> str:
    fields = ["AUTH", str(request_id), "PLAIN", f"service={service}", *params]
    client.send("\t".join([*fields, "resp=" + plain_resp("plainuser", password)]) + "\n")
    return client.reply(request_id)


def test_the_daemon_applies_each_services_gates(bridge: StartBridge) -> None:
    server = bridge("service-gates", RECIPE)
    with AuthClient(server.socket_path) as client:
        assert _auth(client, 1, "radicale", "plainpass", "rip=127.0.0.1").startswith("OK\t1\t")
        refused = _auth(client, 2, "smtp", "plainpass", "rip=127.0.0.1")
        assert refused.startswith("FAIL\t2\tuser=plainuser\treason=Plaintext")
        assert _auth(client, 3, "smtp", "plainpass", "rip=127.0.0.1", "secured").startswith("OK")
        # Outside the service's networks, or without rip: refused like a wrong password.
        assert _auth(client, 4, "radicale", "plainpass", "rip=192.0.2.1") == (
            "FAIL\t4\tuser=plainuser"
        )
        assert _auth(client, 5, "radicale", "plainpass") == "FAIL\t5\tuser=plainuser"
        # Each service's failure delay: radicale's 0 s, smtp's 2 s.
        started = time.monotonic()
        assert _auth(client, 6, "radicale", "wrong", "rip=127.0.0.1").startswith("FAIL\t6")
        assert time.monotonic() - started < 1.5
        started = time.monotonic()
        assert _auth(client, 7, "smtp", "wrong", "rip=127.0.0.2", "secured").startswith("FAIL")
        assert time.monotonic() - started >= 1.9


def test_a_service_without_penalty_neither_records_nor_waits(bridge: StartBridge) -> None:
    server = bridge("service-penalty", RECIPE)
    with AuthClient(server.socket_path) as client:
        for n in range(4):
            started = time.monotonic()
            reply = _auth(client, 10 + n, "xmpp", f"guess-{n}", "rip=198.51.100.7", "secured")
            assert reply.startswith("FAIL")
            assert time.monotonic() - started < 0.9, "xmpp is exempt: no penalty wait"
        # Nothing was recorded for the address: its next SMTP login is not delayed either.
        started = time.monotonic()
        ok = _auth(client, 20, "smtp", "plainpass", "rip=198.51.100.7", "secured")
        assert ok.startswith("OK") and time.monotonic() - started < 0.9
        # Control: the same guesses over smtp raise the address's penalty (>= 1 s).
        _auth(client, 21, "smtp", "guess-a", "rip=198.51.100.8", "secured")
        started = time.monotonic()
        assert _auth(client, 22, "smtp", "plainpass", "rip=198.51.100.8", "secured").startswith(
            "OK"
        )
        assert time.monotonic() - started >= 0.9


def test_check_shows_the_effective_policy_per_service(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("userx:{PLAIN}secret\n")
    config = tmp_path / "authbridge.toml"
    config.write_text(RECIPE + f'\n[[store]]\ntype = "passwd-file"\npath = "{users}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "authbridge", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert (
        "  service *: plaintext only when secured, networks any, penalty on, "
        "failure_delay 2 s" in lines
    )
    assert (
        "  service radicale: plaintext anywhere, networks 127.0.0.0/8 ::1/128, "
        "no rip refused, penalty on, failure_delay 0 s" in lines
    )
    assert (
        "  service xmpp: plaintext only when secured, networks any, penalty off, "
        "failure_delay 0 s" in lines
    )


def test_the_readme_recipe_is_the_tested_one() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Local HTTP and XMPP clients") :]
    block = section[section.index("```toml\n") + 8 : section.index("```\n", 8)]
    gate = PolicyGate(parse_config(block).policy)
    assert gate.refusal(info("radicale"), True) is None
    assert gate.refusal(info("radicale", rip="192.0.2.1"), True) is not None
    assert gate.refusal(info("smtp"), True) is PLAINTEXT_INSECURE
    assert parse_config(INTEROP_RECIPE).policy == parse_config(block).policy
    # authbridge check's lines as the README shows them.
    shown = section[section.index("policy: plaintext") :].split("```")[0].splitlines()
    for name, gates in gate.effective():
        assert f"  service {name}: {describe_gates(gates, True)}" in shown
