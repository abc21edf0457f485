"""Budgets in memory: scope matching, window counters, states and the rule of fitting.

Pure data and arithmetic, owned by the allocator actor; nothing here awaits.
Money is integer nano-dollars; tokens are input + output + cache read + cache write.
"""

import heapq
from dataclasses import dataclass, field
from typing import Callable

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
from budgetd.errors import OpError
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


_MAX_KEPT_STATES = 10_000  # per budget; past it they are built afresh


@dataclass
class Budget:
    spec: BudgetSpec
    limit_nanos: int | None
    exact: tuple[tuple[str, str], ...]
    star: tuple[str, ...]
    counters: dict[tuple[tuple[str, ...], int | None], Counter] = field(default_factory=dict)
    max_counters: int = 100_000  # keys kept at once (a "*" over context ids could grow without end)
    _window: Window = Window(None, None)

    @classmethod
    def of(cls, spec: BudgetSpec, resolve_model: Callable[[str], str], max_counters: int = 100_000) -> "Budget":
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
            max_counters=max_counters,
        )

    def __post_init__(self) -> None:
        spec = self.spec
        self.name = spec.name
        self.limit_tokens = spec.limit_tokens
        below_one = [t for t in spec.thresholds if t < 1.0]
        self._warn_at = max(below_one) if below_one else None
        self._key_dicts: dict[tuple[str, ...], dict[str, str]] = {}
        # (key, window start) -> (the counter's sums, its BudgetState): see `state`
        self._states: dict[tuple[tuple[str, ...], int | None], tuple[tuple[int, int, int, int], BudgetState]] = {}

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
        if cached.start_us is None:
            if self.spec.period == "total":
                return cached  # one window, for ever
        elif cached.contains_us(ts_us):
            return cached
        found = self._window = window(self.spec.period, self.spec.timezone, from_us(ts_us))
        return found

    def counter(self, key: tuple[str, ...], win: Window, capped: bool = True) -> Counter:
        """The counter of `key` in `win`, made when new: `busy` when the budget keeps as many keys as it may
        (`capped`; state rebuilt from the ledger is never refused)."""
        slot = (key, win.start_us)
        counter = self.counters.get(slot)
        if counter is None:
            if capped and len(self.counters) >= self.max_counters:
                raise OpError("busy", f"budget {self.name} keeps {len(self.counters):,} keys, the most "
                              "admission.max_counters_per_budget allows; they are forgotten two days after "
                              "their window ends, or narrow the budget's \"*\" scope", "$.budget")
            counter = self.counters[slot] = Counter()
        return counter

    def peek(self, key: tuple[str, ...], win: Window) -> Counter:
        """The counter if it exists, else an empty one that is not kept (for what-ifs)."""
        return self.counters.get((key, win.start_us)) or Counter()

    def state(self, key: tuple[str, ...], win: Window, counter: Counter) -> BudgetState:
        """The counter's state; kept until its sums change, so a stream of checks builds it once."""
        at = (key, win.start_us)
        sums = (counter.spent_nanos, counter.spent_tokens, counter.reserved_nanos, counter.reserved_tokens)
        kept = self._states.get(at)
        if kept is not None and kept[0] == sums:
            return kept[1]
        fraction = self.used_fraction(counter.spent_nanos, counter.spent_tokens)
        key_dict = self._key_dicts.get(key)
        if key_dict is None:
            key_dict = self._key_dicts[key] = dict(zip(self.star, key))
        state = BudgetState(
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
        if len(self._states) >= _MAX_KEPT_STATES:
            self._states.clear()
        self._states[at] = (sums, state)
        return state

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

    def current_keys(self, now_us: int) -> tuple[Window, list[tuple[str, ...]]]:
        win = self.window_at(now_us)
        keys = [key for (key, w) in self.counters if w == win.start_us]
        if not keys and not self.star:
            keys = [()]
        return win, keys

    def current_states(self, now_us: int, limit: int | None = None,
                       after: tuple[str, ...] | None = None) -> tuple[list[BudgetState], tuple[str, ...] | None]:
        """The states of the current window by key, `limit` of them after `after`; and the key to go on
        after, when there are more."""
        win, keys = self.current_keys(now_us)
        keys = sorted(k for k in keys if after is None or k > after)
        page = keys if limit is None else keys[:limit]
        more = page[-1] if limit is not None and len(keys) > limit else None
        return [self.state(key, win, self.peek(key, win)) for key in page], more

    def busiest(self, now_us: int, limit: int) -> tuple[Window, list[tuple[str, ...]], int]:
        """The `limit` most used keys of the current window (by key when equal), and how many are left out."""
        win, keys = self.current_keys(now_us)
        if len(keys) <= limit:
            return win, sorted(keys), 0
        def used(key: tuple[str, ...]) -> float:
            c = self.peek(key, win)
            return self.used_fraction(c.spent_nanos + c.reserved_nanos, c.spent_tokens + c.reserved_tokens)
        return win, sorted(heapq.nlargest(limit, keys, key=used)), len(keys) - limit

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


class Budgets(dict[str, Budget]):
    """The allocator's budgets by name, indexed by scope: `matching(attrs)` looks only at the budgets
    whose first exact scope value is the request's (and at those with none), so a check costs the
    budgets that may match, not every budget defined."""

    def __init__(self, budgets: dict[str, Budget] | None = None) -> None:
        super().__init__()
        self._by_value: dict[tuple[str, str], list[Budget]] = {}
        self._unscoped: list[Budget] = []  # global budgets and those keyed by "*" only
        self._order: dict[str, int] = {}  # the order budgets were defined in (a replaced one keeps its place)
        self._defined = 0
        self.update(budgets or {})

    # Each change updates the index for the budget it changes: setting the 10,000th budget costs what
    # setting the first did.
    def __setitem__(self, name: str, budget: Budget) -> None:
        old = self.get(name)
        super().__setitem__(name, budget)
        if old is not None:
            self._unindex(old)
        else:
            self._order[name] = self._defined
            self._defined += 1
        self._slot(budget).append(budget)

    def __delitem__(self, name: str) -> None:
        old = self[name]
        super().__delitem__(name)
        self._unindex(old)
        del self._order[name]

    def pop(self, name: str, *default: Budget | None) -> Budget | None:  # type: ignore[override]
        if name not in self:
            return super().pop(name, *default)
        found = self[name]
        del self[name]
        return found

    def update(self, *args: dict, **kwargs: Budget) -> None:  # type: ignore[override]
        for name, budget in dict(*args, **kwargs).items():
            self[name] = budget

    def _slot(self, budget: Budget) -> list[Budget]:
        return self._by_value.setdefault(budget.exact[0], []) if budget.exact else self._unscoped

    def _unindex(self, budget: Budget) -> None:
        slot = self._slot(budget)
        slot[:] = [b for b in slot if b is not budget]
        if budget.exact and not slot:
            del self._by_value[budget.exact[0]]

    def matching(self, attrs: Attrs) -> list[tuple[Budget, tuple[str, ...]]]:
        """Every budget that covers a request with these attributes, with its counter key, in the order
        the budgets were defined."""
        found = self.covering(attrs)
        if len(found) > 1:
            found.sort(key=lambda pair: self._order[pair[0].name])
        return found

    def covering(self, attrs: Attrs) -> list[tuple[Budget, tuple[str, ...]]]:
        """`matching` in no particular order (for a yes or no over all of them)."""
        found = [(b, key) for b in self._unscoped if (key := b.key_of(attrs)) is not None]
        for dim in DIMS:
            value = attrs.get(dim)
            if value is None:
                continue
            for b in self._by_value.get((dim, value), ()):
                key = b.key_of(attrs)
                if key is not None:
                    found.append((b, key))
        return found
