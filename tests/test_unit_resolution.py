"""In-process tests of how a name resolves to a price (`budgetd.pricing._book`): every rule on hand-made books,
then the examples that went wrong before on litellm's bundled file, loaded once for the module."""

import json
import time

import pytest

from actors.sources import litellm_bundled
from budgetd.model import PriceEntry
from budgetd.pricing import Billed, PriceBook, TierRules, cost_nanos
from budgetd.pricing import _book
from budgetd.pricing._resolve import provider_family


def price(model: str, provider: str | None, inp: float = 1.0, out: float = 2.0, **kw) -> PriceEntry:
    return PriceEntry(model=model, provider=provider, input_per_mtok=inp, output_per_mtok=out, **kw)


def key(book: PriceBook, model: str, provider: str | None = None) -> str | None:
    resolved = book.resolve(model, provider)
    return None if resolved is None else resolved.entry.model


# -- the rules, on hand-made books ------------------------------------------------------------------------------


def test_an_exact_key_resolves_to_itself_and_an_unknown_name_to_none():
    book = PriceBook([price("gpt-4o", "openai"), price("azure/gpt-4o", "azure")])
    assert key(book, "gpt-4o") == "gpt-4o" and key(book, "azure/gpt-4o") == "azure/gpt-4o"
    assert book.resolve("gpt-5-turbo-max") is None and book.resolve("") is None


def test_an_alias_is_priced_as_the_entry_it_names():
    target = price("claude-sonnet-5-5", "anthropic", 3.0, 15.0)
    bedrock = price("global.anthropic.claude-sonnet-5-5", "bedrock_converse", 3.3, 16.5)
    book = PriceBook([
        target, bedrock,
        price("claude-sonnet-latest", None, 0.0, 0.0, alias_of="claude-sonnet-5-5"),  # as litellm's file has it
        price("bedrock/claude-sonnet-latest", None, 0.0, 0.0, alias_of="global.anthropic.claude-sonnet-5-5"),
        price("sonnet", None, 0.0, 0.0, alias_of="claude-sonnet-latest"),  # a chain
        price("claude-gone-latest", None, 9.0, 9.0, alias_of="claude-gone-1"),  # names nothing
        price("loop-a", None, alias_of="loop-b"), price("loop-b", None, alias_of="loop-a"),
    ])
    resolved = book.resolve("claude-sonnet-latest")
    assert resolved.entry == target
    assert cost_nanos(resolved.card, Billed(1000, 100, 0, 0)) == 1000 * 3_000 + 100 * 15_000
    assert key(book, "sonnet") == "claude-sonnet-5-5"
    assert book.card("claude-sonnet-latest") == book.card("claude-sonnet-5-5")
    # an alias is its target's provider's (or its key prefix's) name, no other's
    assert key(book, "claude-sonnet-latest", "anthropic") == "claude-sonnet-5-5"
    assert key(book, "claude-sonnet-latest", "bedrock") == "global.anthropic.claude-sonnet-5-5"
    assert key(book, "bedrock/claude-sonnet-latest") == "global.anthropic.claude-sonnet-5-5"
    assert key(book, "claude-sonnet-latest", "azure") is None
    # a broken alias, or a loop, is no price (not its own rates)
    assert book.resolve("claude-gone-latest") is None and book.resolve("loop-a") is None
    assert [e.model for e in book.chat_models()] == ["claude-sonnet-5-5", "global.anthropic.claude-sonnet-5-5"]


def test_provider_slash_model_and_model_resolve_to_each_other():
    book = PriceBook([price("gpt-4o", "openai"), price("gemini/gemini-2.5-flash", "gemini")])
    assert key(book, "openai/gpt-4o") == "gpt-4o"
    assert key(book, "gpt-4o", "openai") == key(book, "openai/gpt-4o", "openai") == "gpt-4o"
    assert key(book, "gemini-2.5-flash") == key(book, "gemini-2.5-flash", "gemini") == "gemini/gemini-2.5-flash"
    assert key(book, "gemini/gemini-2.5-flash", "gemini") == "gemini/gemini-2.5-flash"


def test_nested_prefixes_resolve_to_the_gateways_own_quote():
    book = PriceBook([
        price("gpt-4o", "openai"), price("openrouter/openai/gpt-4o", "openrouter", 2.6, 10.4),
        price("openrouter/anthropic/claude-3.5-sonnet", "openrouter"),
    ])
    for model, provider in [("openrouter/openai/gpt-4o", None), ("openai/gpt-4o", "openrouter"),
                            ("gpt-4o", "openrouter"), ("openrouter/gpt-4o", None),
                            ("openrouter/openai/gpt-4o", "openrouter")]:
        assert key(book, model, provider) == "openrouter/openai/gpt-4o", (model, provider)
    assert key(book, "gpt-4o") == "gpt-4o"  # a bare name: the maker's, not the gateway's
    assert key(book, "anthropic/claude-3.5-sonnet", "openrouter") == "openrouter/anthropic/claude-3.5-sonnet"
    assert key(book, "claude-3.5-sonnet", "openrouter") == "openrouter/anthropic/claude-3.5-sonnet"
    # the maker the name writes must be the quote's
    assert key(book, "x-ai/claude-3.5-sonnet", "openrouter") is None


def test_the_config_alias_table_and_dated_ids():
    book = PriceBook([price("gpt-4o-mini", "openai"), price("claude-x", "anthropic"),
                      price("gpt-4o", "openai"), price("gpt-4o-2024-08-06", "openai", 5.0, 5.0)],
                     aliases={"fast": "gpt-4o-mini", "loop-a": "loop-b", "loop-b": "loop-a"})
    assert key(book, "fast") == key(book, "fast", "openai") == "gpt-4o-mini"
    assert key(book, "fast", "azure") is None
    assert book.resolve("loop-a") is None
    for dated in ("claude-x-20250219", "claude-x@20250219", "claude-x-2025-02-19", "claude-x-20250219-v1:0"):
        assert key(book, dated) == key(book, dated, "anthropic") == "claude-x", dated
    assert key(book, "gpt-4o-2024-08-06") == "gpt-4o-2024-08-06"  # priced itself: not its family
    assert key(book, "claude-x-20250219", "bedrock") is None


def test_a_named_provider_is_priced_from_its_own_entries_only():
    others = [price("inferenceapis/llama-3.3-70b-versatile", "inferenceapis"), price("azure_ai/grok-4", "azure_ai"),
              price("vertex_ai/gemini-2.0-flash", "vertex_ai"), price("gpt-4o", "openai"),
              price("replicate/anthropic/claude-3.5-sonnet", "replicate")]
    book = PriceBook(others)
    for model, provider in [("groq/llama-3.3-70b-versatile", None), ("llama-3.3-70b-versatile", "groq"),
                            ("xai/grok-4", None), ("grok-4", "xai"), ("gemini/gemini-2.0-flash", None),
                            ("gemini-2.0-flash", "gemini"), ("anthropic/claude-3.5-sonnet", "openrouter"),
                            ("gpt-4o", "azure"), ("acme/gpt-4o", None), ("openai/gpt-4o", "groq")]:
        assert book.resolve(model, provider) is None, (model, provider)
    own = PriceBook(others + [price("groq/llama-3.3-70b-versatile", "groq"), price("xai/grok-4", "xai"),
                              price("gemini/gemini-2.0-flash", "gemini"), price("azure/gpt-4o", "azure")])
    assert key(own, "groq/llama-3.3-70b-versatile") == key(own, "llama-3.3-70b-versatile", "groq") \
        == "groq/llama-3.3-70b-versatile"
    assert key(own, "xai/grok-4") == key(own, "grok-4", "xai") == key(own, "grok-4") == "xai/grok-4"
    assert key(own, "gemini/gemini-2.0-flash") == key(own, "gemini-2.0-flash") == "gemini/gemini-2.0-flash"
    assert key(own, "vertex_ai/gemini-2.0-flash") == key(own, "gemini-2.0-flash", "vertex_ai") \
        == "vertex_ai/gemini-2.0-flash"
    assert key(own, "gpt-4o", "azure") == "azure/gpt-4o"


def test_litellm_names_of_one_provider_are_that_provider():
    book = PriceBook([
        price("vertex_ai/claude-3-5-sonnet", "vertex_ai-anthropic_models"),
        price("global.anthropic.claude-y", "bedrock_converse"),
        price("bedrock/claude-z", "bedrock"), price("bedrock_mantle/claude-z", "bedrock_mantle", 9.0, 9.0),
        price("gpt-3.5-turbo-instruct", "text-completion-openai"),
        price("fireworks_ai/nomic-embed", "fireworks_ai-embedding-models"),
        price("command-r", "cohere_chat"), price("codestral/codestral-latest", "codestral"),
        price("azure_ai/phi-4", "azure_ai"),
    ])
    assert key(book, "claude-3-5-sonnet", "vertex_ai") == "vertex_ai/claude-3-5-sonnet"
    assert key(book, "global.anthropic.claude-y", "bedrock") == "global.anthropic.claude-y"
    assert key(book, "claude-z", "bedrock") == "bedrock/claude-z"
    assert key(book, "claude-z", "bedrock_mantle") == "bedrock_mantle/claude-z"  # its own key, within the family
    assert key(book, "bedrock_mantle/claude-z", "bedrock") == "bedrock_mantle/claude-z"
    assert key(book, "gpt-3.5-turbo-instruct", "OpenAI") == "gpt-3.5-turbo-instruct"
    assert key(book, "nomic-embed", "fireworks_ai") == "fireworks_ai/nomic-embed"
    assert key(book, "command-r", "cohere") == "command-r"
    assert key(book, "codestral-latest", "mistral") == "codestral/codestral-latest"
    # distinct providers: Google AI Studio is not Vertex, Azure OpenAI is not Azure AI Foundry
    assert key(book, "claude-3-5-sonnet", "gemini") is None
    assert key(book, "phi-4", "azure") is None and key(book, "phi-4", "azure_ai") == "azure_ai/phi-4"


MAKERS = [  # (bare name asked for, the maker's own key, resellers' keys of the same name)
    ("gpt-4o", "gpt-4o", ["azure/gpt-4o", "openrouter/openai/gpt-4o", "github_copilot/gpt-4o"]),
    ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20241022",
     ["vercel_ai_gateway/anthropic/claude-3-5-sonnet-20241022"]),
    ("gemini-2.5-pro", "gemini/gemini-2.5-pro", ["gemini-2.5-pro"]),  # litellm keys vertex_ai's price bare
    ("mistral-large-latest", "mistral/mistral-large-latest", ["azure_ai/mistral-large-latest"]),
    ("deepseek-chat", "deepseek/deepseek-chat", ["together_ai/deepseek-chat", "fireworks_ai/deepseek-chat"]),
    ("grok-4", "xai/grok-4", ["azure_ai/grok-4", "replicate/xai/grok-4"]),
    ("Llama-3.3-70B-Instruct", "meta_llama/Llama-3.3-70B-Instruct",
     ["together_ai/meta-llama/Llama-3.3-70B-Instruct", "deepinfra/meta-llama/Llama-3.3-70B-Instruct"]),
    ("command-a-03-2025", "command-a-03-2025", ["bedrock/command-a-03-2025"]),
    ("kimi-k3", "moonshot/kimi-k3", ["fireworks_ai/kimi-k3"]),
]
RESELLER_OF = {"gemini-2.5-pro": "vertex_ai-language-models"}
MAKER_OF = {"gpt-4o": "openai", "claude-3-5-sonnet-20241022": "anthropic", "command-a-03-2025": "cohere_chat"}


@pytest.mark.parametrize("name,own,resellers", MAKERS, ids=[m[0] for m in MAKERS])
def test_a_bare_name_is_priced_by_its_makers_own_entry_before_any_resellers(name, own, resellers):
    entries = [price(k, RESELLER_OF.get(name) if k == name else k.split("/")[0], 0.5, 0.5) for k in resellers]
    entries.append(price(own, MAKER_OF.get(name) or own.split("/")[0]))
    assert key(PriceBook(entries), name) == own
    assert key(PriceBook(entries[::-1]), name) == own


def test_what_a_name_writes_of_its_maker_and_its_family_count_too():
    book = PriceBook([price("gemini/gemini-2.5-pro", "gemini"), price("vertex_ai/gemini-2.5-pro", "vertex_ai"),
                      price("meta_llama/Llama-4-Scout", "meta_llama"), price("together_ai/meta-llama/Llama-4-Scout",
                                                                             "together_ai"),
                      price("gpt-audio-1.5", "openai"), price("azure/gpt-audio-1.5-2026-02-23", "azure"),
                      price("claude-sonnet-4-5", "anthropic"), price("claude-sonnet-4-5-20250929-v1:0", "bedrock")])
    assert key(book, "google/gemini-2.5-pro") == "gemini/gemini-2.5-pro"  # `google/` is Gemini's maker
    assert key(book, "meta-llama/Llama-4-Scout") == "meta_llama/Llama-4-Scout"
    assert key(book, "gpt-audio-1.5-2026-02-23") == "gpt-audio-1.5"  # the maker's family, not a reseller's date
    # ... but a key that is the very name asked for stands
    assert key(book, "claude-sonnet-4-5-20250929-v1:0") == "claude-sonnet-4-5-20250929-v1:0"


def test_without_a_makers_entry_a_resellers_quote_stands_in_in_order():
    ranked = ["openrouter/anthropic/claude-3-5-sonnet", "vercel_ai_gateway/anthropic/claude-3-5-sonnet",
              "vertex_ai/claude-3-5-sonnet", "bedrock/claude-3-5-sonnet", "together_ai/claude-3-5-sonnet",
              "replicate/anthropic/claude-3-5-sonnet", "snowflake/claude-3-5-sonnet"]
    entries = [price(k, k.split("/")[0]) for k in ranked]
    for first in range(len(ranked)):
        assert key(PriceBook(entries[first:][::-1]), "claude-3-5-sonnet") == ranked[first]
    assert key(PriceBook(entries), "claude-3-5-sonnet-20241022") == ranked[0]  # its undated family
    assert key(PriceBook(entries), "claude-3-5-sonnet", "anthropic") is None


def test_local_providers_keep_working():
    book = PriceBook([price("ollama/llama3", "ollama", 0.0, 0.0), price("tiny-model", "local", 0.0004, 0.0004)])
    for model, provider in [("ollama/llama3", None), ("llama3", "ollama"), ("llama3", "ollama_chat"),
                            ("ollama_chat/llama3", None), ("llama3", None)]:
        assert key(book, model, provider) == "ollama/llama3", (model, provider)
    assert key(book, "tiny-model") == key(book, "tiny-model", "local") == "tiny-model"
    assert key(book, "llama3", "vllm") is None and key(book, "tiny-model", "openai") is None


def test_an_entry_of_no_provider_prices_its_name_for_any_provider_after_the_providers_own():
    book = PriceBook([price("my-model", None), price("gpt-4o", None, 1.0, 2.0), price("azure/gpt-4o", "azure")])
    assert key(book, "my-model", "openai") == key(book, "openai/my-model") == "my-model"
    assert key(book, "gpt-4o", "azure") == "azure/gpt-4o"
    assert key(book, "gpt-4o", "openai") == key(book, "gpt-4o") == "gpt-4o"


def test_resolutions_are_cached_within_a_bound_and_leave_the_book_as_it_was(monkeypatch):
    monkeypatch.setattr(_book, "_MAX_CACHED", 3)
    entries = [price("gpt-4o", "openai"), price("azure/gpt-4o", "azure")]
    book = PriceBook(entries, aliases={"fast": "gpt-4o"})
    for name in ("gpt-4o", "openai/gpt-4o", "fast", "nope", "gpt-4o-2024-01-01", "azure/gpt-4o"):
        assert book.resolve(name) == book.resolve(name)
        assert len(book._resolved) <= 3
    assert list(book.entries.values()) == entries and book.aliases == {"fast": "gpt-4o"}


def test_search_knows_litellms_names_of_one_provider():
    book = PriceBook([price("vertex_ai/claude-3-5-sonnet", "vertex_ai-anthropic_models"),
                      price("vertex_ai/gemini-2.0-flash", "vertex_ai"), price("gemini/gemini-2.0-flash", "gemini"),
                      price("global.anthropic.claude-y", "bedrock_converse")])
    assert [e.model for e in book.search(provider="vertex_ai")] == ["vertex_ai/claude-3-5-sonnet",
                                                                    "vertex_ai/gemini-2.0-flash"]
    assert [e.model for e in book.search("claude", provider="bedrock")] == ["global.anthropic.claude-y"]
    assert [e.model for e in book.search("flash")] == ["gemini/gemini-2.0-flash", "vertex_ai/gemini-2.0-flash"]


def test_did_you_mean_offers_priced_keys_close_to_an_unpriced_name():
    book = PriceBook([price("gpt-4o", "openai"), price("gpt-4o-mini", "openai"), price("azure/gpt-4o", "azure"),
                      price("xai/grok-4.3", "xai"), price("xai/grok-4.5", "xai"), price("azure_ai/grok-4", "azure_ai"),
                      price("claude-sonnet-4-5", "anthropic")])
    assert book.did_you_mean("gtp-4o")[0] == "gpt-4o"  # the maker's key, not azure's of the same name
    assert book.did_you_mean("gtp-4o", n=1) == ["gpt-4o"] and book.did_you_mean("gtp-4o", n=0) == []
    assert set(book.did_you_mean("grok-4", "xai")) == {"xai/grok-4.3", "xai/grok-4.5"}
    assert book.did_you_mean("xai/grok-4") == book.did_you_mean("grok-4", "xai")
    assert book.did_you_mean("azure/gtp-4o") == ["azure/gpt-4o"]
    assert book.did_you_mean("gtp-4o", "groq")[0] == "gpt-4o"  # a provider the book has no price of: any
    assert book.did_you_mean("claude-sonet-4-5") == ["claude-sonnet-4-5"]
    assert book.did_you_mean("something-else-entirely") == []


# -- litellm's bundled file ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundled() -> tuple[PriceBook, dict]:
    """The real book, with the file's `alias_of` keys as the parser may not yet carry them."""
    raw = json.loads(litellm_bundled.bundled_path().read_bytes())
    entries = litellm_bundled.load(TierRules())[0]
    parsed = {e.model for e in entries}
    entries += [price(k, None, 0.0, 0.0, alias_of=spec["alias_of"]) for k, spec in raw.items()
                if isinstance(spec, dict) and isinstance(spec.get("alias_of"), str) and k not in parsed]
    return PriceBook(entries), raw


WRONG_BEFORE = [  # (model, provider, the other provider's key it was priced at)
    ("groq/llama-3.3-70b-versatile", None, "inferenceapis/llama-3.3-70b-versatile"),
    ("xai/grok-4", None, "azure_ai/grok-4"),
    ("gemini/gemini-2.0-flash", None, "vertex_ai/gemini-2.0-flash"),
    ("anthropic/claude-3.5-sonnet", "openrouter", "replicate/anthropic/claude-3.5-sonnet"),
]


@pytest.mark.parametrize("model,provider,elsewhere", WRONG_BEFORE, ids=[w[0] for w in WRONG_BEFORE])
def test_bundled_a_named_provider_is_never_priced_as_another(bundled, model, provider, elsewhere):
    book, _ = bundled
    assert elsewhere in book.entries  # the price that was taken before
    named = provider_family(provider or model.split("/")[0])
    resolved = book.resolve(model, provider)
    assert resolved is None or provider_family(resolved.entry.provider) == named
    assert resolved is None  # none of these providers prices the model in litellm 1.110.2's file


def test_bundled_a_bare_name_is_its_makers_before_a_resellers(bundled):
    book, _ = bundled
    name = "claude-3-5-sonnet-20241022"
    # Anthropic no longer prices it (nor its family) in this file, so the first stand-in that quotes it, a gateway;
    # with Anthropic's own entry it is Anthropic's (the hand-made case above).
    assert all(k not in book.entries or book.entries[k].provider != "anthropic" for k in (name, "claude-3-5-sonnet"))
    assert key(book, name) == "vercel_ai_gateway/anthropic/claude-3-5-sonnet-20241022"
    assert key(book, name, "anthropic") is None
    assert key(book, "gemini-2.5-pro") == "gemini/gemini-2.5-pro"  # before: vertex_ai's bare key
    assert key(book, "gpt-5.5-2026-04-24") == "gpt-5.5"  # before: azure's dated key
    assert key(book, "gpt-4o") == key(book, "openai/gpt-4o") == "gpt-4o"


def test_bundled_nested_prefixes_reach_openrouters_own_quote(bundled):
    book, _ = bundled
    assert not any(k.startswith("openrouter/") for k in book.entries)  # this file quotes nothing of OpenRouter's
    assert book.resolve("openrouter/openai/gpt-4o") is None
    quoted = PriceBook([*book.entries.values(), price("openrouter/openai/gpt-4o", "openrouter", 2.5, 10.0)])
    assert key(quoted, "openrouter/openai/gpt-4o") == key(quoted, "openai/gpt-4o", "openrouter") \
        == "openrouter/openai/gpt-4o"
    assert key(quoted, "gpt-4o") == "gpt-4o"


def test_bundled_every_alias_of_the_file_is_priced_as_what_it_names(bundled):
    book, raw = bundled
    aliases = {k: spec["alias_of"] for k, spec in raw.items() if isinstance(spec, dict) and "alias_of" in spec}
    assert len(aliases) >= 90
    for alias, target in aliases.items():
        if target in book.entries:
            assert key(book, alias) == target, alias
            assert key(book, alias, book.entries[target].provider) == target, alias
    assert key(book, "claude-sonnet-latest") == aliases["claude-sonnet-latest"]
    assert key(book, "claude-opus-latest", "bedrock") == aliases["bedrock/claude-opus-latest"]


def test_bundled_every_key_is_its_own_providers_price(bundled):
    book, _ = bundled
    for k, entry in book.entries.items():
        if entry.provider and not entry.alias_of:
            assert key(book, k, entry.provider) == k


def test_bundled_did_you_mean_is_quick_and_finds_the_typo(bundled):
    book, _ = bundled
    assert book.did_you_mean("gtp-4o")[0] == "gpt-4o"
    assert book.did_you_mean("claude-sonet-4-5")[0] == "claude-sonnet-4-5"
    assert all(k.startswith("xai/") for k in book.did_you_mean("grok-4", "xai"))
    started = time.perf_counter()
    for i in range(100):
        book.did_you_mean(f"unknown-model-{i}-preview")
    assert time.perf_counter() - started < 2.0  # a few milliseconds each, on a loaded machine too
