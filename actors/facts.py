"""The assistant's facts and its offline answer: pure functions of what the ledger, the budgets and the
price book say. No I/O here; `actors.assistant` gathers the inputs.
"""

import datetime as dt
import re
from typing import Any, Iterable, NamedTuple

from actors.ledger.report_plan import accumulate
from budgetd.model import (
    CacheFact,
    CallFact,
    CheaperModel,
    Facts,
    Forecast,
    PriceEntry,
    Recommendation,
    ReportRow,
    Spend,
    Totals,
    FUNCTIONAL_CAPABILITIES,
    TIER_RANK,
    format_usd,
    nanos,
    usd,
)
from budgetd.periods import window
from budgetd.pricing import Billed, PriceBook, RateCard, cost_nanos, rate_card

_US = dt.timedelta(microseconds=1)
CACHE_MIN_PROMPT = 1024  # providers cache prompts from about this size
CACHE_MIN_REQUESTS = 10  # and only repeated traffic benefits
MIN_HISTORY_REQUESTS = 20  # a span before with fewer calls says nothing about a trend
TOP = 8
#: Words in a model's name that make it a special-purpose variant, never a general replacement for a model
#: without them (gpt-4o-mini-search-preview is not gpt-4o for everyday calls).
VARIANT_WORDS = frozenset({"search", "audio", "realtime", "preview", "tts", "transcribe", "image", "exp",
                           "research", "computer", "live"})


class Horizon(NamedTuple):
    label: str
    since: dt.datetime
    until: dt.datetime

    @property
    def previous(self) -> tuple[dt.datetime, dt.datetime]:
        return self.since - (self.until - self.since), self.since


def horizon_of(question: str, now: dt.datetime) -> Horizon:
    """The span a question is about, from its words; the last 7 days when it names none."""
    q = question.lower()
    for period, this, last in (("daily", "today", "yesterday"), ("weekly", "this week", "last week"),
                               ("monthly", "this month", "last month")):
        start = window(period, "UTC", now).start
        if last in q:
            return Horizon(last, window(period, "UTC", start - _US).start, start)  # type: ignore[operator,arg-type]
        if this in q:
            return Horizon(this, start, now)  # type: ignore[arg-type]
    m = re.search(r"(?:last|past)\s+(\d+)\s*(hour|day|week)s?", q) or re.search(r"\b(\d+)\s*([hdw])\b", q)
    if m:
        n = max(1, min(int(m.group(1)), 366))
        unit = m.group(2)[0]
        span = {"h": dt.timedelta(hours=n), "d": dt.timedelta(days=n), "w": dt.timedelta(weeks=n)}[unit]
        name = {"h": "hour", "d": "day", "w": "week"}[unit]
        return Horizon(f"the last {n} {name}{'s' if n > 1 else ''}", now - span, now)
    if "hour" in q:
        return Horizon("the last hour", now - dt.timedelta(hours=1), now)
    return Horizon("the last 7 days", now - dt.timedelta(days=7), now)


class Inputs(NamedTuple):
    """What the assistant gathered for one question."""

    horizon: Horizon
    rows: list[ReportRow]  # by component, model, tier over the horizon
    previous_rows: list[ReportRow]  # the same over the span before
    totals: Totals
    previous: Totals
    top_calls: list[Any]  # UsageRecord, most expensive first
    max_prompt: dict[str, int]  # model -> the largest prompt seen in the horizon
    forecasts: list[Forecast]
    book: PriceBook


def build(i: Inputs) -> Facts:
    now_sums = _sum_by(i.rows, ("component", "model", "tier"))
    before = {name: _sum_by(i.previous_rows, (name,)) for name in ("component", "model", "tier")}
    facts = Facts(
        horizon=i.horizon.label, since=i.horizon.since, until=i.horizon.until, totals=i.totals, previous=i.previous,
        change=(i.totals.cost_usd / i.previous.cost_usd - 1) if _comparable(i.previous) else None,
    )
    total_nanos = nanos(i.totals.cost_usd)
    for name, out in (("component", facts.by_component), ("model", facts.by_model), ("tier", facts.by_tier)):
        sums = _sum_by(i.rows, (name,))
        for (value,), v in sorted(sums.items(), key=lambda kv: -kv[1][5])[:TOP]:
            out.append(Spend(
                name=value or "-", cost_usd=usd(v[5]), tokens=sum(v[1:5]), requests=v[0],
                share=round(v[5] / total_nanos, 4) if total_nanos else 0.0,
                previous_cost_usd=usd(before[name].get((value,), [0] * 6)[5]),
            ))
    facts.budgets_at_risk.extend(f for f in i.forecasts if _at_risk(f))
    facts.expensive_calls.extend(
        CallFact(record_id=r.record_id, ts=r.ts, component=r.component, model=r.model, cost_usd=r.cost_usd,
                 tokens=r.input_tokens + r.output_tokens + r.cache_read_tokens + r.cache_write_tokens
                 + r.cache_write_1h_tokens)
        for r in i.top_calls[:5])
    facts.cache.extend(_cache_facts(now_sums, i.book))
    by_model = _sum_by(i.rows, ("model",))
    providers = _providers(by_model, i.book)
    for (model,), v in sorted(by_model.items(), key=lambda kv: -kv[1][5])[:3]:
        facts.cheaper_models.extend(cheaper(model, v, i.max_prompt.get(model, 0), i.book, providers)[:2])
    facts.recommendations.extend(_recommendations(facts, now_sums, i))
    return facts


def _comparable(previous: Totals) -> bool:
    """Enough history in the span before to speak of a change (else a ratio like +600,000% says nothing)."""
    return previous.requests >= MIN_HISTORY_REQUESTS and previous.cost_usd > 0


def _variant_words(model: str) -> set[str]:
    return VARIANT_WORDS & set(re.split(r"[-_/.:@]", model.lower()))


def _sum_by(rows: Iterable[ReportRow], dims: tuple[str, ...]) -> dict[tuple, list[int]]:
    """requests, input, output, cache read, cache write (of either lifetime), nanos per value of `dims`."""
    out: dict[tuple, list[int]] = {}
    for r in rows:
        accumulate(out, tuple(r.group.get(d) for d in dims), (
            r.requests, r.input_tokens, r.output_tokens, r.cache_read_tokens,
            r.cache_write_tokens + r.cache_write_1h_tokens, nanos(r.cost_usd)))
    return out


def _providers(by_model: dict[tuple, list[int]], book: PriceBook) -> set[str]:
    """The providers the recorded traffic already uses: alternatives are drawn from those."""
    out = set()
    for (model,) in by_model:
        resolved = book.resolve(model) if model else None
        if resolved is not None and resolved.entry.provider:
            out.add(resolved.entry.provider)
    return out


def _at_risk(f: Forecast) -> bool:
    if f.exhausted_at is not None:
        return True
    if f.limit_usd is not None and (f.spent_usd >= f.limit_usd or (f.projected_usd or 0) > f.limit_usd):
        return True
    return f.limit_tokens is not None and (f.spent_tokens >= f.limit_tokens
                                           or (f.projected_tokens or 0) > f.limit_tokens)


def _base_card(entry: PriceEntry) -> RateCard:
    """The entry's base rates: sums of many calls cannot tell which ones crossed a long-context threshold."""
    card = rate_card(entry)
    return RateCard(card.base, None, None)


def would_cost(entry: PriceEntry, sums: list[int]) -> int:
    """Nano-dollars the traffic `sums` (requests, input, output, cache read, cache write) costs at `entry`'s
    rates; cache rates fall back to the input rate where the model has none."""
    return cost_nanos(_base_card(entry), Billed(sums[1], sums[2], sums[3], sums[4]))


def cheaper(model: str, sums: list[int], max_prompt: int, book: PriceBook, providers: set[str],
            max_tier: str | None = None) -> list[CheaperModel]:
    """Priced chat models of `providers` (the ones the system already uses) with the same functional
    capabilities and a context that held the largest prompt seen, that would have cost less for this
    traffic, the largest saving first."""
    resolved = book.resolve(model)
    if resolved is None:
        return []
    entry = resolved.entry
    needed = FUNCTIONAL_CAPABILITIES & set(entry.capabilities)
    variant = _variant_words(entry.model)
    actual = sums[5]
    out = []
    seen: set[tuple[float, float]] = set()
    for candidate in book.chat_models():
        if candidate.model == entry.model or candidate.deprecated_on is not None \
                or (candidate.provider not in providers and candidate.provider != entry.provider):
            continue
        if candidate.input_per_mtok == 0 and candidate.output_per_mtok == 0:
            continue  # free entries are local or promotional models, not a like-for-like switch
        if not needed <= set(candidate.capabilities) or not _variant_words(candidate.model) <= variant:
            continue  # like with like: the same capabilities, and no special-purpose variant of another model
        if max_prompt and (candidate.max_input_tokens or 0) < max_prompt:
            continue
        if max_tier is not None and TIER_RANK.get(candidate.tier or "heavyweight", 2) > TIER_RANK[max_tier]:
            continue
        cost = would_cost(candidate, sums)
        rates = (candidate.input_per_mtok, candidate.output_per_mtok)
        if cost >= actual or rates in seen:  # the same offer under another provider's name adds nothing
            continue
        seen.add(rates)
        out.append(CheaperModel(instead_of=entry.model, model=candidate.model, provider=candidate.provider,
                                tier=candidate.tier, actual_cost_usd=usd(actual), would_cost_usd=usd(cost),
                                saving_usd=usd(actual - cost)))
    out.sort(key=lambda c: (-c.saving_usd, c.model))
    return out


def _cache_facts(sums: dict[tuple, list[int]], book: PriceBook) -> list[CacheFact]:
    out = []
    for (component, model, _tier), v in sorted(sums.items(), key=lambda kv: -kv[1][5]):
        prompt = v[1] + v[3] + v[4]
        if not prompt:
            continue
        resolved = book.resolve(model) if model else None
        cache_rate = None
        if resolved is not None and resolved.entry.cache_read_per_mtok is not None \
                and resolved.entry.cache_read_per_mtok < resolved.entry.input_per_mtok:
            cache_rate = resolved.entry.cache_read_per_mtok
        out.append(CacheFact(component=component or "-", model=model or "-", requests=v[0], prompt_tokens=prompt,
                             cache_read_tokens=v[3], hit_ratio=round(v[3] / prompt, 4),
                             cache_read_per_mtok=cache_rate))
    return out[:TOP]


def _recommendations(facts: Facts, sums: dict[tuple, list[int]], i: Inputs) -> list[Recommendation]:
    out: list[Recommendation] = []
    for c in facts.cheaper_models[:3]:
        out.append(Recommendation(
            kind="switch_model", model=c.instead_of, saving_usd=c.saving_usd,
            message=f"{c.instead_of} cost {format_usd(c.actual_cost_usd)} {_during(facts.horizon)}; {c.model} "
                    f"(same capabilities, enough context) would have cost {format_usd(c.would_cost_usd)}: "
                    f"{format_usd(c.saving_usd)} less"))
    for cf in facts.cache:
        if cf.cache_read_per_mtok is None or cf.hit_ratio >= 0.2 or cf.requests < CACHE_MIN_REQUESTS \
                or cf.prompt_tokens / cf.requests < CACHE_MIN_PROMPT:
            continue
        entry = i.book.resolve(cf.model).entry  # type: ignore[union-attr]
        # If half of the uncached prompt tokens were read from cache instead:
        moved = (cf.prompt_tokens - cf.cache_read_tokens) // 2
        saving = moved * (entry.input_per_mtok - cf.cache_read_per_mtok) / 1e6
        out.append(Recommendation(
            kind="enable_caching", component=cf.component, model=cf.model, saving_usd=round(saving, 9),
            message=f"{cf.component} sends {cf.requests} {cf.model} calls averaging "
                    f"{cf.prompt_tokens // cf.requests:,} prompt tokens with {cf.hit_ratio:.0%} read from cache; "
                    f"caching the repeated part (say half) would save about {format_usd(saving)}"))
    by_component_tier = _sum_by(i.rows, ("component", "tier"))
    for spend in facts.by_component[:5]:
        heavy = by_component_tier.get((spend.name, "heavyweight"))
        if heavy is None or not spend.cost_usd or usd(heavy[5]) / spend.cost_usd < 0.5:
            continue
        models = [(m, v) for (comp, m, t), v in sums.items() if comp == spend.name and t == "heavyweight"]
        model, v = max(models, key=lambda mv: mv[1][5])
        options = cheaper(model, v, i.max_prompt.get(model, 0), i.book, _providers(_sum_by(i.rows, ("model",)),
                                                                                   i.book), max_tier="midweight")
        if options:
            o = options[0]
            out.append(Recommendation(
                kind="lower_tier", component=spend.name, model=model, saving_usd=o.saving_usd,
                message=f"{spend.name} spends {usd(heavy[5]) / spend.cost_usd:.0%} of its "
                        f"{format_usd(spend.cost_usd)} on heavyweight models; moving its {model} calls to "
                        f"{o.model} ({o.tier}) would have saved {format_usd(o.saving_usd)}"))
    for f in facts.budgets_at_risk:
        name = f.budget + ("[" + ",".join(f"{k}={v}" for k, v in f.key.items()) + "]" if f.key else "")
        if f.exhausted_at is not None:
            out.append(Recommendation(
                kind="budget_running_out", budget=f.budget,
                message=f"budget {name} will reach its limit at {f.exhausted_at:%Y-%m-%d %H:%M} UTC at "
                        f"{_basis(f)} ({format_usd(f.rate_usd_per_hour)}/h), before its window ends"))
        if f.limit_usd is not None and f.projected_usd is not None and f.projected_usd > f.limit_usd:
            out.append(Recommendation(
                kind="raise_limit", budget=f.budget,
                message=f"budget {name} is heading for {format_usd(f.projected_usd)} against a limit of "
                        f"{format_usd(f.limit_usd)}: raise the limit to about {format_usd(f.projected_usd)} "
                        "or cut the spend with the changes above"))
    out.extend(_lower_limits(i.forecasts))
    return out


def _lower_limits(forecasts: list[Forecast]) -> list[Recommendation]:
    """Budgets whose every key heads for well under the limit: one limit binds them all, so the advice is
    judged by the busiest key, and names it."""
    by_budget: dict[str, list[Forecast]] = {}
    for f in forecasts:
        if f.limit_usd and f.projected_usd is not None and f.window_end is not None:
            by_budget.setdefault(f.budget, []).append(f)
    out = []
    for budget, keyed in by_budget.items():
        busiest = max(keyed, key=lambda f: f.projected_usd or 0.0)
        limit, heading = busiest.limit_usd or 0.0, busiest.projected_usd or 0.0
        if not 0 < heading < 0.3 * limit or busiest.spent_usd <= 0:
            continue
        if busiest.key:
            key = ", ".join(f"{k}={v}" for k, v in busiest.key.items())
            each = "per " + "/".join(busiest.key)
            message = (f"budget {budget} ({format_usd(limit)} {each}): its busiest, {key}, is heading for only "
                       f"{format_usd(heading)}; a limit near {format_usd(heading * 1.5)} {each} would catch a "
                       "runaway sooner without denying that busiest one")
        else:
            message = (f"budget {budget} is heading for only {format_usd(heading)} of its {format_usd(limit)}: "
                       f"a limit near {format_usd(heading * 1.5)} would catch a runaway sooner")
        out.append(Recommendation(kind="lower_limit", budget=budget, message=message))
    return out


def offline_answer(question: str, facts: Facts) -> str:
    """A plain answer from the facts alone (no LLM): the totals, the trend, who spent, what to do."""
    t, p = facts.totals, facts.previous
    if not t.requests:
        return f"Nothing was recorded {_during(facts.horizon)} ({facts.since:%Y-%m-%d %H:%M} to {facts.until:%Y-%m-%d %H:%M} UTC)."
    lines = [f"{_during(facts.horizon).capitalize()} you spent {format_usd(t.cost_usd)} on {t.requests:,} calls ({t.tokens:,} tokens)"
             + (f", {_change(facts.change)} the span before ({format_usd(p.cost_usd)})." if facts.change is not None
                else "; nothing was recorded in the span before." if not p.requests
                else f"; not enough history in the span before to compare ({p.requests:,} calls, "
                     f"{format_usd(p.cost_usd)}).")]
    if facts.by_component:
        top = facts.by_component[0]
        lines.append(f"Top spender: {top.name} with {format_usd(top.cost_usd)} ({top.share:.0%})"
                     + (f", {format_usd(top.previous_cost_usd)} before." if facts.change is not None else "."))
    if facts.by_model:
        m = facts.by_model[0]
        lines.append(f"Top model: {m.name} with {format_usd(m.cost_usd)} ({m.share:.0%}).")
    if facts.change is not None and facts.by_component:
        grew = max(facts.by_component, key=lambda s: s.cost_usd - s.previous_cost_usd)
        if grew.cost_usd > grew.previous_cost_usd:
            lines.append(f"The largest increase: {grew.name}, from {format_usd(grew.previous_cost_usd)} to "
                         f"{format_usd(grew.cost_usd)}.")
    if facts.expensive_calls:
        c = facts.expensive_calls[0]
        lines.append(f"The most expensive call: #{c.record_id} by {c.component} on {c.model}, "
                     f"{format_usd(c.cost_usd)} for {c.tokens:,} tokens.")
    if facts.recommendations:
        lines.append("What to do:")
        lines += [f"- {r.message}" for r in facts.recommendations[:6]]
    return "\n".join(lines)


def _during(horizon: str) -> str:
    return f"in {horizon}" if horizon.startswith("the ") else horizon


def _change(change: float) -> str:
    if abs(change) < 0.005:
        return "about the same as"
    return f"{change:+.0%} on" if change > -1 else "down from"


def _basis(f: Any) -> str:
    """Which rate a forecast ran at, in words (a new process has no last hour to go by)."""
    return "the last hour's rate" if f.rate_basis == "last_hour" else "the window's average rate so far"
