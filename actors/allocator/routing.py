"""Budget-aware routing: candidates ranked by fit, tier and price, and the suggestion a denial offers."""

import bisect
from collections.abc import Callable
from typing import NamedTuple

import msgspec

from actors.allocator.admission import Admission, Assessment, verdict
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
from budgetd.pricing import ATTO_PER_NANO, Billed, PriceBook, RateCard, Rates, atto_to_nanos, cost_nanos
from budgetd.protocol import OpError, RouteResult

ALTERNATIVES_SHOWN = 10
_SHAPES_KEPT = 1024  # request shapes whose candidates' costs are kept (per price book and minute)


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


# -- the suggestion of a denial --------------------------------------------------------------------

# The dims a candidate model changes in a request's attributes: a budget scoped on none of them covers every
# candidate with the same counter.
_MODEL_DIMS = frozenset({"model", "provider", "tier"})


class Candidate(NamedTuple):
    """A chat model as a suggestion weighs it: what budgets see of it, its card, and its lowest rates."""

    entry: PriceEntry  # as the book lists it (what a suggestion names)
    priced_as: PriceEntry  # the entry its price comes from
    model: str  # the price key (budget scopes match on it)
    provider: str | None
    tier: str
    capabilities: frozenset[str]
    card: RateCard
    floor: Rates  # each kind's lowest rate in any band, service tier or off-peak state: no call costs less


def _floor(card: RateCard) -> Rates:
    if card.table is None:
        return card.base
    every = [rates for bands in card.table.bands.values() for rates in bands]
    return Rates(*(min(column) for column in zip(*every)))


class _Axis(NamedTuple):
    """A tier's models with some capabilities, lowest rate of one kind (input or output) first."""

    models: list[Candidate]
    rates: list[int]  # that lowest rate of each, ascending


class Priced(NamedTuple):
    """A candidate priced for one request shape."""

    cost_nanos: int
    model: str  # the name the book lists (ties of cost go by it)
    candidate: Candidate
    billed: Billed


class Cheapest(NamedTuple):
    """Some of a tier's models priced for one request shape, cheapest first (then by name): every model of
    the tier that passed the walk's test and comes before the last one in that order is here (a model of
    the last one's cost but a later name may not be); when `whole`, every such model that costs less than
    `bound`."""

    models: list[Priced]
    whole: bool
    bound: int


class Shape:
    """What is known of one request shape in one minute: its candidates' costs and each tier's cheapest."""

    __slots__ = ("costs", "cheapest")

    def __init__(self) -> None:
        self.costs: dict[int, int] = {}  # nano-dollars, by id() of the candidate
        self.cheapest: dict[int, Cheapest] = {}  # by tier rank


class Candidates:
    """The chat models a denial may suggest, built once per price book and kept by tier and capabilities,
    each group in two orders (lowest input rate first, lowest output rate first): a suggestion walks both
    at once and stops as soon as no model not yet met can be cheaper than one that fits, instead of
    pricing the whole book."""

    def __init__(self, book: PriceBook, chat_models: list[PriceEntry]) -> None:
        self._by_tier: dict[int, list[Candidate]] = {}
        for entry in chat_models:
            resolved = book.resolve(entry.model, entry.provider)
            if resolved is None:
                continue
            priced_as, card = resolved
            self._by_tier.setdefault(TIER_RANK.get(entry.tier or "heavyweight", 2), []).append(Candidate(
                entry, priced_as, priced_as.model, entry.provider or priced_as.provider,
                priced_as.tier or "heavyweight",
                frozenset(entry.capabilities), card, _floor(card)))
        # lowest rates are lower bounds of a cost only when no rate or fee is negative (the schema allows none)
        self.bounded = all(min(c.floor) >= 0 and (c.card.fees is None or min(c.card.fees.web_search,
                                                                          c.card.fees.request) >= 0)
                           for group in self._by_tier.values() for c in group)
        self._groups: dict[tuple[int, frozenset[str], str], _Axis] = {}
        self._shapes: dict[tuple, Shape] = {}  # see `shape`

    def shape(self, est: Estimate, default_output_tokens: int, now_us: int) -> Shape:
        """What is known of requests of this shape in this minute: the same request again, as a stream of
        denials is, prices nothing twice and finds each tier's cheapest models kept. A cost depends on the
        request's tokens, the card and, through off-peak windows (which start and end on whole minutes), the
        minute."""
        key = (est.model, est.provider, est.tier, est.input_tokens, est.max_output_tokens, est.cache_read_tokens,
               est.cache_write_tokens, est.cache_write_1h_tokens, est.audio_input_tokens, est.service_tier,
               est.web_search_requests, default_output_tokens, now_us // 60_000_000)
        found = self._shapes.get(key)
        if found is None:
            if len(self._shapes) >= _SHAPES_KEPT:
                self._shapes.clear()
            found = self._shapes[key] = Shape()
        return found

    def axis(self, rank: int, capabilities: frozenset[str], kind: str) -> _Axis:
        """The tier's models having `capabilities`, by their lowest `kind` ("input" or "output") rate."""
        slot = (rank, capabilities, kind)
        found = self._groups.get(slot)
        if found is None:
            models = sorted((c for c in self._by_tier.get(rank, ()) if capabilities <= c.capabilities),
                            key=lambda c: (getattr(c.floor, kind), c.entry.model))
            found = self._groups[slot] = _Axis(models, [getattr(c.floor, kind) for c in models])
        return found


def _tier_order(base_rank: int) -> list[int]:
    """The tiers a suggestion looks in: the request's own, then lower ones nearest first, then higher ones."""
    ranks = sorted(set(TIER_RANK.values()))
    return [base_rank, *(r for r in reversed(ranks) if r < base_rank), *(r for r in ranks if r > base_rank)]


def _headroom_nanos(a: Assessment, priority: int) -> int | None:
    """The most any candidate may cost by the budgets that cover every candidate alike (scoped on no
    model, provider or tier) and would refuse one that does not fit; None when no such budget has a
    dollar limit."""
    room = None
    for m in a.matches:
        budget = m.budget
        scoped = {dim for dim, _ in budget.exact} | set(budget.star)
        if scoped & _MODEL_DIMS or budget.limit_nanos is None or verdict(budget, priority) not in ("deny", "downgrade"):
            continue
        left = budget.limit_nanos - m.counter.spent_nanos - m.counter.reserved_nanos
        room = left if room is None else min(room, left)
    return room


CHEAPEST_KEPT = 16  # a tier's cheapest models kept per request shape: a suggestion is most often among them


class _Request(NamedTuple):
    """What a walk over the candidates needs of one request."""

    est: Estimate
    requested: str | None  # the price key of the requested model (never its own suggestion)
    caps: frozenset[str]  # the functional capabilities a candidate must have
    shape: Shape
    now_us: int


def _walk(admission: Admission, r: _Request, rank: int, bound: int, keep: int,
          passes: Callable[[Priced], bool] | None, candidates: Candidates) -> Cheapest:
    """The `keep` cheapest models of a tier that cost less than `bound` (nano-dollars) and `passes` (every
    one when None), cheapest first, then by name.

    Exact, and short. In the tier the models are walked in two orders at once, by lowest input rate and by
    lowest output rate (the threshold algorithm): a model not met yet costs at least the request's input at
    the first order's current rate plus its output at the second's, so the walk ends where that reaches the
    bound or the last of the `keep` cheapest found. A model is priced only when its lowest rates of every
    kind leave it below both, and tested only when it is cheaper than that last one."""
    est = r.est
    cache_read = est.cache_read_tokens or 0
    audio_in = min(est.audio_input_tokens, est.input_tokens)
    input_tokens = est.input_tokens - audio_in  # at the input rate
    # the output is only known per model when the estimate leaves it open: each model gives at least this much
    fewest_output = est.max_output_tokens if est.max_output_tokens is not None else min(
        1, admission.rules.default_output_tokens)
    bounded = candidates.bounded  # else no lower bound: every model is priced
    fixed_output = est.max_output_tokens  # else each model's own default
    bills: dict[int, Billed] = {}  # what the request is billed for, by its output: the same for most models
    costs = r.shape.costs
    by_input = candidates.axis(rank, r.caps, "input")
    by_output = candidates.axis(rank, r.caps, "output")
    found: list[Priced] = []  # the cheapest that passed, at most `keep` of them, in order
    # a model whose cost reaches this many atto-dollars is no candidate (it rounds to the bound or more)
    ceiling_atto = bound * ATTO_PER_NANO
    seen: set[int] = set()
    # A step in each order in turn: a model not met yet has an input rate of at least the input order's
    # current one and an output rate of at least the output order's, so once those two together price the
    # request at the ceiling or more, no model left can take a place in `found`.
    for i in range(len(by_input.models)):
        if bounded and input_tokens * by_input.rates[i] + fewest_output * by_output.rates[i] >= ceiling_atto:
            break
        for c in (by_input.models[i], by_output.models[i]):
            if id(c) in seen:
                continue
            seen.add(id(c))
            if c.entry.model == r.requested:
                continue
            max_out = fixed_output if fixed_output is not None else admission.output_of(est, c.priced_as)
            window = c.entry.max_input_tokens
            if window is not None and est.input_tokens + cache_read + max_out > window:
                continue
            f = c.floor
            low = (input_tokens * f.input + audio_in * f.audio_input + cache_read * f.cache_read
                   + est.cache_write_tokens * f.cache_write + est.cache_write_1h_tokens * f.cache_write_1h
                   + max_out * f.output)  # atto-dollars at its lowest rates
            if bounded and low >= ceiling_atto:
                continue
            billed = bills.get(max_out)
            if billed is None:
                billed = bills[max_out] = admission.billed(est, max_out)
            cost = costs.get(id(c))
            if cost is None:
                # A card of one set of rates and no fees costs exactly that (its lowest rates are its rates).
                cost = costs[id(c)] = atto_to_nanos(low) if c.card.table is None and c.card.fees is None \
                    else cost_nanos(c.card, billed, r.now_us)
            if cost >= bound or (len(found) == keep and (cost, c.entry.model) >= found[-1][:2]):
                continue
            priced = Priced(cost, c.entry.model, c, billed)
            if passes is not None and not passes(priced):
                continue
            bisect.insort(found, priced, key=lambda p: (p.cost_nanos, p.model))
            if len(found) > keep:
                found.pop()
            if len(found) == keep:
                # from here on only a model that rounds to at most the last one's cost can take a place
                ceiling_atto = min(ceiling_atto, found[-1].cost_nanos * ATTO_PER_NANO + ATTO_PER_NANO // 2 + 1)
    return Cheapest(found, len(found) < keep, bound)


def suggest(admission: Admission, est: Estimate, a: Assessment, candidates: Candidates) -> Suggestion | None:
    """The best cheaper model with the same functional capabilities that fits every budget: in the request's
    tier the cheapest (then by name), else in the nearest lower tier, else the nearest higher one (`rank`'s
    order). Cheaper means below the request's cost and within the headroom every candidate shares.

    A request's shape keeps each tier's cheapest models (`CHEAPEST_KEPT`, priced once per minute), so a
    suggestion is most often a short scan of them against the budgets; only when none of them fits does it
    walk the tier again, testing each model it meets (`_walk`)."""
    caps = frozenset(FUNCTIONAL_CAPABILITIES & set(a.entry.capabilities)) if a.entry else frozenset()
    bound = a.cost_nanos  # a suggestion costs less than this
    room = _headroom_nanos(a, est.priority)
    if room is not None:
        bound = min(bound, room + 1)
    if bound <= 0:
        return None
    now = admission.clock.now_us()
    shape = candidates.shape(est, admission.rules.default_output_tokens, now)
    r = _Request(est, a.attrs.get("model"), caps, shape, now)
    attrs = dict(a.attrs)

    def fits(p: Priced) -> bool:
        c = p.candidate
        attrs.update(model=c.model, provider=c.provider, tier=c.tier)
        return admission.allows(attrs, p.cost_nanos, p.billed.tokens, est.priority)

    for rank in _tier_order(TIER_RANK.get(a.attrs.get("tier") or "heavyweight", 2)):
        cheapest = shape.cheapest.get(rank)
        if cheapest is None or cheapest.bound != a.cost_nanos:  # (a changed rule may price the request anew)
            cheapest = shape.cheapest[rank] = _walk(admission, r, rank, a.cost_nanos, CHEAPEST_KEPT, None,
                                                    candidates)
        chosen = None
        for p in cheapest.models:
            if p.cost_nanos >= bound:
                break  # the rest of the tier costs as much or more
            if fits(p):
                chosen = p
                break
        else:
            if not cheapest.whole:  # none of the cheapest fits: the tier's other models, each tested
                refused = {id(p.candidate) for p in cheapest.models}
                best = _walk(admission, r, rank, bound, 1, lambda p: id(p.candidate) not in refused and fits(p),
                             candidates).models
                chosen = best[0] if best else None
        if chosen is not None:
            entry = chosen.candidate.entry
            return Suggestion(model=entry.model, provider=entry.provider, tier=entry.tier,
                              estimated_cost_usd=usd(chosen.cost_nanos))
    return None
