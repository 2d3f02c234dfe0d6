"""Dovecot's passdb chain: which passdb is asked next, and what the chain answers.

Only sites served from a dovecot.conf (``--dovecot-config``) use it; the pipeline asks
each passdb in turn and reports its result here. The rules are Dovecot 2.3's:
``result_success`` / ``result_failure`` / ``result_internalfail`` say whether to return
or continue and whether that marks the login a success or a failure so far; ``skip``,
``mechanisms`` and ``username_filter`` pass a passdb by; a ``deny`` passdb that knows
the user ends the chain with a failure; after a ``continue`` on success the next
passdbs do not check the password again. At the end, a success recorded on the way
wins, else an internal failure seen on the way, else the last passdb's own result (an
OK that no rule marked a success is a failure, as in Dovecot).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from authbridge.config import PassdbRules
from authbridge.passdb.base import Passdb
from authbridge.passdb.dovecot import names


class Result(enum.Enum):
    OK = "ok"
    MISMATCH = "password_mismatch"
    UNKNOWN = "user_unknown"
    INTERNAL = "internal_failure"
    DISABLED = "user_disabled"
    SCHEME = "scheme_not_available"
    #: A passdb said OK but no rule marked the login a success (``result_success =
    #: return`` or ``return-fail``): Dovecot fails it.
    REFUSED = "refused_by_rules"


Link = tuple[Passdb, PassdbRules]


class ChainRun:
    """One request's walk through the chain: :meth:`first`, then :meth:`after` for each
    passdb asked, until it answers the final result."""

    __slots__ = (
        "links",
        "mechanism",
        "seen_internal",
        "seen_unknown",
        "skip_password",
        "success",
        "user",
    )

    def __init__(self, links: Sequence[Link], mechanism: str, user: str) -> None:
        self.links = links
        self.mechanism = mechanism.upper()
        self.user = user
        self.success = False
        self.skip_password = False
        self.seen_internal = False
        self.seen_unknown = False

    def first(self) -> int | None:
        """The first passdb to ask (``None``: all are skipped, an internal failure)."""
        return self._next(0)

    def after(self, index: int, result: Result) -> tuple[int | None, Result]:
        """What follows ``result`` of passdb ``index``: the next passdb to ask, or
        ``None`` and the chain's result."""
        rules = self.links[index][1]
        if result is Result.DISABLED:
            return None, result
        if result is Result.OK:
            rule = rules.result_success
        elif result is Result.INTERNAL:
            rule = rules.result_internalfail
        else:
            rule = rules.result_failure
        go_on = rule.startswith("continue")
        if rule.endswith("-ok"):
            self.success = True
        elif rule.endswith("-fail"):
            self.success = False
        if go_on and (result is Result.OK or rule == "continue-ok"):
            self.skip_password = True  # verified once: the next passdbs only add to it
        following = self._next(index + 1)
        if go_on and following is not None:
            if result is Result.UNKNOWN:
                self.seen_unknown = True
            elif result is Result.INTERNAL:
                self.seen_internal = True
            return following, result
        if self.success:
            return None, Result.OK
        if self.seen_internal:
            return None, Result.INTERNAL
        return None, Result.REFUSED if result is Result.OK else result

    def _next(self, start: int) -> int | None:
        for index in range(start, len(self.links)):
            if not self._skipped(self.links[index][1]):
                return index
        return None

    def _skipped(self, rules: PassdbRules) -> bool:
        if rules.mechanisms and self.mechanism not in rules.mechanisms:
            return True
        if rules.username_filter and not names.accepted(rules.username_filter, self.user):
            return True
        if rules.skip == "authenticated":
            return self.skip_password
        if rules.skip == "unauthenticated":
            return not self.skip_password
        return False


def lookup_name(rules: PassdbRules, user: str) -> str:
    """The name ``user`` is looked up with in this passdb (its ``username_format``)."""
    return names.expand(rules.username_format, user)
