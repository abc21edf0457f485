"""The prices actor: owns the current (immutable) PriceBook, keeps it current, versions every change.

At start it loads the last applied book from the ledger (or, on a new ledger,
the price file bundled with litellm) and serves at once. Feeds are fetched in
a background task, never blocking an answer; what they bring passes the
verification rules (`actors.prices.rules`) before it is applied. Every applied
change is a new version in the ledger, and every new book goes to the
allocator by message.
"""

import dataclasses
import datetime as dt
import logging
from typing import Any, Callable

import anyio
import msgspec

from actors.bus import Publish
from actors.ledger import ApplyPrices, LoadPrices, PriceChange, PriceHistory, PriceState, SourcePrice, SourceState
from actors.prices import rules as price_rules
from actors.prices.fetch import PricesSettings, Validator, fetch_all, read_bundled, read_corrections
from actors.prices.messages import (
    GetBook,
    GetHistory,
    GetPrice,
    GetPricesStatus,
    ListPrices,
    NewBook,
    PricesMoved,
    Refresh,
    SetPrice,
    UnsetPrice,
)
from actors.runtime import Actor, Mailbox, Ref, ReplyTo
from actors.sources import corrections
from budgetd.clock import SYSTEM, Clock
from budgetd.model import PriceEntry, PriceSpec, SourceReport, SourceStatus
from budgetd.periods import from_us
from budgetd.pricing import PriceBook, TierRules
from budgetd.protocol import (
    OpError,
    PriceHistoryResult,
    PriceListResult,
    PriceResult,
    PricesStatus,
    PriceUnsetResult,
    RefreshReport,
)

log = logging.getLogger("budgetd.prices")
_entry_decoder = msgspec.json.Decoder(PriceEntry)
MAX_DIFFS = 200


class _Fetched(msgspec.Struct, frozen=True):
    """Sent by the actor's own fetch task when the feeds have answered."""

    fetches: list
    validators: dict
    corrections: tuple  # read_corrections' answer


def _from_us(us: int | None) -> dt.datetime | None:
    return None if us is None else from_us(us)


def _never(source: str) -> SourceState:
    return SourceState(source=source, models=0, last_success=None, last_error=None, etag=None, last_modified=None)


class Prices(Actor):
    name = "prices"

    def __init__(self, ledger: Ref, allocator: Ref | None, settings: PricesSettings, tiers: TierRules,
                 timeout: float = 10.0, bus: Ref | None = None, clock: Clock = SYSTEM, leading: bool = True) -> None:
        super().__init__()
        # Whether this node refreshes the feeds: a fleet's nodes elect one (`PricesMoved`), the others follow.
        self.leading = leading
        self.clock = clock
        self.ledger = ledger
        self.bus = bus
        self.allocator = allocator
        self.settings = settings
        self.tiers = tiers
        self.timeout = timeout
        self.entries: dict[str, PriceEntry] = {}
        # Each model's last confirmed price (`rules.last_confirmed`): what an unconfirmed change is measured against.
        self.confirmed: dict[str, PriceEntry] = {}
        self.overridden: set[str] = set()
        self.sources: dict[str, SourceState] = {}
        self.version = 0
        self.book = PriceBook([], 0, settings.aliases)
        self.updated_at: dt.datetime | None = None
        self._waiting: list[ReplyTo] | None = None  # replies of the refresh in flight
        # The last parsed feed of each source, reused when the server answers 304 Not Modified.
        self._snapshots: dict[str, list[PriceEntry]] = {}
        # The corrections of each model, applied after the litellm-format sources, and why they could not be read.
        self.corrections: dict[str, list[corrections.Correction]] = {}
        self._corrections_error: str | None = None
        self._tg: Any = None
        self.handlers = self._table()

    # -- life -------------------------------------------------------------------------

    async def started(self) -> None:
        await self._reload()
        self.corrections, self._corrections_error = await anyio.to_thread.run_sync(read_corrections, self.settings)
        if not self.entries:
            # A new ledger: start from the bundled file, read from disk, no network.
            fetch = await anyio.to_thread.run_sync(read_bundled, self.settings, self.tiers)

            async def seed() -> None:
                if not self.entries:  # else another node of the fleet seeded it meanwhile
                    await self._apply([fetch], {})

            await self._on_current(seed)
        elif self._corrections_due():  # corrections shipped since the book was applied
            await self._on_current(lambda: self._apply([], {}))
        for spec in self.settings.overrides:
            current = self.entries.get(spec.model)
            if current is None or spec.model not in self.overridden or _spec_of(current, spec.tier) != spec:
                await self._on_current(lambda: self._set_override(spec))
        self._rebuild(publish=False)

    async def _reload(self) -> None:
        """The book as the ledger has it (at start, and on a fleet when another node changed it)."""
        state: PriceState = await self.ledger.ask(lambda reply: LoadPrices(reply=reply), self.timeout)
        self.entries = {e.model: e for e in (_entry_decoder.decode(raw) for raw in state.entries)}
        self.overridden = set(state.overridden)
        self.version = state.version
        self.sources = {s.source: s for s in state.sources}
        self.confirmed = await self._load_confirmed()

    async def _moved(self, m: PricesMoved) -> None:
        elected, self.leading = m.leading and not self.leading, m.leading
        if elected and self.settings.fetches_network:
            self._refresh(None)  # the new refresher does not wait a whole interval for its first
        if (m.version, m.overrides) != (self.version, len(self.overridden)) and self._waiting is None:
            await self._reload()
            self._rebuild()
            log.info("prices followed to version %d, changed by another node of the fleet", self.version)

    async def _on_current(self, change: Callable[[], Any], tries: int = 10) -> Any:
        """`change()`, made again on the prices as they are now when another node of the fleet changed them
        meanwhile (the ledger refuses a change made on an older version as a conflict)."""
        for _ in range(tries - 1):
            try:
                return await change()
            except OpError as exc:
                if exc.code != "conflict":
                    raise
            await self._reload()
        return await change()

    async def run(self, mailbox: Mailbox) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._refresh_every)
            await super().run(mailbox)
            tg.cancel_scope.cancel()

    async def _refresh_every(self) -> None:
        """A refresh at start (in the background) and every `pricing.refresh_interval`."""
        if not self.settings.fetches_network:
            return
        while True:
            if self.leading:
                try:
                    self.ref.tell(Refresh())  # type: ignore[union-attr]
                except OpError:
                    return  # shutting down
            await anyio.sleep(self.settings.refresh_interval_s)

    # -- dispatch ---------------------------------------------------------------------

    def _table(self) -> dict[type, Callable[[Any], Any]]:
        return {
            GetPrice: self._get,
            ListPrices: self._list,
            GetPricesStatus: lambda m: m.reply.set(self._status()),
            GetBook: lambda m: m.reply.set(self.book),
            Refresh: lambda m: self._refresh(m.reply),
            _Fetched: self._finish_refresh,
            SetPrice: self._set,
            UnsetPrice: self._unset,
            GetHistory: self._get_history,
            PricesMoved: self._moved,
        }

    def _get(self, message: GetPrice) -> None:
        resolved = self.book.resolve(message.model, message.provider)
        if resolved is None:
            raise OpError("not_found", f"no price for model {message.model!r}; see `budget prices list --search` "
                                       "or set one with `budget prices set`", "$.model")
        via = None if resolved.entry.model == message.model else message.model
        message.reply.set(PriceResult(price=resolved.entry, resolved_from=via))

    def _list(self, message: ListPrices) -> None:
        found = self.book.search(message.search, message.provider)
        shown = found if message.limit is None else found[: message.limit]
        message.reply.set(PriceListResult(prices=shown, version=self.book.version, total=len(found)))

    async def _set(self, message: SetPrice) -> None:
        message.reply.set(PriceResult(price=await self._on_current(lambda: self._set_override(message.spec))))

    async def _unset(self, message: UnsetPrice) -> None:
        message.reply.set(PriceUnsetResult(removed=await self._on_current(lambda: self._unset_override(message.model))))

    async def _get_history(self, message: GetHistory) -> None:
        message.reply.set(await self._history(message.model))

    def _status(self) -> PricesStatus:
        names = [s for s in self.settings.sources if s != "overrides"]
        names += [s for s in self.sources if s not in names]
        return PricesStatus(
            version=self.version, models=len(self.book), updated_at=self.updated_at,
            sources=[
                SourceStatus(source=s.source, models=s.models, last_success=_from_us(s.last_success),
                             last_error=s.last_error)
                for s in (self.sources.get(name) or _never(name) for name in names)
            ],
        )

    # -- refresh ------------------------------------------------------------------------

    def _refresh(self, reply: ReplyTo | None) -> None:
        if self._waiting is not None:  # one refresh at a time; later askers share its report
            if reply is not None:
                self._waiting.append(reply)
            return
        self._waiting = [] if reply is None else [reply]
        validators = {name: (s.etag, s.last_modified) for name, s in self.sources.items()
                      if name in self._snapshots}
        self._tg.start_soon(self._fetch_all, validators)

    async def _fetch_all(self, validators: dict[str, Validator]) -> None:
        fetches, found = await fetch_all(self.settings, self.tiers, validators)
        fixes = await anyio.to_thread.run_sync(read_corrections, self.settings)
        try:
            self.ref.tell(_Fetched(fetches=fetches, validators=found, corrections=fixes))  # type: ignore[union-attr]
        except OpError:
            pass  # shutting down

    async def _finish_refresh(self, message: _Fetched) -> None:
        waiting, self._waiting = self._waiting or [], None
        fetches, validators = message.fetches, message.validators
        self.corrections, self._corrections_error = message.corrections
        for fetch in fetches:
            if fetch.not_modified:
                fetch.entries = self._snapshots.get(fetch.source)
                if fetch.entries is None:
                    fetch.error = "the server answered 304 Not Modified but no earlier copy is kept"
            elif fetch.entries is not None:
                self._snapshots[fetch.source] = fetch.entries
        try:
            report = await self._on_current(lambda: self._apply(fetches, validators))
        except Exception as exc:
            for reply in waiting:
                reply.fail(exc)
            raise
        for reply in waiting:
            reply.set(report)

    async def _apply(self, fetches: list[price_rules.Fetch], validators: dict) -> RefreshReport:
        primary = self.settings.rules.primary
        fetches = [self._corrected(f) for f in fetches]
        due = self._corrections_due()
        plan = price_rules.plan(
            current=self.entries | due, confirmed=self.confirmed, overridden=self.overridden, fetches=fetches,
            last_counts={name: s.models for name, s in self.sources.items() if s.last_success is not None},
            rules=self.settings.rules, book=self.book,
            primary_has_succeeded=(self.sources.get(primary) or _never(primary)).last_success is not None,
        )
        now = self.clock.now_us()
        proposed = due | plan.changes
        reports = dict(plan.reports)
        if corrections.NAME in self.settings.sources:
            reports[corrections.NAME] = SourceReport(
                source=corrections.NAME, fetched=self._corrections_error is None, models=len(self.corrections),
                applied=sum(k in self.corrections for k in proposed), error=self._corrections_error)
        sources = dict(self.sources)
        for name, report in reports.items():
            s = sources.get(name) or _never(name)
            if name in validators:
                s = msgspec.structs.replace(s, etag=validators[name][0], last_modified=validators[name][1])
            if report.fetched and report.error is None:
                s = msgspec.structs.replace(s, models=report.models, last_success=now, last_error=None)
            elif report.error is not None:
                s = msgspec.structs.replace(s, last_error=report.error)
            sources[name] = s
        version = self.version + 1 if proposed else self.version
        # A corrected model's price comes from the corrections, whichever source brought the rest of it.
        changes = {k: msgspec.structs.replace(_with_tier(e, self.tiers), version=version,
                                              effective_from=_from_us(now), effective_to=None,
                                              source=corrections.NAME if k in self.corrections else e.source)
                   for k, e in proposed.items()}
        await self.ledger.ask(lambda reply: ApplyPrices(
            version=version, effective_from=now,
            changes=[PriceChange(model=k, entry=msgspec.json.encode(e), source=e.source) for k, e in changes.items()],
            sources=[s for n, s in sources.items() if n in reports],
            reply=reply,
        ), self.timeout)
        self.sources = sources
        self.version = version
        self.entries.update(changes)
        self._confirm(changes)
        for event in plan.events:
            self._publish(event.kind, event.data)
        if changes:
            self._rebuild()
        return RefreshReport(
            version=self.version,
            sources=[plan.reports.get(f.source) or SourceReport(source=f.source, fetched=False) for f in fetches]
            + ([reports[corrections.NAME]] if corrections.NAME in reports else []),
            changes=plan.diffs[:MAX_DIFFS], more_changes=max(0, len(plan.diffs) - MAX_DIFFS),
        )

    # -- corrections ---------------------------------------------------------------------------

    def _corrected(self, fetch: price_rules.Fetch) -> price_rules.Fetch:
        """A litellm-format feed's quotes with the corrections on, so they compare with the corrected book."""
        if fetch.entries is None or fetch.source not in price_rules.LITELLM_FORMAT or not self.corrections:
            return fetch
        return dataclasses.replace(fetch, entries=[
            corrections.correct(e, self.corrections[e.model]) if e.model in self.corrections else e
            for e in fetch.entries])

    def _corrections_due(self) -> dict[str, PriceEntry]:
        """The book's prices that lack their corrections (corrections shipped since they were applied): a
        reviewed fact, applied without waiting for a second source. Overrides win over corrections."""
        due = {}
        for key, rows in self.corrections.items():
            entry = self.entries.get(key)
            if entry is None or key in self.overridden:
                continue
            fixed = corrections.correct(entry, rows)
            if entry.source != corrections.NAME or price_rules.terms(fixed) != price_rules.terms(entry):
                due[key] = fixed
        return due

    # -- overrides and history -------------------------------------------------------------

    async def _set_override(self, spec: PriceSpec) -> PriceEntry:
        replaced = self.entries.get(spec.model)
        if spec.provider is None and replaced is not None and replaced.provider is not None:
            # An override of a known key keeps its provider: requests naming that provider still find it.
            spec = msgspec.structs.replace(spec, provider=replaced.provider)
        now = self.clock.now_us()
        version = self.version + 1
        entry = _with_tier(PriceEntry(**msgspec.structs.asdict(spec), source="override", version=version,
                                      effective_from=_from_us(now)), self.tiers)
        problem = price_rules.insane(entry, self.settings.rules)
        if problem is not None:
            raise OpError("invalid", problem, "$.price")
        await self.ledger.ask(lambda reply: ApplyPrices(
            version=version, effective_from=now,
            changes=[PriceChange(model=spec.model, entry=msgspec.json.encode(entry), source="override")],
            sources=[], set_override=spec.model, reply=reply,
        ), self.timeout)
        self.version = version
        self.entries[spec.model] = entry
        self._confirm({spec.model: entry})
        self.overridden.add(spec.model)
        self._publish("price.changed", {"model": spec.model, "source": "override",
                                        "new": {"input_per_mtok": entry.input_per_mtok,
                                                "output_per_mtok": entry.output_per_mtok}})
        self._rebuild()
        return entry

    async def _unset_override(self, model: str) -> bool:
        if model not in self.overridden:
            return False
        raw = await self.ledger.ask(lambda reply: SourcePrice(model=model, reply=reply), self.timeout)
        now = self.clock.now_us()
        version = self.version + 1
        changes, close = [], []
        restored = None
        if raw is not None:
            restored = msgspec.structs.replace(_entry_decoder.decode(raw), version=version,
                                               effective_from=_from_us(now), effective_to=None)
            changes = [PriceChange(model=model, entry=msgspec.json.encode(restored), source=restored.source)]
        else:
            close = [model]
        await self.ledger.ask(lambda reply: ApplyPrices(
            version=version, effective_from=now, changes=changes, sources=[], unset_override=model,
            close=close, reply=reply,
        ), self.timeout)
        self.version = version
        self.overridden.discard(model)
        if restored is None:
            self.entries.pop(model, None)  # its confirmed price stays, as `_load_confirmed` reads it from the ledger
        else:
            self.entries[model] = restored
            self._confirm({model: restored})
        self._rebuild()
        return True

    async def _history(self, model: str) -> PriceHistoryResult:
        resolved = self.book.resolve(model)
        key = resolved.entry.model if resolved is not None else model
        rows = await self.ledger.ask(lambda reply: PriceHistory(model=key, reply=reply), self.timeout)
        if not rows:
            raise OpError("not_found", f"no price history for model {model!r}", "$.model")
        versions = [msgspec.structs.replace(_entry_decoder.decode(v.entry), effective_from=_from_us(v.effective_from),
                                            effective_to=_from_us(v.effective_to)) for v in rows]
        return PriceHistoryResult(model=key, versions=versions)

    # -- confirmed prices ----------------------------------------------------------------------

    async def _load_confirmed(self) -> dict[str, PriceEntry]:
        """Each model's last confirmed price: its current one when verified, else read from its versions."""
        confirmed = {}
        for key, entry in self.entries.items():
            confirmed[key] = entry if entry.verified else price_rules.last_confirmed(await self._versions(key))
        return confirmed

    async def _versions(self, model: str) -> list[PriceEntry]:
        rows = await self.ledger.ask(lambda reply: PriceHistory(model=model, reply=reply), self.timeout)
        return [_entry_decoder.decode(v.entry) for v in rows]

    def _confirm(self, versions: dict[str, PriceEntry]) -> None:
        """Keep each model's last confirmed price current with its new version, as the ledger's versions
        would give it after a restart."""
        for key, entry in versions.items():
            kept = self.confirmed.get(key)
            self.confirmed[key] = entry if kept is None else price_rules.last_confirmed([kept, entry])

    # -- the book ----------------------------------------------------------------------------

    def _rebuild(self, publish: bool = True) -> None:
        self.book = PriceBook(self.entries.values(), self.version, self.settings.aliases)
        self.updated_at = self.clock.now()
        if publish and self.allocator is not None:
            try:
                self.allocator.tell(NewBook(book=self.book))
            except OpError:
                log.warning("the allocator did not take the new price book; it asks for it when it restarts")

    def _publish(self, kind: str, data: dict) -> None:
        level = logging.INFO if kind == "price.changed" else logging.WARNING
        log.log(level, "%s: %s", kind, data.get("message") or data)
        if self.bus is not None:
            # price.* events go to the `price` topic; a failing source is a `system` matter.
            name = "system.source_failed" if kind == "source.failed" else kind
            try:
                self.bus.tell(Publish(events=[(name, data)]))
            except OpError:
                pass


def _spec_of(entry: PriceEntry, tier: str | None) -> PriceSpec:
    """The spec an override entry was made from (its tier as given, not as derived)."""
    fields = {f: getattr(entry, f) for f in PriceSpec.__struct_fields__}
    fields["tier"] = tier
    return PriceSpec(**fields)


def _with_tier(entry: PriceEntry, tiers: TierRules) -> PriceEntry:
    if entry.tier is not None:
        return entry
    tier = tiers.tier_of(entry.model, entry.provider, entry.input_per_mtok, entry.output_per_mtok)
    return msgspec.structs.replace(entry, tier=tier)  # type: ignore[arg-type]
