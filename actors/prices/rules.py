"""Which fetched prices may be applied: the verification rules (README, "Prices"), as one pure function.

- a snapshot with under half the models of the last one from its source is rejected whole;
- a price that is negative, not finite, or above `max_per_mtok` is rejected;
- every term of a price is judged alike: each rate (input, output, cache read and write, the long-context
  ones) and the long-context threshold; a term appearing or disappearing is a change of 100%;
- a change of a known model is measured against its last *confirmed* price (`last_confirmed`), so a walk
  of small steps counts in total: when a term has moved by more than `max_unconfirmed_change`, the change
  is applied only when a second source agrees on that term within `tolerance`, otherwise the whole change
  is held (the old price stays);
- a new key that the book already resolves to another model would take over that model's requests: it
  is held unless a second source agrees with its price within `tolerance`;
- a price is `verified` when no other source prices a term differently beyond `tolerance` and a second
  source agrees on every term that differs from the last confirmed price; an applied verified price is
  the model's new confirmed one;
- overridden models are never touched.

Model ids differ between sources; each quote is matched to the price book's key.
"""

import math
from dataclasses import dataclass, field

import msgspec

from budgetd.model import LongContext, PriceDiff, PriceEntry, PriceSpec, SourceReport
from budgetd.pricing import PriceBook

LITELLM_FORMAT = ("litellm", "litellm_bundled")
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


def rates(entry: PriceEntry) -> Terms:
    """Every rate of an entry, USD per Mtok, by name (the long-context ones prefixed `long_context.`)."""
    lc = entry.long_context
    found: Terms = {name: getattr(entry, name) for name in RATE_FIELDS}
    found.update({f"long_context.{name}": None if lc is None else getattr(lc, name)
                  for name in LONG_CONTEXT_RATE_FIELDS})
    return found


def terms(entry: PriceEntry) -> Terms:
    """Everything that decides what a call costs: every rate, and the input size above which the
    long-context rates apply."""
    lc = entry.long_context
    return rates(entry) | {"long_context.threshold_tokens": None if lc is None else lc.threshold_tokens}


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
    accepted: dict[str, dict[str, PriceEntry]] = {}

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
        rejected = len(f.refused)
        sane: dict[str, PriceEntry] = {}
        for entry in f.entries:
            if insane(entry, rules) is not None:
                rejected += 1
                continue
            key = canonical_key(entry, f.source, book)
            if key is not None:
                sane[key] = entry
        accepted[f.source] = sane
        reports[f.source] = SourceReport(source=f.source, fetched=True, models=n, rejected=rejected)

    lead = None
    if rules.primary in accepted:
        lead = rules.primary
    elif "litellm_bundled" in accepted and not primary_has_succeeded:
        lead = "litellm_bundled"  # offline: the bundled file leads until the primary has ever answered
    changes: dict[str, PriceEntry] = {}
    if lead is None:
        return Plan(changes, reports, events, counts)

    report = reports[lead]
    applied = held = 0
    # Two litellm-format feeds are one upstream at two moments: they neither confirm nor contradict each other.
    second_sources = [s for s in accepted if s != lead and not (s in LITELLM_FORMAT and lead in LITELLM_FORMAT)]

    def quotes(key: str) -> list[tuple[str, PriceEntry]]:
        return [(s, accepted[s][key]) for s in second_sources if key in accepted[s]]

    for key, quote in accepted[lead].items():
        if key in overridden:
            continue
        old = current.get(key)
        new = quote if lead in LITELLM_FORMAT or old is None else _reprice(old, quote)
        new = msgspec.structs.replace(new, model=key, source=lead)
        now = terms(new)
        if old is None:
            # A new key the book already resolves to another model would take over that model's requests.
            target = book.resolve(key)
            others = others_on(now, quotes(key if target is None else target.entry.model), rules.tolerance)
            if target is not None and not others.agreeing:
                held += 1
                diffs.append(_diff(key, lead, "held", None, new))
                events.append(_takeover_held(key, lead, new, target.entry))
                continue
            new = msgspec.structs.replace(new, verified=not others.disagreeing)
        else:
            anchor = confirmed.get(key, old)
            was = terms(anchor)
            others = others_on(now, quotes(key), rules.tolerance)
            unconfirmed = changed(was, now) - others.confirmed
            new = msgspec.structs.replace(new, verified=not others.disagreeing and not unconfirmed)
            if terms(old) == now:  # the same price: at most its `verified` changes
                if old.verified != new.verified:
                    changes[key] = msgspec.structs.replace(old, verified=new.verified)
                continue
            moved = sorted(n for n in unconfirmed if drift(was[n], now[n]) > rules.max_unconfirmed_change)
            if moved:
                held += 1
                diffs.append(_diff(key, lead, "held", old, new))
                events.append(_change_held(key, lead, old, new, anchor, moved, rules))
                continue
        changes[key] = new
        applied += 1
        diffs.append(_diff(key, lead, "new" if old is None else "changed", old, new))
        if old is not None:
            events.append(Event("price.changed", {
                "model": key, "source": lead, "old": _prices(old), "new": _prices(new),
                "confirmed_by": others.agreeing,
            }))
        if others.disagreeing:
            events.append(Event("price.unverified", {
                "model": key, "source": lead, "price": _prices(new),
                "others": {s: _prices(q) for s, q in others.disagreeing.items()},
            }))
    reports[lead] = msgspec.structs.replace(report, applied=applied, held=held)
    diffs.sort(key=lambda d: (d.status == "new", d.model))
    return Plan(changes, reports, events, counts, diffs)


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
