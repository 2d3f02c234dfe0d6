"""benchmarks/side_by_side.py: its argument handling, authload parsing and report (no timing).

The script itself starts real servers and runs for minutes; these check the pieces that
turn authload's output into the issue's table, on fixed numbers.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "side_by_side.py"


@pytest.fixture(scope="module")
def sbs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("side_by_side", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["side_by_side"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


LINE = (
    "mech=PLAIN conns=8 depth=16 churn=0 secs=5.0 ok=650000 fail=0 err=0 rate=130000/s "
    "p50=0.950ms p99=2.100ms max=9.500ms connects=8"
)


def test_parses_authload_summary(sbs: ModuleType) -> None:
    r = sbs.parse_authload(LINE)
    assert (r.ok, r.fail, r.err, r.connects) == (650000, 0, 0, 8)
    assert r.rate == 130000.0
    assert (r.p50_ms, r.p99_ms, r.max_ms) == (0.95, 2.1, 9.5)
    with pytest.raises(ValueError):
        sbs.parse_authload("need -s and -U")


def test_arguments(sbs: ModuleType) -> None:
    quick = sbs.parse_args(["--quick"])
    assert (quick.duration, quick.warmup, quick.runs) == (1.0, 0.3, 1)
    full = sbs.parse_args(["--runs", "2", "--duration", "7", "--only", "churn"])
    assert (full.duration, full.warmup, full.runs) == (7.0, 1.0, 2)
    assert [w.label for w in sbs.select(sbs.WORKLOADS, full.only)] == ["churn x16 PLAIN {PLAIN}"]
    assert len(sbs.select(sbs.WORKLOADS, None)) == len(sbs.WORKLOADS)
    with pytest.raises(SystemExit):
        sbs.select(sbs.WORKLOADS, "no such workload")
    with pytest.raises(SystemExit):
        sbs.parse_args(["--runs", "0"])
    keys = [s.key for s in sbs.select_servers(None, floors=False)]
    assert keys == ["dovecot", "default", "compat", "workers2"]
    assert [s.key for s in sbs.select_servers("dovecot,floor_raw", floors=False)] == [
        "dovecot",
        "floor_raw",
    ]
    with pytest.raises(SystemExit):
        sbs.select_servers("nginx", floors=False)


def test_authload_command(sbs: ModuleType) -> None:
    churn = next(w for w in sbs.WORKLOADS if w.churn)
    cmd = sbs.authload_command(Path("/b/authload"), Path("/s"), Path("/u"), churn, 5.0, 1.0)
    assert cmd[0] == "/b/authload" and cmd[-1] == "--churn"
    assert cmd[cmd.index("-c") + 1] == "16" and cmd[cmd.index("-t") + 1] == "5"
    crypt = next(w for w in sbs.WORKLOADS if "SHA512-CRYPT" in w.label)
    cmd = sbs.authload_command(Path("a"), Path("s"), Path("u"), crypt, 0.5, 0.25)
    assert cmd[cmd.index("-d") + 1] == "4" and "--churn" not in cmd
    assert cmd[cmd.index("-w") + 1] == "0.25"


def test_missing_source_says_what_to_do(sbs: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(sbs.AuthloadError, match="--authload-src"):
        sbs.build_authload(tmp_path / "nowhere.c", tmp_path / "cache")


def test_report(sbs: ModuleType) -> None:
    workloads = sbs.select(sbs.WORKLOADS, "PLAIN {PLAIN} 8x16,churn")
    servers = sbs.select_servers("dovecot,default,compat,workers2", floors=False)
    m = sbs.Measured(servers, workloads)
    plain, churn = (w.label for w in workloads)
    rates = {
        "dovecot": [(130000, 2.0), (39000, 1.0)],
        "default": [(91000, 2.9), (20000, 1.0)],
        "compat": [(120000, 2.0), (21000, 1.0)],
        "workers2": [(150000, 2.0), (19000, 1.0)],
    }
    for run in range(2):
        for key, values in rates.items():
            for label, (rate, p99) in zip((plain, churn), values, strict=True):
                r = sbs.Result(ok=int(rate), rate=rate + run * 1000, p50_ms=0.5, p99_ms=p99)
                m.add(key, label, r)
    text = sbs.render(m, {"when": "now", "authbridge": "abc123"})
    row = next(line for line in text.splitlines() if line.startswith(f"| {plain} |"))
    # Dovecot's range, then each ratio range and its verdict on the worst run
    assert "130.0k–131.0k" in row
    assert "(0.70×) ✓" in row  # default, info: 91/130 and 92/131 both ≥ 0.7
    assert "(0.92×) ✗" in row  # compat, warning: below 1.0
    churn_row = next(line for line in text.splitlines() if line.startswith(f"| {churn} |"))
    assert "(0.51–0.53×) ✓" in churn_row  # 20/39, 21/40
    assert "(0.49–0.50×) ✗" in churn_row  # 2 workers: 19/39, 20/40
    # p99 ratios: default at 2.9 / 2.0 = 1.45 (≤ 1.5)
    latency = text.split("### Latency")[1].split("###")[0]
    assert "(1.45×) ✓" in latency
    workers = text.split("### 2 workers")[1].split("###")[0]
    assert "| 1.64–1.65× ✓ | ≥ 1.5× |" in workers  # 150/91 = 1.648, 151/92 = 1.641
    assert "| 0.95× ✗ | ≥ 1.0× |" in workers  # churn: slower than one process
    assert "authbridge: abc123" in text


def test_quotes_the_error_of_a_failed_instruction_count(sbs: ModuleType) -> None:
    failed = (
        "==1== Command: python instructions.py --run 200\n"
        "  + Exception Group Traceback (most recent call last):\n"
        '  |   File "x.py", line 1, in <module>\n'
        "  | ModuleNotFoundError: No module named 'structlog'\n"
        "    +------------------------------------\n"
        "==1== I   refs:      531,716,442\n"
    )
    assert sbs._error_line(failed) == "ModuleNotFoundError: No module named 'structlog'"
    assert sbs._error_line("==1== only valgrind\n") == "?"
    line = "/r: 384k instructions per request (PLAIN {SSHA512}, one connection)"
    assert sbs._INSTR.search(line).groups() == ("384", "request")
