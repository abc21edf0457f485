"""Open reservations: what each holds on which counters, and when it expires (by the daemon's clock)."""

import heapq
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from actors.allocator.budgets import Counter
from budgetd.model import Estimate


class Charge(NamedTuple):
    """What one write or hold put on one counter (a hold's charge also names its budget and key, so it can
    follow the budget into its next window)."""

    counter: Counter
    nanos: int
    tokens: int
    budget: Any = None
    key: tuple[str, ...] = ()


@dataclass
class Hold:
    id: str
    charges: list[Charge]
    expires_us: int  # by the daemon's clock: a hold rebuilt after a restart expires when it would have
    estimate: Estimate
    attrs: dict[str, str | None]  # what budget scopes match on
    cost_nanos: int  # what it holds on every budget that covers it
    tokens: int


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

    def drop(self, counters: Iterable[Counter]) -> None:
        """Take every charge on `counters` (a budget replaced or deleted) off its hold."""
        dropping = {id(c) for c in counters}
        for hold in self.open.values():
            kept = []
            for charge in hold.charges:
                if id(charge.counter) in dropping:
                    charge.counter.reserved_nanos -= charge.nanos
                    charge.counter.reserved_tokens -= charge.tokens
                else:
                    kept.append(charge)
            hold.charges = kept

    def charge(self, hold: Hold, counter: Counter, budget: Any, key: tuple[str, ...]) -> None:
        """Count an open hold on one more counter (a budget set after it was opened)."""
        counter.reserved_nanos += hold.cost_nanos
        counter.reserved_tokens += hold.tokens
        hold.charges.append(Charge(counter, hold.cost_nanos, hold.tokens, budget, key))

    def roll(self, current: Callable[[Charge], Counter]) -> None:
        """Move every charge whose counter is not `current(charge)` any more (its window ended) there: an
        open hold may still be spent, and what is spent is charged in the window it is spent in."""
        for hold in self.open.values():
            for i, charge in enumerate(hold.charges):
                if charge.budget is None:
                    continue
                counter = current(charge)
                if counter is not charge.counter:
                    charge.counter.reserved_nanos -= charge.nanos
                    charge.counter.reserved_tokens -= charge.tokens
                    counter.reserved_nanos += charge.nanos
                    counter.reserved_tokens += charge.tokens
                    hold.charges[i] = charge._replace(counter=counter)
