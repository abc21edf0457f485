"""Budget-aware routing: candidates ranked by fit, tier and price, and the suggestion a denial offers."""

from typing import NamedTuple

import msgspec

from actors.allocator.admission import Admission, Assessment
from budgetd.model import (
    FUNCTIONAL_CAPABILITIES,
    TIER_RANK,
    Alternative,
    Estimate,
    Need,
    PriceEntry,
    Suggestion,
    canonical_tier,
    usd,
)
from budgetd.protocol import OpError, RouteResult

ALTERNATIVES_SHOWN = 10


class Ranked(NamedTuple):
    entry: PriceEntry
    fits: bool  # every budget allows it without a downgrade
    cost_nanos: int
    why: str
    order: tuple  # the requested model, then the same tier cheapest first, then lower tiers, then higher


def rank(admission: Admission, est: Estimate, entries: list[PriceEntry], need: Need, requested_tier: str,
         requested_model: str | None) -> list[Ranked]:
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
        priced = admission.priced(candidate)
        context = est.input_tokens + (est.cache_read_tokens or 0) + priced.max_output_tokens
        window = entry.max_input_tokens
        if window is not None and context > window:
            continue
        if need.min_context_tokens is not None and (window or 0) < need.min_context_tokens:
            continue
        assessment = admission.weigh(candidate, priced._replace(entry=entry), False)
        fits = assessment.action not in ("deny", "downgrade")
        cost = priced.cost_nanos
        if entry.model == requested_model:
            order: tuple = (0,)
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
        out.append(Ranked(entry, fits, cost, why, order))
    out.sort(key=lambda r: (not r.fits, r.order, r.entry.model))
    return out


def route(admission: Admission, est: Estimate, candidates: list[str] | None, need: Need | None,
          chat_models: list[PriceEntry]) -> tuple[RouteResult, Estimate | None]:
    """The ranking, and the estimate of the chosen model (whose Decision the caller adds), if any fits."""
    book = admission.book
    need = need or Need()
    requested = book.resolve(est.model, est.provider)
    requested_tier = canonical_tier(est.tier) or (requested.entry.tier if requested else None) or "heavyweight"
    if candidates is None:
        entries = chat_models
    else:
        entries = []
        for name in candidates:
            found = book.resolve(name)
            if found is None:
                close = book.did_you_mean(name)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise OpError("invalid", f"candidate {name!r} has no price{hint}; route needs priced models",
                              "$.candidates")
            entries.append(found.entry)
    ranked = rank(admission, est, entries, need, requested_tier, requested.entry.model if requested else None)
    alternatives = [Alternative(model=r.entry.model, tier=r.entry.tier, estimated_cost_usd=usd(r.cost_nanos),
                                fits=r.fits, why=r.why) for r in ranked[:ALTERNATIVES_SHOWN]]
    choice = next((r for r in ranked if r.fits), None)
    unpriced = {} if requested else {"priced": False, "did_you_mean": book.did_you_mean(est.model, est.provider)}
    if choice is None:
        return RouteResult(choice=None, decision=None, alternatives=alternatives, **unpriced), None
    chosen = msgspec.structs.replace(est, model=choice.entry.model, provider=choice.entry.provider, tier=None)
    return RouteResult(choice=choice.entry.model, decision=None, alternatives=alternatives, **unpriced), chosen


def suggest(admission: Admission, est: Estimate, a: Assessment, chat_models: list[PriceEntry]) -> Suggestion | None:
    """The best cheaper model with the same functional capabilities that fits every budget."""
    caps = sorted(FUNCTIONAL_CAPABILITIES & set(a.entry.capabilities)) if a.entry else []
    tier = a.attrs.get("tier") or "heavyweight"
    for r in rank(admission, est, chat_models, Need(capabilities=caps), tier, a.attrs.get("model")):
        if r.fits and r.cost_nanos < a.cost_nanos and r.entry.model != a.attrs.get("model"):
            return Suggestion(model=r.entry.model, provider=r.entry.provider, tier=r.entry.tier,
                              estimated_cost_usd=usd(r.cost_nanos))
    return None
