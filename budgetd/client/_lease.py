"""A lease: calls a client admits itself, in microseconds, each against a hold the daemon opened for it.

`client.lease(estimate, calls=N)` is one `reserve` of N calls: the daemon weighs them against every
matching budget at once and opens one durable hold per call that fits. `Lease.admit` then hands out
those holds without a round trip; each admitted call is committed (or released) like any reservation,
and `client.lease_return(lease)` gives back the holds it never handed out. It is exact: every call
admitted here was held by the daemon at the estimate's price, which is at least the price of the call
admitted (the same labels, no more tokens of any kind).
"""

import time
from typing import Any

import msgspec

from budgetd.model import Decision, Estimate

#: What must be the same for a call to be covered by a lease's estimate (more tokens are never covered).
_SAME = ("component", "model", "provider", "tier", "context_id", "task_type", "service_tier", "priority",
         "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens", "audio_input_tokens",
         "web_search_requests")
#: A call is not admitted in the last part of the lease's time: it needs time to run and be committed (a
#: call committed after its hold expired is still recorded, but was no longer held).
_KEEP_FOR_COMMIT = 0.1


class Lease:
    """Holds the daemon opened for calls of `estimate`, handed out by `admit` until they run out or the
    lease nears its expiry. Not shared between threads."""

    __slots__ = ("decision", "estimate", "_unused", "_unclaimed", "_until")

    def __init__(self, decision: Decision, estimate: Estimate, sent_at: float, ttl_s: float,
                 owner: bool = True) -> None:
        """`sent_at`: this process's monotonic clock when the reserve was sent. A repeated lease (its key
        again, answered `duplicate`) admits nothing: its holds may be handed out by the first Lease, and
        may have expired. `owner`: no Lease of this client has them (the first answer was lost), so
        `take_unused` gives them back."""
        self.decision = decision
        self.estimate = estimate
        held = decision.reservation_ids or ([decision.reservation_id] if decision.reservation_id else [])
        self._unused = [] if decision.duplicate else held[::-1]  # handed out from the end: the first id first
        self._unclaimed = held if decision.duplicate and owner else []
        # By this process's monotonic clock, from before the request was sent: never later than the daemon's.
        self._until = sent_at + ttl_s * (1 - _KEEP_FOR_COMMIT)

    @property
    def remaining(self) -> int:
        """Calls this lease may still admit (0 once it nears its expiry)."""
        return len(self._unused) if time.monotonic() < self._until else 0

    def covers(self, estimate: Estimate) -> bool:
        """Whether a call of `estimate` costs at most what each hold of this lease holds."""
        mine = self.estimate
        if any(getattr(estimate, f) != getattr(mine, f) for f in _SAME):
            return False
        if estimate.input_tokens > mine.input_tokens:
            return False
        if mine.max_output_tokens is None:
            return estimate.max_output_tokens is None
        return estimate.max_output_tokens is not None and estimate.max_output_tokens <= mine.max_output_tokens

    def admit(self, estimate: Estimate | None = None, **fields: Any) -> str | None:
        """The reservation id of a hold for this call, or None (the lease is used up or nearly expired,
        or the call may cost more than its estimate: reserve it the usual way). No round trip."""
        if estimate is None:
            estimate = msgspec.structs.replace(self.estimate, **fields) if fields else self.estimate
        if not self._unused or time.monotonic() >= self._until or not self.covers(estimate):
            return None
        return self._unused.pop()

    def take_unused(self) -> list[str]:
        """The holds never handed out (this lease admits nothing more)."""
        unused, self._unused, self._unclaimed = self._unused[::-1] + self._unclaimed, [], []
        return unused

    def __repr__(self) -> str:
        return f"<Lease {len(self._unused)} of {self.estimate.component}/{self.estimate.model} left>"
