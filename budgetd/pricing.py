"""Pure cost arithmetic and the price book.

Rates are kept as integer atto-dollars (1e-18 USD) per token, converted from
the shortest decimal form of each published float, so a request's cost is an
exact integer sum that is rounded once, to the nearest nano-dollar.
"""

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable, NamedTuple

from budgetd.model import LOCAL_PROVIDERS, PriceEntry, canonical_tier

ATTO_PER_NANO = 1_000_000_000
_ATTO_PER_USD_PER_MTOK = Decimal(10) ** 12  # (1e-6 USD per token) / 1e-18


def per_mtok_to_atto(rate: float) -> int:
    """USD per million tokens -> atto-dollars per token, exactly."""
    return int(Decimal(repr(float(rate))) * _ATTO_PER_USD_PER_MTOK)


def per_token_to_per_mtok(rate: float) -> float:
    """USD per token (as sources publish) -> USD per million, without float noise."""
    return float(Decimal(repr(float(rate))).scaleb(6))


class Rates(NamedTuple):
    """Atto-dollars per token; cache rates are already resolved (never None)."""

    input: int
    output: int
    cache_read: int
    cache_write: int


class RateCard(NamedTuple):
    base: Rates
    threshold: int | None
    long: Rates | None


def rate_card(entry: PriceEntry) -> RateCard:
    def rate(value: float | None, fallback: int) -> int:
        return fallback if value is None else per_mtok_to_atto(value)

    base_input = per_mtok_to_atto(entry.input_per_mtok)
    base = Rates(
        base_input,
        per_mtok_to_atto(entry.output_per_mtok),
        rate(entry.cache_read_per_mtok, base_input),
        rate(entry.cache_write_per_mtok, base_input),
    )
    lc = entry.long_context
    if lc is None:
        return RateCard(base, None, None)
    long_input = per_mtok_to_atto(lc.input_per_mtok)
    # A long-context tier without its own cache rate keeps the base cache
    # rate when there is one (litellm's rule), else the long input rate.
    long = Rates(
        long_input,
        per_mtok_to_atto(lc.output_per_mtok),
        rate(lc.cache_read_per_mtok, base.cache_read if entry.cache_read_per_mtok is not None else long_input),
        rate(lc.cache_write_per_mtok, base.cache_write if entry.cache_write_per_mtok is not None else long_input),
    )
    return RateCard(base, lc.threshold_tokens, long)


def cost_atto(card: RateCard, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int) -> int:
    rates = card.base
    if card.threshold is not None and input_tokens + cache_read + cache_write > card.threshold:
        rates = card.long  # type: ignore[assignment]
    return (
        input_tokens * rates.input
        + output_tokens * rates.output
        + cache_read * rates.cache_read
        + cache_write * rates.cache_write
    )


def atto_to_nanos(atto: int) -> int:
    """Round half up to the nearest nano-dollar (costs are never negative)."""
    return (atto + ATTO_PER_NANO // 2) // ATTO_PER_NANO


def cost_nanos(card: RateCard, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0) -> int:
    return atto_to_nanos(cost_atto(card, input_tokens, output_tokens, cache_read, cache_write))


# -- tiers ----------------------------------------------------------------------

@dataclass(frozen=True)
class TierRules:
    models: dict[str, str] = field(default_factory=dict)
    providers: dict[str, str] = field(default_factory=lambda: {p: "lightweight" for p in LOCAL_PROVIDERS})
    lightweight_below_per_mtok: float = 1.0
    midweight_below_per_mtok: float = 10.0

    def tier_of(self, model: str, provider: str | None, input_per_mtok: float, output_per_mtok: float) -> str:
        mapped = self.models.get(model)
        if mapped is None and "/" in model:
            mapped = self.models.get(model.split("/", 1)[1])
        if mapped is None and provider is not None:
            mapped = self.providers.get(provider)
        if mapped is not None:
            return canonical_tier(mapped) or "heavyweight"
        blended = (input_per_mtok + output_per_mtok) / 2
        if blended < self.lightweight_below_per_mtok:
            return "lightweight"
        if blended < self.midweight_below_per_mtok:
            return "midweight"
        return "heavyweight"


# -- the book -------------------------------------------------------------------

_DATED = re.compile(r"(?:-|@)(?:\d{8}|\d{4}-\d{2}-\d{2})(?:-v\d+(?::\d+)?)?$")
# When a bare name is priced under several providers, prefer the model's maker.
_PROVIDER_PREFERENCE = (
    "openai", "anthropic", "gemini", "mistral", "deepseek", "xai", "groq", "cohere",
    "together_ai", "fireworks_ai", "openrouter", "vertex_ai", "bedrock", "azure",
)


class Resolved(NamedTuple):
    entry: PriceEntry
    card: RateCard


class PriceBook:
    """An immutable set of prices with name resolution. Build a new one to change it."""

    def __init__(self, entries: Iterable[PriceEntry], version: int = 0, aliases: dict[str, str] | None = None) -> None:
        self.version = version
        self.aliases = dict(aliases or {})
        self.entries: dict[str, PriceEntry] = {}
        for entry in entries:
            self.entries[entry.model] = entry
        self._cards: dict[str, RateCard] = {}
        # bare name (after the last provider prefix) -> keys that carry it
        self._bare: dict[str, list[str]] = {}
        for key in self.entries:
            bare = key.rsplit("/", 1)[-1]
            if bare != key:
                self._bare.setdefault(bare, []).append(key)
        self._resolved: dict[tuple[str, str | None], str | None] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def card(self, key: str) -> RateCard:
        card = self._cards.get(key)
        if card is None:
            card = self._cards[key] = rate_card(self.entries[key])
        return card

    def resolve(self, model: str, provider: str | None = None) -> Resolved | None:
        """Find the price of `model`, trying the resolution rules in order (README, "How a call is priced")."""
        cache_key = (model, provider)
        try:
            key = self._resolved[cache_key]
        except KeyError:
            key = self._resolved[cache_key] = self._resolve_key(model, provider)
            if len(self._resolved) > 100_000:  # bounded: names come from clients
                self._resolved.clear()
        if key is None:
            return None
        return Resolved(self.entries[key], self.card(key))

    def _resolve_key(self, model: str, provider: str | None) -> str | None:
        seen: set[str] = set()
        name = model
        while name not in seen:
            seen.add(name)
            key = self._direct(name, provider)
            if key is not None:
                return key
            alias = self.aliases.get(name)
            if alias is not None:
                name = alias
                continue
            undated = _DATED.sub("", name)
            if undated != name:
                name = undated
                continue
            break
        return None

    def _direct(self, name: str, provider: str | None) -> str | None:
        exact = self.entries.get(name)
        if exact is not None and (provider is None or exact.provider == provider):
            return name
        if provider and f"{provider}/{name}" in self.entries:
            return f"{provider}/{name}"
        if exact is not None:
            return name
        if "/" in name:
            prefix, rest = name.split("/", 1)
            if rest in self.entries:
                return rest
            found = self._by_bare(rest, provider or prefix)
            if found:
                return found
        return self._by_bare(name, provider)

    def _by_bare(self, name: str, provider: str | None) -> str | None:
        keys = self._bare.get(name)
        if not keys:
            return None
        if provider is not None:
            for key in keys:
                if self.entries[key].provider == provider or key.startswith(provider + "/"):
                    return key
        def preference(key: str) -> tuple[int, int, str]:
            p = self.entries[key].provider or ""
            rank = _PROVIDER_PREFERENCE.index(p) if p in _PROVIDER_PREFERENCE else len(_PROVIDER_PREFERENCE)
            return (rank, key.count("/"), key)
        return min(keys, key=preference)

    def search(self, text: str | None = None, provider: str | None = None) -> list[PriceEntry]:
        needle = (text or "").lower()
        return [
            e for key, e in sorted(self.entries.items())
            if (provider is None or e.provider == provider) and needle in key.lower()
        ]

    def chat_models(self) -> list[PriceEntry]:
        return [e for e in self.entries.values() if e.mode in ("chat", "responses", "completion")]


# -- pricing a call -------------------------------------------------------------


@dataclass(frozen=True)
class UnpricedPolicy:
    """What an unpriced model costs: never silently free."""

    mode: str = "fallback"  # fallback | deny | zero
    fallback_input_per_mtok: float = 15.0
    fallback_output_per_mtok: float = 75.0

    @property
    def card(self) -> RateCard:
        inp = per_mtok_to_atto(self.fallback_input_per_mtok)
        return RateCard(Rates(inp, per_mtok_to_atto(self.fallback_output_per_mtok), inp, inp), None, None)


class Priced(NamedTuple):
    model: str  # the resolved price key, or the name as given when unpriced
    provider: str | None
    tier: str
    cost_nanos: int
    priced: bool
    price_version: int | None
    entry: PriceEntry | None


def price_call(
    book: PriceBook,
    policy: UnpricedPolicy,
    tiers: TierRules,
    model: str,
    provider: str | None,
    tier: str | None,
    input_tokens: int,
    output_tokens: int,
    cache_read: int = 0,
    cache_write: int = 0,
    cost_nanos_given: int | None = None,
) -> Priced:
    resolved = book.resolve(model, provider)
    if resolved is not None:
        entry, card = resolved
        cost = cost_nanos(card, input_tokens, output_tokens, cache_read, cache_write)
        return Priced(
            entry.model,
            provider or entry.provider,
            canonical_tier(tier) or entry.tier or "heavyweight",
            cost if cost_nanos_given is None else cost_nanos_given,
            True,
            entry.version,
            entry,
        )
    if provider is None and "/" in model:
        provider = model.split("/", 1)[0]
    if policy.mode == "zero":
        cost = 0
    else:
        cost = cost_nanos(policy.card, input_tokens, output_tokens, cache_read, cache_write)
    resolved_tier = canonical_tier(tier) or tiers.tier_of(
        model, provider, policy.fallback_input_per_mtok, policy.fallback_output_per_mtok
    )
    return Priced(
        model, provider, resolved_tier, cost if cost_nanos_given is None else cost_nanos_given, False, None, None
    )
