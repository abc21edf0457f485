"""Which fetched prices may be applied: the verification rules (README, "Prices"), as one pure function.

- a snapshot with under half the models of the last one from its source is rejected whole;
- a price that is negative, not finite, or above `max_per_mtok` is rejected;
- a change of a known model by more than `max_unconfirmed_change` is applied only when a
  second source agrees within `tolerance`; otherwise it is held (the old price stays);
- a model that another source prices differently beyond `tolerance` keeps the leading
  source's price, marked `verified: false`;
- overridden models are never touched.

Model ids differ between sources; each quote is matched to the price book's key.
"""

import math
from dataclasses import dataclass, field

import msgspec

from budgetd.model import PriceDiff, PriceEntry, SourceReport
from budgetd.pricing import PriceBook

LITELLM_FORMAT = ("litellm", "litellm_bundled")
RATE_FIELDS = ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok")


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


def insane(entry: PriceEntry, rules: Rules) -> str | None:
    rates = [(name, getattr(entry, name)) for name in RATE_FIELDS]
    if entry.long_context is not None:
        rates += [(f"long_context.{name}", getattr(entry.long_context, name)) for name in RATE_FIELDS]
    for name, value in rates:
        if value is None:
            continue
        if not math.isfinite(value):
            return f"{entry.model}: {name} is not a number ({value})"
        if value < 0:
            return f"{entry.model}: {name} is negative ({value})"
        if value > rules.max_per_mtok:
            return f"{entry.model}: {name} = {value} per Mtok is above pricing.max_per_mtok ({rules.max_per_mtok})"
    return None


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


def same_prices(a: PriceEntry, b: PriceEntry) -> bool:
    return all(getattr(a, f) == getattr(b, f) for f in RATE_FIELDS) and a.long_context == b.long_context


def change(old: PriceEntry, new: PriceEntry) -> float:
    """The largest relative change of the input and output rates."""
    worst = 0.0
    for name in ("input_per_mtok", "output_per_mtok"):
        before, after = getattr(old, name), getattr(new, name)
        if before == after:
            continue
        worst = max(worst, math.inf if before == 0 else abs(after - before) / before)
    return worst


def agrees(a: PriceEntry, b: PriceEntry, tolerance: float) -> bool:
    for name in ("input_per_mtok", "output_per_mtok"):
        x, y = getattr(a, name), getattr(b, name)
        if x == y:
            continue
        if max(x, y) == 0 or abs(x - y) / max(x, y) > tolerance:
            return False
    return True


def _prices(entry: PriceEntry) -> dict:
    return {"input_per_mtok": entry.input_per_mtok, "output_per_mtok": entry.output_per_mtok}


def plan(
    current: dict[str, PriceEntry],
    overridden: set[str],
    fetches: list[Fetch],
    last_counts: dict[str, int],
    rules: Rules,
    book: PriceBook,
    primary_has_succeeded: bool,
) -> Plan:
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
    others = [s for s in accepted if s != lead and not (s in LITELLM_FORMAT and lead in LITELLM_FORMAT)]
    for key, quote in accepted[lead].items():
        if key in overridden:
            continue
        old = current.get(key)
        second = [(s, accepted[s][key]) for s in others if key in accepted[s]]
        agreeing = [s for s, q in second if agrees(q, quote, rules.tolerance)]
        disagreeing = [(s, q) for s, q in second if not agrees(q, quote, rules.tolerance)]
        new = quote if lead in LITELLM_FORMAT or old is None else _reprice(old, quote)
        new = msgspec.structs.replace(new, model=key, source=lead, verified=not disagreeing)
        if old is not None and same_prices(old, new):
            if old.verified != new.verified:
                changes[key] = msgspec.structs.replace(old, verified=new.verified)
            continue
        if old is not None and change(old, new) > rules.max_unconfirmed_change and not agreeing:
            held += 1
            diffs.append(_diff(key, lead, "held", old, new))
            events.append(Event("price.held", {
                "model": key, "source": lead, "old": _prices(old), "new": _prices(new),
                "message": f"{key}: {lead} changed its price by more than "
                           f"{rules.max_unconfirmed_change:.0%} and no second source agrees; the old price stays",
            }))
            continue
        changes[key] = new
        applied += 1
        diffs.append(_diff(key, lead, "new" if old is None else "changed", old, new))
        if old is not None:
            events.append(Event("price.changed", {
                "model": key, "source": lead, "old": _prices(old), "new": _prices(new),
                "confirmed_by": agreeing,
            }))
        if disagreeing:
            events.append(Event("price.unverified", {
                "model": key, "source": lead, "price": _prices(new),
                "others": {s: _prices(q) for s, q in disagreeing},
            }))
    reports[lead] = msgspec.structs.replace(report, applied=applied, held=held)
    diffs.sort(key=lambda d: (d.status == "new", d.model))
    return Plan(changes, reports, events, counts, diffs)


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
