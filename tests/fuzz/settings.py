"""How hard the fuzz tests try: a quick run by default, a bounded long run in CI.

``AUTHBRIDGE_FUZZ_EXAMPLES`` sets the number of examples per test (CI runs e.g. 20000);
the settings are applied per test, so other suites' Hypothesis settings are untouched.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("AUTHBRIDGE_FUZZ_EXAMPLES", "300"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=os.environ.get("AUTHBRIDGE_FUZZ_DERANDOMIZE") == "1",
)
