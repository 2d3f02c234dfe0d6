"""deploy/prometheus and deploy/grafana against the real promtool and a live /metrics.

The alert rules must pass ``promtool check rules`` and their unit tests
(alerts_test.yml); every PromQL expression of the dashboard must parse; every
``authbridge_*`` name that either uses must exist in a scrape of the running daemon;
and the metric list in deploy/OBSERVABILITY.md must be exactly what /metrics serves.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from tests.observability.conftest import Observed
from tests.observability.helpers import Scrape, http_get
from tests.support import require_binary

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "deploy" / "prometheus").glob("*.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "authbridge-dashboard.json"
DOC = ROOT / "deploy" / "OBSERVABILITY.md"
ALERT_TESTS = Path(__file__).with_name("alerts_test.yml")
NAME = re.compile(r"\bauthbridge_[a-z0-9_]+\b")
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_info")


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


# The rule files keep each ``expr:`` on one line, so no YAML library is needed to read
# them; test_rules_pass_promtool_check checks that this finds every rule promtool sees.
EXPR = re.compile(r"^\s+expr: (.+)$", re.M)
ALERT = re.compile(r"^\s+- alert: (\w+)$", re.M)


def _rule_exprs() -> list[str]:
    return [expr for path in RULES for expr in EXPR.findall(path.read_text())]


def _dashboard_exprs() -> list[str]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def _family(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_rules_pass_promtool_check() -> None:
    assert RULES, "no rule files in deploy/prometheus"
    proc = _promtool("check", "rules", *map(str, RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", proc.stdout))
    assert found == len(_rule_exprs()) >= 4


def test_alerts_fire_as_their_unit_tests_say() -> None:
    proc = _promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_required_alerts_exist() -> None:
    names = {name for path in RULES for name in ALERT.findall(path.read_text())}
    assert {
        "AuthbridgeBruteForce",
        "AuthbridgeTemporaryFailures",
        "AuthbridgeStoreReloadFailed",
        "AuthbridgeNotReady",
    } <= names


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses each dashboard query (Grafana variables filled in) as a rule."""
    exprs = _dashboard_exprs()
    assert len(exprs) >= 15
    rules = []
    for index, expr in enumerate(exprs):
        concrete = (
            expr.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$instance", ".*")
        )
        assert "$" not in concrete, expr
        rules.append({"record": f"dashboard:query_{index}", "expr": concrete})
    path = tmp_path / "dashboard-queries.yml"
    # JSON is YAML: promtool reads it as a rule file.
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = _promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_is_importable_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "authbridge" and dashboard["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= variables
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def _assert_exist(names: set[str], scrape: Scrape) -> None:
    samples = {name for name, _ in scrape.samples}
    missing = sorted(n for n in names if n not in samples and _family(n) not in scrape.families)
    assert not missing, f"named but not in /metrics: {missing}"


def test_every_metric_in_rules_exists(compat: Observed) -> None:
    names = {n for expr in _rule_exprs() for n in NAME.findall(expr)}
    assert len(names) >= 5
    _assert_exist(names, compat.scrape())


def test_every_metric_in_dashboard_exists(compat: Observed) -> None:
    names = {n for expr in _dashboard_exprs() for n in NAME.findall(expr)}
    assert len(names) >= 15
    _assert_exist(names, compat.scrape())


def test_documented_metric_list_is_exactly_what_is_served(compat: Observed) -> None:
    documented = set(re.findall(r"^\| `(authbridge_[a-z0-9_]+)`", DOC.read_text(), re.M))
    served = {name for name, _ in compat.scrape().samples}
    served_families = {_family(n) for n in served | set(compat.scrape().families)}
    documented_families = {_family(n) for n in documented}
    if compat.workers == 1:  # a single process has no supervisor series
        documented_families -= {"authbridge_workers", "authbridge_worker_restarts"}
    assert documented_families == served_families


def test_live_endpoints(compat: Observed) -> None:
    assert http_get(compat.metrics_port, "/healthz") == (200, "ready\n")
    status, text = http_get(compat.metrics_port, "/metrics")
    assert status == 200 and "authbridge_build_info{" in text
    assert compat.scrape().value("authbridge_ready") == 1
    assert http_get(compat.metrics_port, "/")[0] == 404
