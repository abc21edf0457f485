"""The price book: an immutable set of prices, and how a name a caller gives resolves to one of them.

A name resolves (README, "How a call is priced") by its exact key, a key's `alias_of` (priced as the entry
it names), `provider/model` <-> `model` (nested prefixes too: `openrouter/openai/gpt-4o`), `[pricing.aliases]`,
and a dated id to its undated family. A provider named by the request or by the name's first segment is the
only one whose entries may price it; a bare name is priced by its maker's own entry (`gpt-*` by openai,
`claude-*` by anthropic ...) before any reseller's. The names' knowledge is in `_resolve`.
"""

from typing import Iterable, NamedTuple

from budgetd.model import PriceEntry
from budgetd.pricing._card import RateCard, rate_card
from budgetd.pricing._resolve import (
    Asked, Suggester, ask, maker_of_name, maker_of_prefix, names_a_provider, provider_family, stand_in_rank,
    undated,
)

_MAX_CACHED = 100_000  # resolutions (and suggestions) kept per book: the names come from clients


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
        self._resolved: dict[tuple[str, str | None], str | None] = {}
        self._suggested: dict[tuple[str, str | None, int], list[str]] = {}
        self._suggester: Suggester | None = None  # built on the first unpriced name: most books never need it
        # every key that prices -> the key it is priced as: itself, or where its alias_of chain ends
        self._price_key = {key: end for key in self.entries if (end := self._alias_end(key)) is not None}
        self._provider = {key: self._provider_of(key) for key in self._price_key}
        self._path: dict[str, str] = {}  # the key within its provider: `openai/gpt-4o` of `openrouter/openai/gpt-4o`
        self._maker: dict[str, str | None] = {}
        # (provider, name within it) and (provider, bare name) -> its keys; bare name -> keys of every provider;
        # each list shortest key first
        self._in_provider: dict[tuple[str | None, str], list[str]] = {}
        self._bare_in_provider: dict[tuple[str | None, str], list[str]] = {}
        self._bare: dict[str, list[str]] = {}
        for key in sorted(self._price_key, key=lambda k: (k.count("/"), k)):
            provider = self._provider[key]
            head, slash, rest = key.partition("/")
            path = self._path[key] = rest if slash and provider_family(head) == provider else key
            org, slash, _ = path.partition("/")
            bare = path.rpartition("/")[2]
            self._maker[key] = (maker_of_prefix(org) if slash else None) or maker_of_name(bare)
            self._in_provider.setdefault((provider, path), []).append(key)
            self._bare_in_provider.setdefault((provider, bare), []).append(key)
            self._bare.setdefault(bare, []).append(key)

    def _alias_end(self, key: str) -> str | None:
        """Where a chain of `alias_of` ends; None when it is broken or a loop: such a key prices nothing."""
        seen = set()
        while (target := self.entries[key].alias_of) is not None:
            if target not in self.entries or target in seen:
                return None
            seen.add(key)
            key = target
        return key

    def _provider_of(self, key: str) -> str | None:
        """The entry's provider family; an entry without one is its key prefix's, else its alias target's; None
        for a name priced whoever serves it (an override of no provider)."""
        for candidate in (key, self._price_key[key]):
            entry = self.entries[candidate]
            if entry.provider:
                return provider_family(entry.provider)
            head, slash, _ = candidate.partition("/")
            if slash and names_a_provider(head):
                return provider_family(head)
        return None

    def __len__(self) -> int:
        return len(self.entries)

    def card(self, key: str) -> RateCard:
        key = self._price_key.get(key, key)
        card = self._cards.get(key)
        if card is None:
            card = self._cards[key] = rate_card(self.entries[key])
        return card

    def resolve(self, model: str, provider: str | None = None) -> Resolved | None:
        """The price of `model` as `provider` bills it; None when that provider has none (for a bare name:
        when nobody has)."""
        cache_key = (model, provider)
        try:
            key = self._resolved[cache_key]
        except KeyError:
            key = self._resolve_key(model, provider or None)
            if len(self._resolved) >= _MAX_CACHED:
                self._resolved.clear()
            self._resolved[cache_key] = key
        if key is None:
            return None
        return Resolved(self.entries[key], self.card(key))

    def _resolve_key(self, model: str, provider: str | None) -> str | None:
        asked = [ask(name, provider) for name in self._spellings(model)]
        for a in asked:  # the named provider's entry; for a bare name its maker's, else its exact key
            key = self._own(a)
            if key is not None:
                return self._price_key[key]
        for a in asked:  # a bare name no spelling of which is a key: the best reseller's quote
            key = self._stand_in(a)
            if key is not None:
                return self._price_key[key]
        return None

    def _spellings(self, model: str) -> list[str]:
        """The name, then what `[pricing.aliases]` and undating make of it, in order, each once."""
        names: list[str] = []
        name = model
        while name not in names:
            names.append(name)
            alias = self.aliases.get(name)
            name = alias if alias is not None else undated(name)
        return names

    def _own(self, a: Asked) -> str | None:
        exact = a.name in self._price_key
        if a.provider is not None:  # a named provider: its entries only (and names priced whoever serves them)
            if exact and (not a.strict or self._provider[a.name] == a.provider):
                return a.name
            return self._within(a.provider, a.spelt, a.path, a)
        # A bare name's exact key yields to its maker's own entry of that name: litellm keys `gemini-2.5-pro` for
        # vertex_ai, `gemini/gemini-2.5-pro` for Google AI Studio.
        if exact and (a.maker is None or self._provider[a.name] in (a.maker, None)):
            return a.name
        if a.maker is not None:
            _, org, rest = a.path.partition("/")
            key = self._within(a.maker, None, rest if org else a.path, a)
            if key is not None:
                return key
        return a.name if exact else None

    def _within(self, provider: str, spelt: str | None, path: str, a: Asked) -> str | None:
        """One provider's key for a name: by its name within the provider, else by its bare name (of the maker
        the name writes, if it writes one: `anthropic/` in `openrouter/anthropic/x`), else a key of no provider."""
        keys = self._in_provider.get((provider, path)) or [
            k for k in self._bare_in_provider.get((provider, a.bare), ())
            if not a.explicit_maker or self._maker[k] in (a.maker, None)
        ] or self._in_provider.get((None, path))
        if not keys:
            return None
        if spelt is not None:  # `bedrock_mantle/x` before `bedrock/x` when bedrock_mantle is asked for
            prefix = spelt.lower() + "/"
            return next((k for k in keys if k.startswith(prefix)), keys[0])
        return keys[0]

    def _stand_in(self, a: Asked) -> str | None:
        if a.provider is not None:
            return None
        keys = [k for k in self._bare.get(a.bare, ()) if not a.explicit_maker or self._maker[k] in (a.maker, None)]
        return min(keys, key=lambda k: self._preference(k, a.maker), default=None)

    def _preference(self, key: str, maker: str | None) -> tuple[bool, int, int, str]:
        """Among keys for one name: the maker's own, then the stand-ins in order, the shortest key, by name."""
        provider = self._provider[key]
        return (provider != maker, stand_in_rank(provider), key.count("/"), key)

    def did_you_mean(self, name: str, provider: str | None = None, n: int = 3) -> list[str]:
        """Up to `n` priced keys close to a name that has no price, closest first: of the provider the request
        or the name names, when the book prices any of its models, else of any provider."""
        cache_key = (name, provider, n)
        found = self._suggested.get(cache_key)
        if found is None:
            found = self._suggest(name, provider or None, n)
            if len(self._suggested) >= _MAX_CACHED:
                self._suggested.clear()
            self._suggested[cache_key] = found
        return list(found)

    def _suggest(self, name: str, provider: str | None, n: int) -> list[str]:
        if n <= 0:
            return []
        if self._suggester is None:
            self._suggester = Suggester((key, self._provider[key], self._path[key]) for key in self._price_key)
        a = ask(name, provider)
        scope = a.provider if a.provider in self._suggester.providers else None
        out: list[str] = []
        for text, keys in self._suggester.close((a.path if scope is not None else a.bare).lower(), scope):
            maker = maker_of_name(text.rpartition("/")[2])
            best = min((k for k in keys if scope is None or self._provider[k] == scope),
                       key=lambda k: self._preference(k, maker))
            if best not in out:
                out.append(best)
                if len(out) == n:
                    break
        return out

    def search(self, text: str | None = None, provider: str | None = None) -> list[PriceEntry]:
        """Entries whose key holds `text`, of `provider` (any of litellm's names for the same provider)."""
        needle = (text or "").lower()
        family = provider_family(provider) if provider else None
        return [
            e for key, e in sorted(self.entries.items())
            if (family is None or self._provider.get(key) == family) and needle in key.lower()
        ]

    def chat_models(self) -> list[PriceEntry]:
        """The priced chat models; an alias is another name of one, not a model."""
        return [e for e in self.entries.values() if e.mode in ("chat", "responses", "completion") and not e.alias_of]
