"""The allocator: budgets, window counters, holds, admission and routing.

Decisions are pure CPU on the allocator's own state: nothing awaits between
reading a counter and updating it, so check-then-reserve is atomic without
locks. Every write passes through here on its way to the ledger: the
allocator prices it, charges every matching budget, and hands the row to the
ledger, which answers the client once the row is committed (or tells the
allocator to undo the charge when it is not).

The allocator awaits the ledger only to change budgets (rare, admin ops):
while it does, its mailbox holds every other message, so a budget's counters
are loaded from exactly the writes sent before it and charged with every
write after it.
"""

import collections
import datetime as dt
import heapq
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec

from actors.budgets import ACTION_RANK, Attrs, Budget, Burn, Counter, describe_key, forecast, money
from actors.bus import Publish
from actors.ledger import (
    DeleteBudget,
    LoadBudgets,
    SaveBudget,
    SumWindows,
    Undo,
    UsageRow,
    WindowSum,
    WriteUsage,
)
from actors.prices import GetBook, NewBook
from actors.runtime import Actor, Ref, ReplyTo
from budgetd.clock import SYSTEM, Clock
from budgetd.model import (
    FUNCTIONAL_CAPABILITIES,
    TIER_RANK,
    Alternative,
    BudgetInvalid,
    BudgetSpec,
    BudgetState,
    Decision,
    Estimate,
    Forecast,
    Need,
    PriceEntry,
    Suggestion,
    Usage,
    UsagePatch,
    canonical_tier,
    check_budget,
    nanos,
    usd,
)
from budgetd.periods import from_us, to_us
from budgetd.pricing import PriceBook, TierRules, UnpricedPolicy, price_call
from budgetd.protocol import BudgetGetResult, OpError, RouteResult

log = logging.getLogger("budgetd.allocator")
_json = msgspec.json.Encoder()
_spec_decoder = msgspec.json.Decoder(BudgetSpec)

#: Capabilities a suggested replacement must keep (caching, web search ... are nice to have).
RESERVE_KEYS_KEPT_S = 7 * 86400
MAX_REMEMBERED = 100_000


# -- messages ---------------------------------------------------------------------


class RecordUsage(msgspec.Struct, frozen=True):
    usage: Usage
    idempotency_key: str | None
    payload_hash: bytes | None
    reply: ReplyTo


class CheckMsg(msgspec.Struct, frozen=True):
    estimate: Estimate
    reply: ReplyTo


class ReserveMsg(msgspec.Struct, frozen=True):
    estimate: Estimate
    ttl_s: float | None
    idempotency_key: str | None
    payload_hash: bytes | None
    reply: ReplyTo


class CommitMsg(msgspec.Struct, frozen=True):
    reservation_id: str
    usage: UsagePatch
    idempotency_key: str
    payload_hash: bytes
    reply: ReplyTo


class ReleaseMsg(msgspec.Struct, frozen=True):
    reservation_id: str
    reply: ReplyTo


class BudgetSetMsg(msgspec.Struct, frozen=True):
    spec: BudgetSpec
    reply: ReplyTo


class BudgetGetMsg(msgspec.Struct, frozen=True):
    name: str
    reply: ReplyTo


class BudgetListMsg(msgspec.Struct, frozen=True):
    reply: ReplyTo


class BudgetDeleteMsg(msgspec.Struct, frozen=True):
    name: str
    reply: ReplyTo


class StatesMsg(msgspec.Struct, frozen=True):
    """Every budget's states in its current window (for `status`)."""

    reply: ReplyTo


class ForecastsMsg(msgspec.Struct, frozen=True):
    """Answer: a Forecast for every budget with a limit, in its current window."""

    reply: ReplyTo


class CountHolds(msgspec.Struct, frozen=True):
    reply: ReplyTo


class RouteMsg(msgspec.Struct, frozen=True):
    estimate: Estimate
    candidates: list[str] | None
    need: Need | None
    reply: ReplyTo


@dataclass(frozen=True)
class AdmissionRules:
    default_output_tokens: int = 4096
    default_ttl_s: float = 300.0
    max_reservation_usd: float | None = None


# -- holds ------------------------------------------------------------------------

Charge = tuple[Counter, int, int]  # counter, nanos, tokens


@dataclass
class Hold:
    id: str
    charges: list[Charge]
    expires: float  # monotonic
    estimate: Estimate


@dataclass
class Assessment:
    """An estimate weighed against every matching budget (nothing held yet)."""

    action: str
    reasons: list[str]
    matches: list[tuple[Budget, tuple[str, ...], Any, Counter]]
    cost_nanos: int
    tokens: int
    entry: PriceEntry | None
    attrs: Attrs


class Allocator(Actor):
    name = "allocator"

    def __init__(
        self,
        ledger: Ref,
        prices: Ref,
        tiers: TierRules,
        unpriced: UnpricedPolicy,
        admission: AdmissionRules = AdmissionRules(),
        config_budgets: list[BudgetSpec] | None = None,
        timeout: float = 10.0,
        bus: Ref | None = None,
        anomaly_factor: float = 3.0,
        clock: Clock = SYSTEM,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.bus = bus
        self.anomaly_factor = anomaly_factor
        # Recent spend per (budget, key), for the burn-rate rules.
        self._burn: dict[tuple[str, tuple[str, ...]], Burn] = {}
        self._announced: set[tuple] = set()
        self.ledger = ledger
        self.prices = prices
        self.book = PriceBook([])
        self.tiers = tiers
        self.unpriced = unpriced
        self.admission = admission
        self.config_budgets = list(config_budgets or [])
        self.timeout = timeout
        self.budgets: dict[str, Budget] = {}
        self.holds: dict[str, Hold] = {}
        self._expiry: list[tuple[float, str]] = []
        self._reserve_keys: collections.OrderedDict[str, tuple[bytes | None, Decision, float]] = (
            collections.OrderedDict()
        )
        self._committed: collections.OrderedDict[str, tuple[str, Usage]] = collections.OrderedDict()
        self._unpriced_seen: dict[str, dt.date] = {}
        self._chat: list[PriceEntry] | None = None

    def chat_models(self) -> list[PriceEntry]:
        if self._chat is None:
            self._chat = self.book.chat_models()
        return self._chat

    # -- life ---------------------------------------------------------------------

    async def started(self) -> None:
        self.book = await self.prices.ask(lambda reply: GetBook(reply=reply), self.timeout)
        rows = await self.ledger.ask(lambda reply: LoadBudgets(reply=reply), self.timeout)
        specs = {spec.name: spec for spec in (_spec_decoder.decode(raw) for raw, _origin in rows)}
        for spec in self.config_budgets:
            if specs.get(spec.name) != spec:
                await self._save(spec, "config")
            specs[spec.name] = spec
        budgets = {name: Budget.of(spec, self._model_key) for name, spec in specs.items()}
        await self._load_counters(list(budgets.values()))
        self.budgets = budgets

    async def run(self, mailbox: anyio.abc.ObjectReceiveStream[Any]) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._tick)
            await super().run(mailbox)
            tg.cancel_scope.cancel()

    async def _tick(self) -> None:
        """Expire holds even when nothing else happens, and forget old windows."""
        while True:
            await anyio.sleep(1.0)
            self._expire(time.monotonic())
            now = self.clock.now_us()
            for budget in self.budgets.values():
                budget.prune(now, 2 * 86_400_000_000)
            for slot in [k for k, burn in self._burn.items() if burn.stale(now)]:
                del self._burn[slot]

    async def _save(self, spec: BudgetSpec, origin: str) -> None:
        await self.ledger.ask(
            lambda reply: SaveBudget(spec=_json.encode(spec), name=spec.name, origin=origin, reply=reply),
            self.timeout,
        )

    async def _load_counters(self, budgets: list[Budget]) -> None:
        """Counters of each budget's current window, from the ledger's sums."""
        now = self.clock.now_us()
        sums = []
        for budget in budgets:
            win = budget.window_at(now)
            sums.append(WindowSum(budget=budget.name, exact=budget.exact, star=budget.star,
                                  start=win.start_us, end=win.end_us))
        if not sums:
            return
        found = await self.ledger.ask(lambda reply: SumWindows(sums=sums, reply=reply), self.timeout)
        for budget in budgets:
            win = budget.window_at(now)
            for key, spent, tokens in found.get(budget.name, ()):
                counter = budget.counter(tuple(key), win)
                counter.spent_nanos += spent
                counter.spent_tokens += tokens

    def _model_key(self, name: str) -> str:
        resolved = self.book.resolve(name)
        return name if resolved is None else resolved.entry.model

    # -- dispatch -----------------------------------------------------------------

    async def handle(self, message: Any) -> None:
        self._expire(time.monotonic())
        kind = type(message)
        if kind is RecordUsage:
            self._record(message)
        elif kind is ReserveMsg:
            self._reserve(message)
        elif kind is CheckMsg:
            message.reply.set(self._check(message.estimate))
        elif kind is CommitMsg:
            self._commit(message)
        elif kind is ReleaseMsg:
            message.reply.set(self._release(message.reservation_id))
        elif kind is Undo:
            self._undo(message.charges)
        elif kind is StatesMsg:
            message.reply.set(self._states())
        elif kind is ForecastsMsg:
            message.reply.set(self._forecasts())
        elif kind is CountHolds:
            message.reply.set(len(self.holds))
        elif kind is RouteMsg:
            message.reply.set(self._route(message))
        elif kind is BudgetSetMsg:
            message.reply.set(await self._budget_set(message.spec))
        elif kind is BudgetGetMsg:
            budget = self._budget(message.name)
            states = list(budget.current_states(self.clock.now_us()))
            message.reply.set(BudgetGetResult(budget=budget.spec, states=states))
        elif kind is BudgetListMsg:
            message.reply.set([b.spec for _, b in sorted(self.budgets.items())])
        elif kind is BudgetDeleteMsg:
            message.reply.set(await self._budget_delete(message.name))
        elif kind is NewBook:
            self.book = message.book
            self._chat = None
        else:
            raise TypeError(f"the allocator does not handle {kind.__name__}")

    # -- budgets --------------------------------------------------------------------

    def _budget(self, name: str) -> Budget:
        budget = self.budgets.get(name)
        if budget is None:
            raise OpError("not_found", f"no budget named {name!r}; see `budget budgets list`", "$.name")
        return budget

    async def _budget_set(self, spec: BudgetSpec) -> BudgetSpec:
        try:
            check_budget(spec)
        except BudgetInvalid as exc:
            raise OpError("invalid", str(exc), exc.field) from None
        await self._save(spec, "api")
        budget = Budget.of(spec, self._model_key)
        await self._load_counters([budget])
        old = self.budgets.get(spec.name)
        if old is not None:
            self._move_holds(old, budget)
        self.budgets[spec.name] = budget
        return spec

    def _move_holds(self, old: Budget, new: Budget) -> None:
        """Holds on a replaced budget keep counting against its successor."""
        old_counters = {id(c): c for c in old.counters.values()}
        for hold in self.holds.values():
            for i, (counter, held_nanos, held_tokens) in enumerate(hold.charges):
                if id(counter) in old_counters:
                    counter.reserved_nanos -= held_nanos
                    counter.reserved_tokens -= held_tokens
                    attrs = self._estimate_attrs(hold.estimate)[0]
                    key = new.key_of(attrs)
                    if key is None:
                        hold.charges[i] = (Counter(), 0, 0)
                        continue
                    replacement = new.counter(key, new.window_at(self.clock.now_us()))
                    replacement.reserved_nanos += held_nanos
                    replacement.reserved_tokens += held_tokens
                    hold.charges[i] = (replacement, held_nanos, held_tokens)

    async def _budget_delete(self, name: str) -> bool:
        deleted = await self.ledger.ask(lambda reply: DeleteBudget(name=name, reply=reply), self.timeout)
        budget = self.budgets.pop(name, None)
        if budget is not None:
            counters = {id(c) for c in budget.counters.values()}
            for hold in self.holds.values():
                hold.charges = [c for c in hold.charges if id(c[0]) not in counters]
        return bool(deleted) or budget is not None

    def _states(self) -> list[BudgetState]:
        now = self.clock.now_us()
        return [state for _, b in sorted(self.budgets.items()) for state in b.current_states(now)]

    def _forecasts(self) -> list[Forecast]:
        now = self.clock.now_us()
        out = []
        for name, budget in sorted(self.budgets.items()):
            if (budget.limit_nanos is None and budget.limit_tokens is None) or not budget.spec.enabled:
                continue
            win = budget.window_at(now)
            keys = sorted(key for (key, start) in budget.counters if start == win.start_us)
            if not keys and not budget.star:
                keys = [()]
            for key in keys:
                out.append(forecast(budget, key, win, budget.peek(key, win), self._burn.get((name, key)), now))
        return out

    # -- admission ------------------------------------------------------------------

    def _estimate_attrs(self, est: Estimate) -> tuple[Attrs, PriceEntry | None, int, int, int]:
        """Attributes, price entry, estimated cost and tokens of an estimate."""
        resolved = self.book.resolve(est.model, est.provider)
        entry = resolved.entry if resolved is not None else None
        max_out = est.max_output_tokens
        if max_out is None:
            model_max = entry.max_output_tokens if entry is not None else None
            max_out = min(model_max or self.admission.default_output_tokens, self.admission.default_output_tokens)
        cache_read = est.cache_read_tokens or 0
        priced = price_call(self.book, self.unpriced, self.tiers, est.model, est.provider, est.tier,
                            est.input_tokens, max_out, cache_read, 0)
        attrs: Attrs = {
            "component": est.component, "model": priced.model, "provider": priced.provider,
            "tier": priced.tier, "context_id": est.context_id, "task_type": est.task_type,
        }
        return attrs, entry, priced.cost_nanos, est.input_tokens + max_out + cache_read, max_out

    def _assess(self, est: Estimate, for_hold: bool = False) -> Assessment:
        attrs, entry, cost, tokens, _ = self._estimate_attrs(est)
        return self._weigh(est, attrs, entry, cost, tokens, for_hold)

    def _weigh(self, est: Estimate, attrs: Attrs, entry: PriceEntry | None, cost: int, tokens: int,
               for_hold: bool) -> Assessment:
        now = self.clock.now_us()
        action = "allow"
        reasons: list[str] = []
        matches = []
        if entry is None and self.unpriced.mode == "deny":
            action = "deny"
            reasons.append(f"model {est.model!r} has no price and pricing.unknown_model is 'deny'")
        cap = self.admission.max_reservation_usd
        if for_hold and cap is not None and cost > nanos(cap):
            action = "deny"
            reasons.append(f"estimate {money(cost)} is above admission.max_reservation_usd ({money(nanos(cap))})")
        for budget in self.budgets.values():
            key = budget.key_of(attrs)
            if key is None:
                continue
            win = budget.window_at(now)
            counter = budget.counter(key, win) if for_hold else budget.peek(key, win)
            matches.append((budget, key, win, counter))
            if budget.fits(counter, cost, tokens):
                continue
            verdict = self._over(budget, key, counter, cost, tokens, est.priority)
            reasons.append(verdict[1])
            if ACTION_RANK[verdict[0]] > ACTION_RANK[action]:
                action = verdict[0]
        return Assessment(action, reasons, matches, cost, tokens, entry, attrs)

    def _over(self, budget: Budget, key: tuple[str, ...], counter: Counter, cost: int, tokens: int,
              priority: int) -> tuple[str, str]:
        policy = budget.spec.policy
        where = f" ({describe_key(budget, key)})" if key else ""
        parts = []
        if budget.limit_nanos is not None and counter.spent_nanos + counter.reserved_nanos + cost > budget.limit_nanos:
            parts.append(f"{money(counter.spent_nanos)} spent + {money(counter.reserved_nanos)} reserved + "
                         f"{money(cost)} estimated > {money(budget.limit_nanos)}")
        limit_tokens = budget.spec.limit_tokens
        if limit_tokens is not None and counter.spent_tokens + counter.reserved_tokens + tokens > limit_tokens:
            parts.append(f"{counter.spent_tokens:,} + {counter.reserved_tokens:,} reserved + {tokens:,} estimated "
                         f"tokens > {limit_tokens:,}")
        text = f"budget {budget.name}{where}: {'; '.join(parts)} ({policy})"
        if policy == "ignore":
            return "allow", text
        if policy == "warn":
            return "warn", text
        if policy == "soft":
            return "downgrade", text
        if priority >= 10 and budget.spec.critical_bypass:
            return "warn", text + "; critical request bypasses the hard limit"
        return "deny", text

    def _verdict(self, est: Estimate, a: Assessment) -> tuple[str, Suggestion | None]:
        """The final action, with a suggestion where a cheaper capable model fits."""
        action = a.action
        suggestion = None
        if action in ("downgrade", "deny") and a.reasons:
            suggestion = self._suggest(est, a)
            if action == "downgrade" and suggestion is None:
                action = "warn"
                a.reasons.append("no cheaper model with the same capabilities fits; proceed with care")
        return action, suggestion

    def _decision(self, est: Estimate, a: Assessment, action: str | None = None,
                  suggestion: Suggestion | None = None, **hold: Any) -> Decision:
        """The Decision, with every matching budget's state as it is now."""
        if action is None:
            action, suggestion = self._verdict(est, a)
        return Decision(
            allowed=action != "deny",
            action=action,  # type: ignore[arg-type]
            estimated_cost_usd=usd(a.cost_nanos),
            estimated_tokens=a.tokens,
            reasons=a.reasons,
            budgets=[b.state(key, win, counter) for b, key, win, counter in a.matches],
            suggestion=suggestion,
            **hold,
        )

    def _check(self, est: Estimate) -> Decision:
        decision = self._decision(est, self._assess(est))
        self._announce(est, decision)
        return decision

    def _announce(self, est: Estimate, decision: Decision) -> None:
        """`budget.denied` for each hard budget that refused, `budget.critical_bypass` for each one passed."""
        if self.bus is None or decision.action not in ("deny", "warn") or est.priority < 10 and decision.allowed:
            return
        events = []
        for state in decision.budgets:
            if state.policy != "hard" or state.limit_usd is None and state.limit_tokens is None:
                continue
            over = [r for r in decision.reasons if r.startswith(f"budget {state.budget}")]
            if not over:
                continue
            kind = "budget.denied" if not decision.allowed else "budget.critical_bypass"
            if kind == "budget.critical_bypass" and "bypass" not in over[0]:
                continue
            events.append((kind, _budget_event(state, component=est.component, model=est.model,
                                               estimated_cost_usd=decision.estimated_cost_usd, reason=over[0])))
        if events:
            self._publish(events)

    def _reserve(self, message: ReserveMsg) -> None:
        key = message.idempotency_key
        if key is not None:
            remembered = self._reserve_keys.get(key)
            if remembered is not None:
                digest, decision, _ = remembered
                if digest != message.payload_hash:
                    raise OpError("idempotency_conflict",
                                  f"idempotency key {key!r} was used before for a different request",
                                  "$.idempotency_key")
                message.reply.set(msgspec.structs.replace(decision, duplicate=True))
                return
        est = message.estimate
        a = self._assess(est, for_hold=True)
        action, suggestion = self._verdict(est, a)
        if action == "deny":
            decision = self._decision(est, a, action, suggestion)
        else:
            ttl = message.ttl_s or self.admission.default_ttl_s
            hold_id = "r-" + secrets.token_hex(8)
            charges = []
            for _budget, _key, _win, counter in a.matches:
                counter.reserved_nanos += a.cost_nanos
                counter.reserved_tokens += a.tokens
                charges.append((counter, a.cost_nanos, a.tokens))
            expires = time.monotonic() + ttl
            self.holds[hold_id] = Hold(hold_id, charges, expires, est)
            heapq.heappush(self._expiry, (expires, hold_id))
            decision = self._decision(est, a, action, suggestion, reservation_id=hold_id,
                                      expires_at=self.clock.now() + dt.timedelta(seconds=ttl))
        self._announce(est, decision)
        if key is not None:
            self._remember(self._reserve_keys, key, (message.payload_hash, decision, self.clock.time()))
        message.reply.set(decision)

    def _release(self, reservation_id: str) -> bool:
        hold = self.holds.pop(reservation_id, None)
        if hold is None:
            return False
        for counter, held_nanos, held_tokens in hold.charges:
            counter.reserved_nanos -= held_nanos
            counter.reserved_tokens -= held_tokens
        return True

    def _expire(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            _, hold_id = heapq.heappop(self._expiry)
            hold = self.holds.get(hold_id)
            if hold is not None and hold.expires <= now:
                self._release(hold_id)

    def _commit(self, message: CommitMsg) -> None:
        rid = message.reservation_id
        hold = self.holds.get(rid)
        u = message.usage
        if hold is not None:
            self._release(rid)
            est = hold.estimate
            fields = {f: getattr(u, f) for f in u.__struct_fields__}
            for f in ("component", "model", "provider", "tier", "context_id", "task_type"):
                if fields[f] is None:
                    fields[f] = getattr(est, f)
            usage = Usage(**fields)
        elif rid in self._committed:
            first_key, usage = self._committed[rid]
            if first_key != message.idempotency_key:
                raise OpError("conflict", f"reservation {rid} was already committed; its usage is recorded",
                              "$.reservation_id")
            # The same commit again: the ledger answers with the first result (or a conflict
            # if the usage differs) and the charge is undone.
        elif u.component is None or u.model is None:
            raise OpError(
                "unknown_reservation",
                f"reservation {rid!r} is unknown (expired, released, or the daemon restarted); send the "
                "usage with its component and model and it is recorded as plain usage",
                "$.reservation_id",
            )
        else:
            usage = Usage(**{f: getattr(u, f) for f in u.__struct_fields__})
        self._remember(self._committed, rid, (message.idempotency_key, usage))
        self._charge_and_write(usage, message.idempotency_key, message.payload_hash, message.reply, rid)

    # -- recording --------------------------------------------------------------------

    def _record(self, message: RecordUsage) -> None:
        self._charge_and_write(message.usage, message.idempotency_key, message.payload_hash, message.reply, None)

    def _charge_and_write(self, u: Usage, key: str | None, digest: bytes | None, reply: ReplyTo,
                          reservation_id: str | None) -> None:
        priced = price_call(
            self.book, self.unpriced, self.tiers, u.model, u.provider, u.tier,
            u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens,
            None if u.cost_usd is None else nanos(u.cost_usd),
        )
        if not priced.priced:
            self._note_unpriced(u.model)
        ts_us = to_us(u.ts) if u.ts is not None else self.clock.now_us()
        charges: list[Charge] = []
        states: list[BudgetState] = []
        if self.budgets:
            attrs: Attrs = {
                "component": u.component, "model": priced.model, "provider": priced.provider,
                "tier": priced.tier, "context_id": u.context_id, "task_type": u.task_type,
            }
            tokens = u.input_tokens + u.output_tokens + u.cache_read_tokens + u.cache_write_tokens
            for budget in self.budgets.values():
                bkey = budget.key_of(attrs)
                if bkey is None:
                    continue
                win = budget.window_at(ts_us)
                counter = budget.counter(bkey, win)
                before = budget.used_fraction(counter.spent_nanos, counter.spent_tokens)
                counter.spent_nanos += priced.cost_nanos
                counter.spent_tokens += tokens
                charges.append((counter, priced.cost_nanos, tokens))
                state = budget.state(bkey, win, counter)
                states.append(state)
                self._crossings(budget, state, before)
                self._trend(budget, bkey, state, win, counter, ts_us, priced.cost_nanos, tokens)
        row = UsageRow(
            ts=ts_us, component=u.component, model=priced.model, provider=priced.provider,
            tier=priced.tier, context_id=u.context_id, task_type=u.task_type,
            input_tokens=u.input_tokens, output_tokens=u.output_tokens,
            cache_read_tokens=u.cache_read_tokens, cache_write_tokens=u.cache_write_tokens,
            cost_nanos=priced.cost_nanos, priced=priced.priced, price_version=priced.price_version,
            reservation_id=reservation_id, request_id=u.request_id,
            metadata=_json.encode(u.metadata).decode() if u.metadata else None,
            idempotency_key=key,
        )
        try:
            self.ledger.tell(WriteUsage(row=row, payload_hash=digest, reply=reply,
                                        charges=charges or None, undo=self.ref, budgets=states))
        except OpError:
            self._undo(charges)
            raise

    def _crossings(self, budget: Budget, state: BudgetState, before: float) -> None:
        """`budget.threshold` for every threshold this charge crossed, `budget.exceeded` at the limit."""
        after = state.used_fraction
        if after <= before or self.bus is None:
            return
        crossed = [t for t in budget.spec.thresholds if before < t <= after]
        events = [("budget.threshold", _budget_event(state, threshold=t)) for t in crossed]
        if before < 1.0 <= after:
            events.append(("budget.exceeded", _budget_event(state)))
        if events:
            self._publish(events)

    def _trend(self, budget: Budget, key: tuple[str, ...], state: BudgetState, win: Any, counter: Counter,
               ts_us: int, cost: int, tokens: int) -> None:
        """Burn-rate rules, on the spend of the last hour (by the records' own timestamps):
        `budget.projected_exhaustion` when that rate reaches the limit before the window ends,
        `budget.anomaly` when it is over `anomaly_factor` times the hourly average of the day before."""
        if self.bus is None or (budget.limit_nanos is None and budget.limit_tokens is None):
            return
        burn = self._burn.get((budget.name, key))
        if burn is None:
            burn = self._burn[(budget.name, key)] = Burn(ts_us // Burn.BUCKET_US, self.clock.now_us())
        slot = burn.add(ts_us, cost, tokens)
        use_dollars = budget.limit_nanos is not None
        rate = burn.last_hour[0] if use_dollars else burn.last_hour[1]  # per hour
        events = []
        if win.end_us is not None and state.used_fraction < 1.0 and rate > 0:
            limit = budget.limit_nanos if use_dollars else budget.limit_tokens
            now_spent = counter.spent_nanos if use_dollars else counter.spent_tokens
            hours_left = max(0.0, (win.end_us - ts_us) / 3_600_000_000)
            once = ("projected", budget.name, key, state.window_start)
            if now_spent + rate * hours_left > limit and once not in self._announced:  # type: ignore[operator]
                self._remember_announced(once)
                reach = ts_us + int((limit - now_spent) / rate * 3_600_000_000)  # type: ignore[operator]
                events.append(("budget.projected_exhaustion", _budget_event(
                    state, burn_per_hour=rate / 1e9 if use_dollars else rate,
                    projected_at=from_us(reach))))
        if burn.day_of_history():  # about a day of history to compare with
            average = (burn.before[0] if use_dollars else burn.before[1]) / 24
            once = ("anomaly", budget.name, key, slot // Burn.HOUR)
            if average > 0 and rate > self.anomaly_factor * average and once not in self._announced:
                self._remember_announced(once)
                events.append(("budget.anomaly", _budget_event(
                    state, last_hour=rate / 1e9 if use_dollars else rate,
                    hourly_average=average / 1e9 if use_dollars else average, factor=self.anomaly_factor,
                    hour=slot // Burn.HOUR)))
        if events:
            self._publish(events)

    def _remember_announced(self, once: tuple) -> None:
        """What the burn-rate rules announced, so each fires once per window (or hour) without a ledger trip;
        the alerter's dedupe keys stay the guarantee across restarts."""
        if len(self._announced) > MAX_REMEMBERED:
            self._announced.clear()
        self._announced.add(once)

    def _publish(self, events: list[tuple[str, Any]]) -> None:
        if self.bus is not None:
            try:
                self.bus.tell(Publish(events=events))
            except OpError:
                pass  # a full bus drops events, never decisions

    def _undo(self, charges: list[Charge]) -> None:
        for counter, spent_nanos, spent_tokens in charges:
            counter.spent_nanos -= spent_nanos
            counter.spent_tokens -= spent_tokens

    def _note_unpriced(self, model: str) -> None:
        today = self.clock.now().date()
        if self._unpriced_seen.get(model) != today:
            if len(self._unpriced_seen) > 10_000:
                self._unpriced_seen.clear()
            self._unpriced_seen[model] = today
            log.warning(
                "model %r has no price; charged by pricing.unknown_model=%s. Set one with `budget prices set`.",
                model, self.unpriced.mode,
            )
            self._publish([("price.unpriced_model", {"model": model, "policy": self.unpriced.mode,
                                                     "date": today.isoformat()})])

    @staticmethod
    def _remember(store: collections.OrderedDict, key: str, value: Any) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > MAX_REMEMBERED:
            store.popitem(last=False)

    # -- routing ------------------------------------------------------------------------

    def _route(self, message: RouteMsg) -> RouteResult:
        est = message.estimate
        need = message.need or Need()
        requested = self.book.resolve(est.model, est.provider)
        requested_tier = canonical_tier(est.tier) or (requested.entry.tier if requested else None) or "heavyweight"
        names = message.candidates
        if names is None:
            entries = self.chat_models()
        else:
            entries = []
            for name in names:
                found = self.book.resolve(name)
                if found is None:
                    raise OpError("invalid", f"candidate {name!r} has no price; route needs priced models",
                                  "$.candidates")
                entries.append(found.entry)
        ranked = self._rank(est, entries, need, requested_tier, requested.entry.model if requested else None)
        choice = next((r for r in ranked if r[1]), None)
        alternatives = [
            Alternative(model=e.model, tier=e.tier, estimated_cost_usd=usd(cost), fits=fits, why=why)
            for e, fits, cost, why, _ in ranked[:10]
        ]
        if choice is None:
            return RouteResult(choice=None, decision=None, alternatives=alternatives)
        entry = choice[0]
        decision = self._check(msgspec.structs.replace(est, model=entry.model, provider=entry.provider, tier=None))
        return RouteResult(choice=entry.model, decision=decision, alternatives=alternatives)

    def _rank(self, est: Estimate, entries: list[PriceEntry], need: Need, requested_tier: str,
              requested_model: str | None) -> list[tuple[PriceEntry, bool, int, str, tuple]]:
        max_rank = TIER_RANK.get(canonical_tier(need.max_tier) or "heavyweight", 2)
        wanted = set(need.capabilities)
        base_rank = TIER_RANK.get(requested_tier, 2)
        out = []
        seen: set[str] = set()
        for entry in entries:
            if entry.model in seen:
                continue
            seen.add(entry.model)
            if not wanted <= set(entry.capabilities):
                continue
            tier_rank = TIER_RANK.get(entry.tier or "heavyweight", 2)
            if tier_rank > max_rank:
                continue
            candidate = msgspec.structs.replace(est, model=entry.model, provider=entry.provider, tier=None)
            attrs, _, cost, tokens, max_out = self._estimate_attrs(candidate)
            context = est.input_tokens + (est.cache_read_tokens or 0) + max_out
            window = entry.max_input_tokens
            if window is not None and context > window:
                continue
            if need.min_context_tokens is not None and (window or 0) < need.min_context_tokens:
                continue
            assessment = self._weigh(candidate, attrs, entry, cost, tokens, False)
            fits = assessment.action != "deny" and assessment.action != "downgrade"
            if entry.model == requested_model:
                order = (0,)
                why = "the requested model" + ("" if fits else ": " + "; ".join(assessment.reasons))
            elif tier_rank == base_rank:
                order = (1, cost)
                why = f"same tier ({entry.tier})" + ("" if fits else ": over budget")
            elif tier_rank < base_rank:
                order = (2, base_rank - tier_rank, cost)
                why = f"lower tier ({entry.tier})" + ("" if fits else ": over budget")
            else:
                order = (3, tier_rank - base_rank, cost)
                why = f"higher tier ({entry.tier})" + ("" if fits else ": over budget")
            out.append((entry, fits, cost, why, order))
        out.sort(key=lambda r: (not r[1], r[4], r[0].model))
        return out

    def _suggest(self, est: Estimate, a: Assessment) -> Suggestion | None:
        """The best cheaper model with the same functional capabilities that fits every budget."""
        caps = sorted(FUNCTIONAL_CAPABILITIES & set(a.entry.capabilities)) if a.entry else []
        tier = a.attrs.get("tier") or "heavyweight"
        ranked = self._rank(est, self.chat_models(), Need(capabilities=caps), tier, a.attrs.get("model"))
        for entry, fits, cost, _why, _ in ranked:
            if fits and cost < a.cost_nanos and entry.model != a.attrs.get("model"):
                return Suggestion(model=entry.model, provider=entry.provider, tier=entry.tier,
                                  estimated_cost_usd=usd(cost))
        return None


def _budget_event(state: BudgetState, **extra: Any) -> dict[str, Any]:
    return {"budget": state.budget, "key": state.key, "window_start": state.window_start,
            "window_end": state.window_end, "spent_usd": state.spent_usd, "spent_tokens": state.spent_tokens,
            "limit_usd": state.limit_usd, "limit_tokens": state.limit_tokens,
            "used_fraction": state.used_fraction, "policy": state.policy, **extra}


