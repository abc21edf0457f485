"""`guard()`: reserve before an LLM call, commit what it used after it, release when it failed."""

import contextlib
from typing import Any, AsyncIterator, Iterator

import anyio

from budgetd.client._ops import LABELS, struct_from
from budgetd.model import Decision, Estimate, Recorded, Usage


class BudgetDenied(Exception):
    """Raised by `guard()` when the daemon denies the reservation; `decision` says why."""

    def __init__(self, decision: Decision) -> None:
        super().__init__("; ".join(decision.reasons) or "denied by budget")
        self.decision = decision


class Guard:
    """What `guard()` yields: the reservation's decision; report the actual usage with `used()`."""

    def __init__(self, estimate: Estimate, decision: Decision) -> None:
        self.estimate = estimate
        self.decision = decision
        self.usage: Usage | None = None
        self.recorded: Recorded | None = None

    @property
    def reservation_id(self) -> str:
        return self.decision.reservation_id or ""

    def used(self, **fields: Any) -> None:
        """The call's actual usage (input_tokens, output_tokens, cache_read_tokens ...)."""
        base = {name: getattr(self.estimate, name) for name in LABELS}
        base.update(fields)
        self.usage = struct_from(None, {k: v for k, v in base.items() if v is not None}, Usage)

    def final_usage(self) -> Usage:
        """What is committed: the reported usage, else (conservatively) the whole estimate."""
        if self.usage is None:
            e = self.estimate
            self.used(input_tokens=e.input_tokens, cache_read_tokens=e.cache_read_tokens or 0,
                      output_tokens=e.max_output_tokens or 0)
        return self.usage  # type: ignore[return-value]


class SyncGuard:
    """`guard()` of SyncBudgetClient."""

    @contextlib.contextmanager
    def guard(self, estimate: Estimate | None = None, *, ttl_s: float | None = None,
              **fields: Any) -> Iterator[Guard]:
        """Reserve on enter (raising BudgetDenied), commit the actual usage on exit, release on error."""
        est = struct_from(estimate, fields, Estimate)
        decision = self.reserve(est, ttl_s=ttl_s)  # type: ignore[attr-defined]
        if not decision.allowed:
            raise BudgetDenied(decision)
        g = Guard(est, decision)
        try:
            yield g
        except BaseException:
            self.release(g.reservation_id)  # type: ignore[attr-defined]
            raise
        g.recorded = self.commit(g.reservation_id, g.final_usage())  # type: ignore[attr-defined]


class AsyncGuard:
    """`guard()` of BudgetClient."""

    @contextlib.asynccontextmanager
    async def guard(self, estimate: Estimate | None = None, *, ttl_s: float | None = None,
                    **fields: Any) -> AsyncIterator[Guard]:
        """Reserve on enter (raising BudgetDenied), commit the actual usage on exit, release on error."""
        est = struct_from(estimate, fields, Estimate)
        decision = await self.reserve(est, ttl_s=ttl_s)  # type: ignore[attr-defined]
        if not decision.allowed:
            raise BudgetDenied(decision)
        g = Guard(est, decision)
        try:
            yield g
        except BaseException:
            with anyio.CancelScope(shield=True):  # a cancelled call must release its hold all the same
                await self.release(g.reservation_id)  # type: ignore[attr-defined]
            raise
        g.recorded = await self.commit(g.reservation_id, g.final_usage())  # type: ignore[attr-defined]
