"""The price book: an immutable set of prices, and how a name a caller gives resolves to one of them."""

import re
from typing import Iterable, NamedTuple

from budgetd.model import PriceEntry
from budgetd.pricing._cost import RateCard, rate_card


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
