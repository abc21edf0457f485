"""Budgets in memory: scope matching, window counters, states and the rule of fitting.

Pure data and arithmetic, owned by the allocator actor; nothing here awaits.
Money is integer nano-dollars; tokens are input + output + cache read + cache write.
"""

from dataclasses import dataclass, field
from typing import Callable, Iterator

from budgetd.model import (
    DIMS,
    NANOS_PER_USD,
    BudgetSpec,
    BudgetState,
    canonical_tier,
    format_usd,
    nanos,
    usd,
)
from budgetd.periods import Window, from_us, window

STAR = "*"


class Counter:
    """Spend and holds of one budget, for one key, in one window."""

    __slots__ = ("spent_nanos", "spent_tokens", "reserved_nanos", "reserved_tokens")

    def __init__(self, spent_nanos: int = 0, spent_tokens: int = 0) -> None:
        self.spent_nanos = spent_nanos
        self.spent_tokens = spent_tokens
        self.reserved_nanos = 0
        self.reserved_tokens = 0


#: What a request looks like to a scope: dim -> value (model is the resolved price key).
Attrs = dict[str, str | None]


@dataclass
class Budget:
    spec: BudgetSpec
    limit_nanos: int | None
    exact: tuple[tuple[str, str], ...]
    star: tuple[str, ...]
    counters: dict[tuple[tuple[str, ...], int | None], Counter] = field(default_factory=dict)
    _window: Window = Window(None, None)

    @classmethod
    def of(cls, spec: BudgetSpec, resolve_model: Callable[[str], str]) -> "Budget":
        """`resolve_model` maps a scope's model name to the price key records are stored under."""
        scope = {d: getattr(spec.scope, d) for d in DIMS if getattr(spec.scope, d) is not None}
        if scope.get("model") not in (None, STAR):
            scope["model"] = resolve_model(scope["model"])
        if scope.get("tier") not in (None, STAR):
            scope["tier"] = canonical_tier(scope["tier"]) or scope["tier"]
        return cls(
            spec=spec,
            limit_nanos=None if spec.limit_usd is None else nanos(spec.limit_usd),
            exact=tuple((d, v) for d, v in scope.items() if v != STAR),
            star=tuple(d for d, v in scope.items() if v == STAR),
        )

    def __post_init__(self) -> None:
        spec = self.spec
        self.name = spec.name
        self.limit_tokens = spec.limit_tokens
        below_one = [t for t in spec.thresholds if t < 1.0]
        self._warn_at = max(below_one) if below_one else None
        self._key_dicts: dict[tuple[str, ...], dict[str, str]] = {}

    def key_of(self, attrs: Attrs) -> tuple[str, ...] | None:
        """The counter key of a matching request, or None when the budget does not cover it."""
        if not self.spec.enabled:
            return None
        for dim, value in self.exact:
            if attrs.get(dim) != value:
                return None
        if not self.star:
            return ()
        key = []
        for dim in self.star:
            actual = attrs.get(dim)
            if actual is None:
                return None  # "*" keys by the value; a request without one is not covered
            key.append(actual)
        return tuple(key)

    def window_at(self, ts_us: int) -> Window:
        """The window holding the instant `ts_us` (microseconds since the epoch)."""
        cached = self._window
        if cached.start_us is not None and cached.contains_us(ts_us):
            return cached
        found = window(self.spec.period, self.spec.timezone, from_us(ts_us))
        if found.start_us is not None:
            self._window = found
        return found

    def counter(self, key: tuple[str, ...], win: Window) -> Counter:
        slot = (key, win.start_us)
        counter = self.counters.get(slot)
        if counter is None:
            counter = self.counters[slot] = Counter()
        return counter

    def peek(self, key: tuple[str, ...], win: Window) -> Counter:
        """The counter if it exists, else an empty one that is not kept (for what-ifs)."""
        return self.counters.get((key, win.start_us)) or Counter()

    def state(self, key: tuple[str, ...], win: Window, counter: Counter) -> BudgetState:
        fraction = self.used_fraction(counter.spent_nanos, counter.spent_tokens)
        key_dict = self._key_dicts.get(key)
        if key_dict is None:
            key_dict = self._key_dicts[key] = dict(zip(self.star, key))
        return BudgetState(
            budget=self.name,
            key=key_dict,
            window_start=win.start,
            window_end=win.end,
            spent_usd=counter.spent_nanos / NANOS_PER_USD,
            spent_tokens=counter.spent_tokens,
            reserved_usd=counter.reserved_nanos / NANOS_PER_USD,
            reserved_tokens=counter.reserved_tokens,
            limit_usd=self.spec.limit_usd,
            limit_tokens=self.limit_tokens,
            used_fraction=round(fraction, 6),
            status="exceeded" if fraction >= 1.0 else (
                "warning" if self._warn_at is not None and fraction >= self._warn_at else "ok"),
            policy=self.spec.policy,
        )

    def used_fraction(self, spent_nanos: int, spent_tokens: int) -> float:
        fraction = 0.0
        if self.limit_nanos is not None:
            fraction = _fraction(spent_nanos, self.limit_nanos)
        if self.limit_tokens is not None:
            fraction = max(fraction, _fraction(spent_tokens, self.limit_tokens))
        return fraction

    def fits(self, counter: Counter, nanos: int, tokens: int) -> bool:
        if self.limit_nanos is not None and counter.spent_nanos + counter.reserved_nanos + nanos > self.limit_nanos:
            return False
        if self.limit_tokens is not None and counter.spent_tokens + counter.reserved_tokens + tokens > self.limit_tokens:
            return False
        return True

    def current_states(self, now_us: int) -> Iterator[BudgetState]:
        win = self.window_at(now_us)
        keys = [key for (key, w) in self.counters if w == win.start_us]
        if not keys and not self.star:
            keys = [()]
        for key in sorted(keys):
            yield self.state(key, win, self.counter(key, win))

    def prune(self, now_us: int, keep_us: int) -> None:
        """Forget counters of windows that ended long ago and hold nothing."""
        if self.spec.period == "total":
            return
        horizon = now_us - keep_us
        current_start = self.window_at(now_us).start_us
        ends: dict[int, int] = {}  # window start -> its end (a window starts before it ends: few to compute)

        def ended_before_horizon(start: int) -> bool:
            if start >= horizon or start == current_start:
                return False
            if start not in ends:
                ends[start] = window(self.spec.period, self.spec.timezone, from_us(start)).end_us  # type: ignore
            return ends[start] < horizon

        for slot in [s for s, c in self.counters.items()
                     if s[1] is not None and ended_before_horizon(s[1])
                     and not c.reserved_nanos and not c.reserved_tokens]:
            del self.counters[slot]


def _fraction(spent: int, limit: int) -> float:
    if limit == 0:
        return 0.0 if spent == 0 else float("inf")
    return spent / limit


def describe_key(budget: Budget, key: tuple[str, ...]) -> str:
    return ", ".join(f"{d}={v}" for d, v in zip(budget.star, key))


def money(nanos_amount: int) -> str:
    return format_usd(usd(nanos_amount))
