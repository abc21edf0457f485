"""Where a budget's window is heading: burn rates over the last hour and the day before, and the
forecast of its end. Pure arithmetic on the allocator's state."""

from actors.allocator.budgets import Budget, Counter
from budgetd.model import NANOS_PER_USD, Forecast, usd
from budgetd.periods import HOUR_US, Window, from_us

_MIN_ELAPSED_US = 300_000_000  # a window's first minutes say little about its rate
_CENTURY_US = 100 * 365 * 86_400_000_000


def forecast(budget: Budget, key: tuple[str, ...], win: Window, counter: Counter, burn: "Burn | None",
             now_us: int) -> Forecast:
    """The window's end at the current burn rate: the last hour's spend once this process has watched
    for an hour, else the window's average so far."""
    if burn is not None and (now_us - burn.born >= HOUR_US or win.start_us is None):
        per_hour_nanos, per_hour_tokens = burn.last_hour_at(now_us)
        basis = "last_hour"
    elif win.start_us is not None:
        elapsed = max(now_us - win.start_us, _MIN_ELAPSED_US)
        per_hour_nanos = counter.spent_nanos * HOUR_US / elapsed
        per_hour_tokens = counter.spent_tokens * HOUR_US / elapsed
        basis = "window_average"
    else:
        per_hour_nanos = per_hour_tokens = 0
        basis = "last_hour"
    projected_nanos = projected_tokens = None
    if win.end_us is not None:
        hours_left = max(0, win.end_us - now_us) / HOUR_US
        projected_nanos = counter.spent_nanos + round(per_hour_nanos * hours_left)
        projected_tokens = counter.spent_tokens + round(per_hour_tokens * hours_left)
    reached = [
        now_us + int((limit - spent) / rate * HOUR_US)
        for limit, spent, rate in ((budget.limit_nanos, counter.spent_nanos, per_hour_nanos),
                                   (budget.limit_tokens, counter.spent_tokens, per_hour_tokens))
        if limit is not None and spent < limit and rate > 0
    ]
    exhausted = min(reached) if reached else None
    if exhausted is not None and (win.end_us is not None and exhausted >= win.end_us
                                  or exhausted - now_us > _CENTURY_US):  # a `total` budget at a trickle
        exhausted = None
    return Forecast(
        budget=budget.name, key=dict(zip(budget.star, key)), window_end=win.end,
        spent_usd=usd(counter.spent_nanos), spent_tokens=counter.spent_tokens,
        limit_usd=budget.spec.limit_usd, limit_tokens=budget.limit_tokens,
        rate_usd_per_hour=round(per_hour_nanos / NANOS_PER_USD, 9), rate_tokens_per_hour=round(per_hour_tokens, 3),
        rate_basis=basis,  # type: ignore[arg-type]
        projected_usd=None if projected_nanos is None else usd(projected_nanos),
        projected_tokens=projected_tokens,
        exhausted_at=None if exhausted is None else from_us(exhausted),
    )


class Burn:
    """Spend of one budget key in five-minute buckets over 25 hours, with running sums of the
    last hour and of the 24 hours before it, so the burn-rate rules cost O(1) per record."""

    BUCKET_US = 300_000_000
    HOUR = 12  # buckets
    KEEP = 25 * 12

    __slots__ = ("buckets", "since", "last_hour", "before", "_head", "born")

    def stale(self, now_us: int) -> bool:
        """Nothing in the last 25 hours: the rules have nothing to read."""
        return self._head <= now_us // self.BUCKET_US - self.KEEP

    def __init__(self, slot: int, born: int) -> None:
        self.born = born  # when this process started counting (it sees no records from before)
        self.buckets: dict[int, list[int]] = {}  # slot -> [nanos, tokens]
        self.since = slot
        self.last_hour = [0, 0]
        self.before = [0, 0]
        self._head = slot

    def add(self, ts_us: int, nanos: int, tokens: int) -> int:
        slot = ts_us // self.BUCKET_US
        self.since = min(self.since, slot)
        if slot > self._head:
            self._advance(slot)
        if slot <= self._head - self.KEEP:
            return slot  # older than anything the rules look at
        bucket = self.buckets.setdefault(slot, [0, 0])
        bucket[0] += nanos
        bucket[1] += tokens
        window = self.last_hour if slot > self._head - self.HOUR else self.before
        window[0] += nanos
        window[1] += tokens
        return slot

    def _advance(self, head: int) -> None:
        """Move the head to `head`: buckets leave the last hour, and old ones leave the day."""
        for slot, (n, t) in list(self.buckets.items()):
            was_last = slot > self._head - self.HOUR
            is_last = slot > head - self.HOUR
            kept = slot > head - self.KEEP
            if was_last and not is_last:
                self.last_hour[0] -= n
                self.last_hour[1] -= t
                if kept:
                    self.before[0] += n
                    self.before[1] += t
            elif not was_last and not kept:
                self.before[0] -= n
                self.before[1] -= t
            if not kept:
                del self.buckets[slot]
        self._head = head

    def last_hour_at(self, now_us: int) -> tuple[int, int]:
        """Spend (nanos, tokens) of the hour before `now_us`."""
        slot = now_us // self.BUCKET_US
        if slot > self._head:
            self._advance(slot)
        return self.last_hour[0], self.last_hour[1]

    def day_of_history(self) -> bool:
        return self.since <= self._head - 24 * self.HOUR
