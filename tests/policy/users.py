"""The logins of the policy tests: the interop users plus two with ``allow_nets``."""

from __future__ import annotations

from tests.interop.common import USERS

NET_USER, NET_PASSWORD = "netuser", "netpass-4711"
LOCAL_USER, LOCAL_PASSWORD = "localuser", "localpass-4711"
#: Dovecot's per-user allow_nets: a CIDR; "local" = a request without rip.
EXTRA_USERS = (
    f"{NET_USER}:{{PLAIN}}{NET_PASSWORD}::::::allow_nets=192.168.0.0/24\n"
    f"{LOCAL_USER}:{{PLAIN}}{LOCAL_PASSWORD}::::::allow_nets=local,10.9.0.0/16\n"
)
PASSWORDS = {u.name: u.password for u in USERS.values()} | {
    NET_USER: NET_PASSWORD,
    LOCAL_USER: LOCAL_PASSWORD,
}
