"""Session-wide servers for the conformance corpus: one real Dovecot, one authbridge.

Both serve protocol/users.passwd with the failure delay off and no penalty, so the same
transcripts can be replayed against each of them.
"""

from __future__ import annotations

from tests.conformance.transcript import USERS_FILE
from tests.support.authbridge_proc import authbridge_fixture
from tests.support.dovecot import dovecot_fixture

conformance_dovecot = dovecot_fixture(USERS_FILE, name="conformance_dovecot")
conformance_authbridge = authbridge_fixture(
    USERS_FILE,
    name="conformance_authbridge",
    extra_args=("--dovecot-compat", "--failure-delay", "0"),
)
