"""Open reservations: what each holds on which counters, and when it expires (by the daemon's clock)."""

import heapq
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, NamedTuple

from actors.allocator.budgets import Counter
from budgetd.model import Estimate


class Charge(NamedTuple):
    """What one write or hold put on one counter."""

    counter: Counter
    nanos: int
    tokens: int


@dataclass
class Hold:
    id: str
    charges: list[Charge]
    expires_us: int  # by the daemon's clock: a hold rebuilt after a restart expires when it would have
    estimate: Estimate


class Holds:
    """The open holds, their expiry order, and how many each component has."""

    def __init__(self) -> None:
        self.open: dict[str, Hold] = {}
        self.by_component: dict[str, int] = {}
        self._expiry: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self.open)

    def __iter__(self) -> Iterator[Hold]:
        return iter(self.open.values())

    def get(self, hold_id: str) -> Hold | None:
        return self.open.get(hold_id)

    def add(self, hold: Hold) -> None:
        """Open `hold`: its charges count as reserved on their counters until it is released."""
        for c in hold.charges:
            c.counter.reserved_nanos += c.nanos
            c.counter.reserved_tokens += c.tokens
        self.open[hold.id] = hold
        component = hold.estimate.component
        self.by_component[component] = self.by_component.get(component, 0) + 1
        heapq.heappush(self._expiry, (hold.expires_us, hold.id))

    def release(self, hold_id: str) -> Hold | None:
        """Close the hold (committed, released or expired); None when it was not open."""
        hold = self.open.pop(hold_id, None)
        if hold is not None:
            for c in hold.charges:
                c.counter.reserved_nanos -= c.nanos
                c.counter.reserved_tokens -= c.tokens
            component = hold.estimate.component
            left = self.by_component[component] - 1
            if left:
                self.by_component[component] = left
            else:
                del self.by_component[component]
        return hold

    def expire(self, now_us: int) -> list[Hold]:
        """Release every hold whose time is up; the holds released."""
        gone = []
        while self._expiry and self._expiry[0][0] <= now_us:
            _, hold_id = heapq.heappop(self._expiry)
            hold = self.open.get(hold_id)
            if hold is not None and hold.expires_us <= now_us:
                gone.append(self.release(hold_id))
        return gone  # type: ignore[return-value]

    def move(self, counters: Iterable[Counter], successor: Callable[[Hold], Counter | None]) -> None:
        """Move every charge on `counters` (a budget replaced or deleted) to `successor(hold)`, or drop it
        when that is None."""
        moving = {id(c) for c in counters}
        for hold in self.open.values():
            kept = []
            for charge in hold.charges:
                if id(charge.counter) in moving:
                    charge.counter.reserved_nanos -= charge.nanos
                    charge.counter.reserved_tokens -= charge.tokens
                    target = successor(hold)
                    if target is None:
                        continue
                    target.reserved_nanos += charge.nanos
                    target.reserved_tokens += charge.tokens
                    charge = charge._replace(counter=target)
                kept.append(charge)
            hold.charges = kept
