"""Which fetched prices may be applied: the verification rules (README, "Prices"), as one pure function.

- a snapshot with under half the models of the last one from its source is rejected whole;
- a price that is negative, not finite, or above `max_per_mtok` is rejected;
- every term of a price is judged alike: each rate (input, output, cache read and write, the long-context
  ones) and the long-context threshold; a term appearing or disappearing is a change of 100%;
- a change of a known model is measured against its last *confirmed* price (`last_confirmed`), so a walk
  of small steps counts in total: when a term has moved by more than `max_unconfirmed_change`, the change
  is applied only when a second source agrees on that term within `tolerance`, otherwise the whole change
  is held (the old price stays);
- a new key that would take over requests the book now prices as another model (its name, its bare
  name, or its provider's spelling of it resolving to the new key instead) is held unless a second source
  agrees with its price within `tolerance`;
- a feed with a namespace of its own (OpenRouter's `openrouter/*`) may add and change keys there, judged
  by the same rules as the primary's; a new price is `verified` only once a second source agrees;
- a price is `verified` when no other source prices a term differently beyond `tolerance` and a second
  source agrees on every term that differs from the last confirmed price; an applied verified price is
  the model's new confirmed one;
- overridden models are never touched.

Model ids differ between sources; each quote is matched to the price book's key.
"""

import math
from dataclasses import dataclass, field
from typing import Iterator

import msgspec

from budgetd.model import MAX_LONG_CONTEXTS, LongContext, PriceDiff, PriceEntry, PriceSpec, SourceReport, TokenRates
from budgetd.pricing import PriceBook

LITELLM_FORMAT = ("litellm", "litellm_bundled")
#: Feeds that quote models in a namespace of their own: source -> the provider of its keys there.
OWN_NAMESPACE = {"openrouter": "openrouter"}
RATE_FIELDS = tuple(name for name in PriceSpec.__struct_fields__ if name.endswith("_per_mtok"))
LONG_CONTEXT_RATE_FIELDS = tuple(name for name in LongContext.__struct_fields__ if name.endswith("_per_mtok"))

Terms = dict[str, float | None]  # term name -> value, None where the entry has no such term


@dataclass(frozen=True)
class Rules:
    primary: str = "litellm"
    max_per_mtok: float = 1000.0
    max_unconfirmed_change: float = 0.5
    tolerance: float = 0.1


@dataclass
class Fetch:
    """What one source gave this time: entries (the kept copy when 'not modified'), or an error."""

    source: str
    entries: list[PriceEntry] | None
    error: str | None = None
    refused: list[str] = field(default_factory=list)
    not_modified: bool = False


@dataclass
class Event:
    kind: str  # price.changed | price.held | price.unverified | source.failed
    data: dict


@dataclass
class Plan:
    changes: dict[str, PriceEntry]
    reports: dict[str, SourceReport]
    events: list[Event]
    counts: dict[str, int]  # models per source that fetched, for the next truncation check
    diffs: list[PriceDiff] = field(default_factory=list)


# -- the terms of a price ---------------------------------------------------------------------


def _rate_sets(entry: PriceEntry) -> Iterator[tuple[str, TokenRates]]:
    """The rate sets an entry has beside its base rates, by a name that is the same for every entry: the
    long-context ones, each service tier's and its long-context ones, the off-peak one."""
    if entry.long_context is not None:
        yield "long_context", entry.long_context
    for i, lc in enumerate(entry.longer_contexts):
        yield f"longer_contexts[{i}]", lc
    for tier in _SERVICE_TIER_RATES:
        rates_of_tier = getattr(entry, tier)
        if rates_of_tier is not None:
            yield tier, rates_of_tier
            for i, lc in enumerate(rates_of_tier.long_context):
                yield f"{tier}.long_context[{i}]", lc
    if entry.off_peak is not None:
        yield "off_peak", entry.off_peak


def _all_rate_sets() -> list[tuple[str, bool]]:
    """Every rate set any entry can have (the schema bounds the lists), and whether it has a threshold: each
    term is named for every entry, None where it has no such set, so any two entries have the same terms."""
    sets = [("long_context", True)] + [(f"longer_contexts[{i}]", True) for i in range(MAX_LONG_CONTEXTS - 1)]
    for tier in _SERVICE_TIER_RATES:
        sets += [(tier, False)] + [(f"{tier}.long_context[{i}]", True) for i in range(MAX_LONG_CONTEXTS)]
    return sets + [("off_peak", False)]


_SERVICE_TIER_RATES = ("priority_rates", "flex_rates", "batch_rates")
_ALL_SETS = _all_rate_sets()
_NO_RATES = {f"{prefix}.{name}": None for prefix, _ in _ALL_SETS for name in LONG_CONTEXT_RATE_FIELDS}
_NO_THRESHOLDS = {f"{prefix}.threshold_tokens": None for prefix, has in _ALL_SETS if has}


def rates(entry: PriceEntry) -> Terms:
    """Every rate of an entry, USD per Mtok, by name (those of a rate set prefixed with its name, e.g.
    `long_context.input_per_mtok`, `priority_rates.long_context[0].output_per_mtok`)."""
    found: Terms = {name: getattr(entry, name) for name in RATE_FIELDS}
    found.update(_NO_RATES)
    for prefix, rate_set in _rate_sets(entry):
        for name in LONG_CONTEXT_RATE_FIELDS:
            found[f"{prefix}.{name}"] = getattr(rate_set, name)
    return found


def terms(entry: PriceEntry) -> Terms:
    """Everything that decides what a call costs: every rate, the prompt size above which each long-context
    set applies, and the fees (per web search, and whether it is counted once per request; per request)."""
    found = rates(entry)
    found.update(_NO_THRESHOLDS)
    for prefix, rate_set in _rate_sets(entry):
        if isinstance(rate_set, LongContext):
            found[f"{prefix}.threshold_tokens"] = rate_set.threshold_tokens
    found["web_search_usd"] = entry.web_search_usd
    found["web_search_per_request"] = 1.0 if entry.web_search_billing == "per_request" else None
    found["request_usd"] = entry.request_usd
    return found


def changed(before: Terms, after: Terms) -> set[str]:
    """The terms whose value differs (a term given by one entry only differs too)."""
    return {name for name in before if before[name] != after[name]}


def drift(before: float | None, after: float | None) -> float:
    """How far one term moved, relative to where it was; appearing or disappearing is a change of 100%."""
    if before == after:
        return 0.0
    if before is None or after is None:
        return 1.0
    return math.inf if before == 0 else abs(after - before) / before


def _within(x: float, y: float, tolerance: float) -> bool:
    return x == y or (max(x, y) > 0 and abs(x - y) / max(x, y) <= tolerance)


def agreeing(a: Terms, b: Terms, tolerance: float) -> set[str]:
    """The terms both give and agree on within `tolerance` (a term one leaves out is no opinion)."""
    return {n for n, x in a.items() if x is not None and b[n] is not None and _within(x, b[n], tolerance)}


def disagreeing(a: Terms, b: Terms, tolerance: float) -> set[str]:
    """The terms both give and differ on beyond `tolerance`."""
    return {n for n, x in a.items() if x is not None and b[n] is not None and not _within(x, b[n], tolerance)}


def insane(entry: PriceEntry, rules: Rules) -> str | None:
    for name, value in rates(entry).items():
        if value is None:
            continue
        if not math.isfinite(value):
            return f"{entry.model}: {name} is not a number ({value})"
        if value < 0:
            return f"{entry.model}: {name} is negative ({value})"
        if value > rules.max_per_mtok:
            return f"{entry.model}: {name} = {value} per Mtok is above pricing.max_per_mtok ({rules.max_per_mtok})"
    return None


def last_confirmed(versions: list[PriceEntry]) -> PriceEntry:
    """A model's last confirmed price, from its versions oldest first: the last verified one (the bundled
    baseline, an override, a price second sources agreed with), else its first. Read back from the ledger's
    versions the same as kept from version to version, so it survives a restart."""
    return next((v for v in reversed(versions) if v.verified), versions[0])


# -- matching quotes ----------------------------------------------------------------------------


def canonical_key(entry: PriceEntry, source: str, book: PriceBook) -> str | None:
    """The book's key for a quote: litellm-format feeds use the book's own keys."""
    if source in LITELLM_FORMAT:
        return entry.model
    for name in _spellings(entry.model):
        resolved = book.resolve(name, entry.provider)
        if resolved is not None and (entry.provider is None or resolved.entry.provider == entry.provider):
            return resolved.entry.model
    return None


def _in_own_namespace(entry: PriceEntry, source: str) -> bool:
    provider = OWN_NAMESPACE.get(source)
    return provider is not None and entry.provider == provider and entry.model.startswith(provider + "/")


def _spellings(name: str) -> list[str]:
    """OpenRouter writes `claude-sonnet-4.5` and `mistral-large` where litellm has `-4-5` and `-latest`."""
    names = [name, name.replace(".", "-")]
    return names + [n + "-latest" for n in names]


@dataclass
class Others:
    """What the second sources say of a price."""

    confirmed: set[str]  # terms at least one of them agrees on
    agreeing: list[str]  # sources that agree on every term they give
    disagreeing: dict[str, PriceEntry]  # sources that price a term differently beyond tolerance: their quotes


def others_on(price: Terms, quotes: list[tuple[str, PriceEntry]], tolerance: float) -> Others:
    others = Others(set(), [], {})
    for source, quote in quotes:
        given = terms(quote)
        agreed = agreeing(given, price, tolerance)
        others.confirmed |= agreed
        if disagreeing(given, price, tolerance):
            others.disagreeing[source] = quote
        elif agreed:
            others.agreeing.append(source)
    return others


# -- the plan -----------------------------------------------------------------------------------


def plan(
    current: dict[str, PriceEntry],
    confirmed: dict[str, PriceEntry],
    overridden: set[str],
    fetches: list[Fetch],
    last_counts: dict[str, int],
    rules: Rules,
    book: PriceBook,
    primary_has_succeeded: bool,
) -> Plan:
    """`confirmed`: each model's last confirmed price (`last_confirmed`), which changes are measured against."""
    reports: dict[str, SourceReport] = {}
    events: list[Event] = []
    diffs: list[PriceDiff] = []
    counts: dict[str, int] = {}
    sane: dict[str, list[PriceEntry]] = {}  # per source that fetched, the entries that passed the checks

    for f in fetches:
        if f.entries is None:
            reports[f.source] = SourceReport(source=f.source, fetched=False, error=f.error)
            events.append(Event("source.failed", {"source": f.source, "error": f.error}))
            continue
        n = len(f.entries)
        last = last_counts.get(f.source, 0)
        if last and n < last / 2:
            error = f"snapshot of {n} models is under half of the last one ({last}); rejected whole"
            reports[f.source] = SourceReport(source=f.source, fetched=True, models=n, rejected=n, error=error)
            events.append(Event("source.failed", {"source": f.source, "error": error}))
            continue
        counts[f.source] = n
        sane[f.source] = [entry for entry in f.entries if insane(entry, rules) is None]
        rejected = len(f.refused) + n - len(sane[f.source])
        reports[f.source] = SourceReport(source=f.source, fetched=True, models=n, rejected=rejected)

    lead = None
    if rules.primary in sane:
        lead = rules.primary
    elif "litellm_bundled" in sane and not primary_has_succeeded:
        lead = "litellm_bundled"  # offline: the bundled file leads until the primary has ever answered
    changes: dict[str, PriceEntry] = {}
    if lead is None:
        return Plan(changes, reports, events, counts)
    # Each key is judged once, from the source that leads it: the primary for the book's keys, a feed for
    # the keys of its own namespace that the primary does not price. Other quotes are matched to keys of
    # the book as it would be after (so a second source can confirm a new key's price).
    led: dict[str, tuple[str, PriceEntry]] = {canonical_key(q, lead, book) or q.model: (lead, q)
                                              for q in sane[lead]}
    for source in OWN_NAMESPACE:
        for quote in sane.get(source, ()):
            if _in_own_namespace(quote, source) and canonical_key(quote, source, book) in (None, quote.model):
                led.setdefault(quote.model, (source, quote))
    trial = _with_new_keys(book, current, led)
    accepted: dict[str, dict[str, PriceEntry]] = {
        source: {key: q for q in entries if (key := canonical_key(q, source, trial)) is not None}
        for source, entries in sane.items()
    }
    tally = {source: [0, 0] for source in {s for s, _ in led.values()}}  # applied, held
    for key, (source, quote) in led.items():
        if key in overridden:
            continue
        verdict = _judge(key, source, quote, current, confirmed, accepted, rules, book, trial)
        if verdict.diff is not None:
            diffs.append(verdict.diff)
        events.extend(verdict.events)
        if verdict.entry is not None:
            changes[key] = verdict.entry
        tally[source][0] += verdict.applied
        tally[source][1] += verdict.held
    for source, (applied, held) in tally.items():
        reports[source] = msgspec.structs.replace(reports[source], applied=applied, held=held)
    diffs.sort(key=lambda d: (d.status == "new", d.model))
    return Plan(changes, reports, events, counts, diffs)


@dataclass
class _Verdict:
    entry: PriceEntry | None = None  # what to put in the book, if anything
    diff: PriceDiff | None = None
    events: list[Event] = field(default_factory=list)
    applied: int = 0
    held: int = 0


def _judge(key: str, lead: str, quote: PriceEntry, current: dict[str, PriceEntry],
           confirmed: dict[str, PriceEntry], accepted: dict[str, dict[str, PriceEntry]], rules: Rules,
           book: PriceBook, trial: PriceBook) -> _Verdict:
    """One key's quote from the source that leads it, against the second sources."""
    # Two litellm-format feeds are one upstream at two moments: they neither confirm nor contradict each other.
    second = [s for s in accepted if s != lead and not (s in LITELLM_FORMAT and lead in LITELLM_FORMAT)]

    def quotes(name: str) -> list[tuple[str, PriceEntry]]:
        return [(s, accepted[s][name]) for s in second if name in accepted[s]]

    old = current.get(key)
    new = quote if lead in LITELLM_FORMAT or old is None else _reprice(old, quote)
    new = msgspec.structs.replace(new, model=key, source=lead)
    now = terms(new)
    out = _Verdict()
    if old is None:
        taken = _taken_over(key, new.provider, book, trial)
        others = others_on(now, quotes(key if taken is None else taken.model), rules.tolerance)
        if taken is not None and not others.agreeing:
            out.held = 1
            out.diff = _diff(key, lead, "held", None, new)
            out.events.append(_takeover_held(key, lead, new, taken))
            return out
        # A new price is verified once a second source agrees, except in the first book: the baseline that
        # later changes are measured against.
        baseline = not current
        new = msgspec.structs.replace(new, verified=(baseline or bool(others.agreeing)) and not others.disagreeing)
    else:
        anchor = confirmed.get(key, old)
        was = terms(anchor)
        others = others_on(now, quotes(key), rules.tolerance)
        unconfirmed = changed(was, now) - others.confirmed
        new = msgspec.structs.replace(new, verified=not others.disagreeing and not unconfirmed)
        if terms(old) == now:  # the same price: at most its `verified` changes
            if old.verified != new.verified:
                out.entry = msgspec.structs.replace(old, verified=new.verified)
            return out
        moved = sorted(n for n in unconfirmed if drift(was[n], now[n]) > rules.max_unconfirmed_change)
        if moved:
            out.held = 1
            out.diff = _diff(key, lead, "held", old, new)
            out.events.append(_change_held(key, lead, old, new, anchor, moved, rules))
            return out
    out.entry, out.applied = new, 1
    out.diff = _diff(key, lead, "new" if old is None else "changed", old, new)
    if old is not None:
        out.events.append(Event("price.changed", {
            "model": key, "source": lead, "old": _prices(old), "new": _prices(new),
            "confirmed_by": others.agreeing,
        }))
    if others.disagreeing:
        out.events.append(Event("price.unverified", {
            "model": key, "source": lead, "price": _prices(new),
            "others": {s: _prices(q) for s, q in others.disagreeing.items()},
        }))
    return out


def _with_new_keys(book: PriceBook, current: dict[str, PriceEntry], led: dict[str, tuple[str, PriceEntry]]) -> PriceBook:
    """The book as it would be with every new key added: where requests would go after the refresh."""
    added = [msgspec.structs.replace(q, model=k) for k, (_, q) in led.items() if k not in current]
    if not added:
        return book
    return PriceBook([*book.entries.values(), *added], book.version, book.aliases)


def _taken_over(key: str, provider: str | None, book: PriceBook, trial: PriceBook) -> PriceEntry | None:
    """The model whose requests the new `key` would take: a name of it (the key, its bare name, its provider's
    spelling) that the book prices as another model now and that would resolve to `key` after."""
    bare = key.rpartition("/")[2]
    names = [(key, None), (bare, None), (bare, provider)] + ([(f"{provider}/{bare}", None)] if provider else [])
    for name, named in names:
        before = book.resolve(name, named)
        if before is None or before.entry.model == key:
            continue
        after = trial.resolve(name, named)
        if after is not None and after.entry.model == key:
            return before.entry
    return None


def _change_held(key: str, lead: str, old: PriceEntry, new: PriceEntry, anchor: PriceEntry, moved: list[str],
                 rules: Rules) -> Event:
    return Event("price.held", {
        "model": key, "source": lead, "old": _prices(old), "new": _prices(new), "confirmed": _prices(anchor),
        "terms": moved,
        "message": f"{key}: {lead} moves {', '.join(moved)} by more than {rules.max_unconfirmed_change:.0%} "
                   "from the last confirmed price and no second source agrees; the old price stays",
    })


def _takeover_held(key: str, lead: str, new: PriceEntry, target: PriceEntry) -> Event:
    return Event("price.held", {
        "model": key, "source": lead, "old": _prices(target), "new": _prices(new), "takes_over": target.model,
        "message": f"{key}: {lead} adds it, which would take over the requests now priced as {target.model}, "
                   "and no second source agrees with its price; it is not applied",
    })


def _prices(entry: PriceEntry) -> dict:
    """The terms an entry gives, for an event."""
    return {name: value for name, value in terms(entry).items() if value is not None}


def _diff(key: str, source: str, status: str, old: PriceEntry | None, new: PriceEntry) -> PriceDiff:
    return PriceDiff(
        model=key, source=source, status=status,  # type: ignore[arg-type]
        old_input_per_mtok=None if old is None else old.input_per_mtok,
        old_output_per_mtok=None if old is None else old.output_per_mtok,
        new_input_per_mtok=new.input_per_mtok, new_output_per_mtok=new.output_per_mtok,
    )


def _reprice(old: PriceEntry, quote: PriceEntry) -> PriceEntry:
    """A partial feed's rates on the book's entry (which keeps its capabilities and limits)."""
    return msgspec.structs.replace(
        old, **{name: getattr(quote, name) for name in RATE_FIELDS if getattr(quote, name) is not None}
    )
