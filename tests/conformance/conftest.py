"""Session-wide servers for the conformance corpus: real Dovecot and authbridge, twice.

All serve protocol/users.passwd with the failure delay off and no penalty, so the same
transcripts can be replayed against each of them. The first pair offers the corpus's
default mechanisms; the second pair offers all five (SCRAM too, as the differential
fuzzer's servers) and starts only when a transcript with that "# mechanisms:" runs.
"""

from __future__ import annotations

from tests.conformance.transcript import ALL_MECHANISMS, USERS_FILE
from tests.support.authbridge_proc import authbridge_fixture
from tests.support.dovecot import dovecot_fixture

COMPAT_ARGS = ("--dovecot-compat", "--failure-delay", "0")

conformance_dovecot = dovecot_fixture(USERS_FILE, name="conformance_dovecot")
conformance_authbridge = authbridge_fixture(
    USERS_FILE, name="conformance_authbridge", extra_args=COMPAT_ARGS
)
# Dovecot 2.4-level transcripts ("# targets: authbridge"): compat mode answers every
# client as Dovecot 2.3 does, --protocol-24 brings the 2.4 level back for those clients.
conformance_authbridge24 = authbridge_fixture(
    USERS_FILE, name="conformance_authbridge24", extra_args=(*COMPAT_ARGS, "--protocol-24")
)
conformance_all_mechs_dovecot = dovecot_fixture(
    USERS_FILE, name="conformance_all_mechs_dovecot", mechanisms=ALL_MECHANISMS
)
conformance_all_mechs_authbridge = authbridge_fixture(
    USERS_FILE,
    name="conformance_all_mechs_authbridge",
    mechanisms=ALL_MECHANISMS,
    extra_args=COMPAT_ARGS,
)
