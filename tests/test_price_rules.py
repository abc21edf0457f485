"""The verification rules as a pure function (`actors.prices.rules.plan`), and the fetch helpers that make a
feed a snapshot or a failed fetch: no daemon, no network."""

import msgspec
import pytest
from feeds import FeedServer, Route

from actors.prices import fetch as price_fetch
from actors.prices.rules import Fetch, Rules, drift, last_confirmed, plan
from budgetd.model import LongContext, PriceEntry
from budgetd.pricing import PriceBook, TierRules

GPT = PriceEntry(model="gpt-4o", provider="openai", input_per_mtok=2.5, output_per_mtok=10.0, cache_read_per_mtok=1.25,
                 source="litellm_bundled")
GEMINI = PriceEntry(model="gemini/gemini-2.5-pro", provider="gemini", input_per_mtok=1.25, output_per_mtok=10.0,
                    long_context=LongContext(threshold_tokens=200_000, input_per_mtok=2.5, output_per_mtok=15.0),
                    source="litellm_bundled")


def priced(entry: PriceEntry, **rates) -> PriceEntry:
    return msgspec.structs.replace(entry, **rates)


def run(current: list[PriceEntry], lead: list[PriceEntry], second: list[PriceEntry] = (),
        confirmed: list[PriceEntry] | None = None, rules: Rules = Rules()):
    """One refresh: `lead` from litellm, `second` from llm-prices, on a book of `current`."""
    book = {e.model: e for e in current}
    fetches = [Fetch("litellm", list(lead)), Fetch("llm_prices", list(second))]
    anchors = {e.model: e for e in (current if confirmed is None else confirmed)}
    return plan(book, anchors, set(), fetches, {}, rules, PriceBook(current), True)


def held(result) -> dict[str, list[str]]:
    return {e.data["model"]: e.data.get("terms") for e in result.events if e.kind == "price.held"}


# -- every term ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("change", [
    {"cache_read_per_mtok": 0.0},       # to zero
    {"cache_read_per_mtok": 999.0},     # up 800-fold
    {"cache_read_per_mtok": None},      # gone: the input rate would apply
    {"cache_write_per_mtok": 3.0},      # appears
])
def test_a_cache_rate_moving_alone_is_held(change):
    result = run([GPT], [priced(GPT, source="litellm", **change)])
    assert result.changes == {} and held(result) == {"gpt-4o": list(change)}


@pytest.mark.parametrize("long_context,term", [
    (LongContext(threshold_tokens=20_000, input_per_mtok=2.5, output_per_mtok=15.0), "long_context.threshold_tokens"),
    (LongContext(threshold_tokens=200_000, input_per_mtok=7.5, output_per_mtok=15.0), "long_context.input_per_mtok"),
    (LongContext(threshold_tokens=200_000, input_per_mtok=2.5, output_per_mtok=15.0, cache_read_per_mtok=0.5),
     "long_context.cache_read_per_mtok"),
])
def test_long_context_terms_are_judged(long_context, term):
    result = run([GEMINI], [priced(GEMINI, long_context=long_context)])
    assert result.changes == {} and held(result) == {GEMINI.model: [term]}


def test_appearing_or_disappearing_is_a_change_of_100_percent():
    assert drift(0.3, None) == drift(None, 0.3) == drift(0.3, 0.0) == 1.0
    assert drift(0.3, 0.3) == 0.0 and drift(0.0, 0.1) == float("inf")
    lenient = Rules(max_unconfirmed_change=1.5)
    assert run([GPT], [priced(GPT, cache_read_per_mtok=None)], rules=lenient).changes


def test_a_second_source_confirms_only_the_rates_it_gives():
    moved = priced(GPT, input_per_mtok=5.0, cache_read_per_mtok=2.5)
    input_only = PriceEntry(model="gpt-4o", provider="openai", input_per_mtok=5.0, output_per_mtok=10.0)
    assert held(run([GPT], [moved], [input_only])) == {"gpt-4o": ["cache_read_per_mtok"]}
    both = run([GPT], [moved], [priced(input_only, cache_read_per_mtok=2.4)])
    assert both.changes["gpt-4o"].cache_read_per_mtok == 2.5 and both.changes["gpt-4o"].verified


def test_a_second_source_disagreeing_on_any_rate_leaves_the_price_unverified():
    other = PriceEntry(model="gpt-4o", provider="openai", input_per_mtok=2.5, output_per_mtok=10.0,
                       cache_read_per_mtok=0.5)
    result = run([GPT], [GPT], [other])
    assert result.changes["gpt-4o"].verified is False
    assert [e.kind for e in result.events] == []  # same price: only the flag flips


# -- drift from the last confirmed price ----------------------------------------------------------------


def test_drift_is_measured_from_the_last_confirmed_price():
    first = run([GPT], [priced(GPT, input_per_mtok=1.375)])  # -45%, nobody else says anything
    step = first.changes["gpt-4o"]
    assert step.verified is False and last_confirmed([GPT, step]) is GPT
    second = run([step], [priced(GPT, input_per_mtok=0.756)], confirmed=[GPT])  # -45% again: -70% in total
    assert second.changes == {} and held(second) == {"gpt-4o": ["input_per_mtok"]}
    assert [e.data["confirmed"]["input_per_mtok"] for e in second.events] == [2.5]
    back = run([step], [priced(GPT, input_per_mtok=2.4)], confirmed=[GPT])  # near the confirmed price again
    assert back.changes["gpt-4o"].input_per_mtok == 2.4


def test_a_confirmed_price_is_the_new_anchor():
    agreed = run([GPT], [priced(GPT, input_per_mtok=1.375)], [priced(GPT, input_per_mtok=1.4)])
    step = agreed.changes["gpt-4o"]
    assert step.verified and last_confirmed([GPT, step]) is step
    assert run([step], [priced(GPT, input_per_mtok=0.756)], confirmed=[step]).changes


def test_a_second_source_agreeing_later_confirms_the_price():
    step = priced(GPT, input_per_mtok=1.375, verified=False)
    result = run([step], [step], [priced(GPT, input_per_mtok=1.375)], confirmed=[GPT])
    assert result.changes["gpt-4o"].verified is True and result.changes["gpt-4o"].input_per_mtok == 1.375


def test_the_last_confirmed_price_is_the_last_verified_version_else_the_first():
    a, b, c = (priced(GPT, input_per_mtok=p, verified=v) for p, v in ((1.0, True), (2.0, False), (3.0, False)))
    assert last_confirmed([a, b, c]) is a
    assert last_confirmed([b, c]) is b
    assert last_confirmed([a, b, priced(c, verified=True)]).input_per_mtok == 3.0


# -- takeovers -------------------------------------------------------------------------------------------


def test_a_new_key_that_the_book_resolves_elsewhere_is_held_until_a_second_source_agrees():
    rogue = priced(GPT, model="openai/gpt-4o", input_per_mtok=0.25, output_per_mtok=1.0)
    result = run([GPT], [GPT, rogue])
    assert result.changes == {} and held(result) == {"openai/gpt-4o": None}
    (event,) = result.events
    assert event.data["takes_over"] == "gpt-4o" and event.data["old"]["input_per_mtok"] == 2.5
    confirmed = run([GPT], [GPT, rogue], [priced(GPT, input_per_mtok=0.25, output_per_mtok=1.0)])
    assert confirmed.changes["openai/gpt-4o"].input_per_mtok == 0.25


def test_a_new_key_nothing_resolves_to_is_applied_unverified_until_a_second_source_agrees():
    rocket = PriceEntry(model="acme-rocket-1", provider="acme", input_per_mtok=1.0, output_per_mtok=2.0)
    result = run([GPT], [GPT, rocket])
    assert result.changes["acme-rocket-1"].verified is False and held(result) == {}
    agreed = run([GPT], [GPT, rocket], [priced(rocket, input_per_mtok=1.05)])
    assert agreed.changes["acme-rocket-1"].verified is True


def test_a_new_key_that_would_take_a_bare_names_requests_is_held():
    # `gemini-2.0-flash` is priced as vertex_ai's today; the maker's own key, once added, would take it.
    vertex = PriceEntry(model="vertex_ai/gemini-2.0-flash", provider="vertex_ai", input_per_mtok=0.15,
                        output_per_mtok=0.6)
    maker = PriceEntry(model="gemini/gemini-2.0-flash", provider="gemini", input_per_mtok=0.1, output_per_mtok=0.4)
    assert PriceBook([vertex]).resolve("gemini-2.0-flash").entry.model == "vertex_ai/gemini-2.0-flash"
    result = run([vertex], [vertex, maker])
    assert result.changes == {} and held(result) == {"gemini/gemini-2.0-flash": None}
    assert result.events[0].data["takes_over"] == "vertex_ai/gemini-2.0-flash"


def _openrouter(model: str, provider: str, **rates) -> PriceEntry:
    return PriceEntry(model=model, provider=provider, input_per_mtok=rates.get("i", 5.0),
                      output_per_mtok=rates.get("o", 20.0))


def test_a_feed_adds_and_changes_keys_of_its_own_namespace_only():
    own = _openrouter("openrouter/openai/gpt-4o", "openrouter")
    foreign = _openrouter("acme/rocket-9", "acme")  # not in OpenRouter's namespace: only ever a second quote
    book = [GPT]
    fetches = [Fetch("litellm", [GPT]), Fetch("openrouter", [own, foreign, _openrouter("gpt-4o", "openai", i=2.5,
                                                                                        o=10.0)])]
    result = plan({e.model: e for e in book}, {e.model: e for e in book}, set(), fetches, {}, Rules(),
                  PriceBook(book), True)
    added = result.changes["openrouter/openai/gpt-4o"]
    assert (added.source, added.provider, added.verified) == ("openrouter", "openrouter", False)
    assert "acme/rocket-9" not in result.changes and result.reports["openrouter"].applied == 1
    # The next refresh: the key is in the book, OpenRouter still leads it; a small step applies.
    book = [GPT, added]
    step = _openrouter("openrouter/openai/gpt-4o", "openrouter", i=5.5)
    again = plan({e.model: e for e in book}, {e.model: e for e in book}, set(),
                 [Fetch("litellm", [GPT]), Fetch("openrouter", [step])], {}, Rules(), PriceBook(book), True)
    assert again.changes["openrouter/openai/gpt-4o"].input_per_mtok == 5.5
    # A jump past max_unconfirmed_change with no second source is held, as for the primary.
    jump = _openrouter("openrouter/openai/gpt-4o", "openrouter", i=50.0)
    held_jump = plan({e.model: e for e in book}, {e.model: e for e in book}, set(),
                     [Fetch("litellm", [GPT]), Fetch("openrouter", [jump])], {}, Rules(), PriceBook(book), True)
    assert held_jump.changes == {} and held(held_jump) == {"openrouter/openai/gpt-4o": ["input_per_mtok"]}


# -- a feed is a snapshot or a failed fetch ----------------------------------------------------------------


def test_a_parser_that_raises_or_finds_no_usable_model_makes_a_failed_fetch():
    def broken():
        raise KeyError("prices")

    assert price_fetch.snapshot("x", "here", broken).error == "here: KeyError: 'prices'"
    empty = price_fetch.snapshot("x", "here", lambda: ([], ["a: input is out of range"]))
    assert empty.entries is None
    assert empty.error == "here: no usable model in the feed (1 refused, e.g. a: input is out of range)"


def test_an_entry_the_ledger_could_not_read_back_is_refused():
    long_name = priced(GPT, model="acme-rocket-1", provider="p" * 200)
    fetch = price_fetch.snapshot("x", "here", lambda: ([GPT, long_name], []))
    assert fetch.entries == [GPT] and fetch.refused[0].startswith("acme-rocket-1: Expected `str` of length <= 128")


def test_a_bundled_file_nested_too_deeply_is_a_failed_fetch(tmp_path):
    nested = tmp_path / "prices.json"
    nested.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    settings = price_fetch.PricesSettings(sources=["litellm_bundled"], urls={}, rules=Rules(), refresh_interval_s=1,
                                          aliases={}, overrides=[], bundled_file=nested)
    fetch = price_fetch.read_bundled(settings, TierRules())
    assert fetch.entries is None and "RecursionError" in fetch.error


@pytest.mark.anyio
async def test_no_exception_of_a_parser_escapes_its_feed(monkeypatch):
    def explode(data, tiers):
        raise RuntimeError("the parser broke")

    monkeypatch.setitem(price_fetch.NETWORK_SOURCES, "llm_prices", explode)
    with FeedServer() as feeds:
        feeds.break_("openrouter", Route(b"[" * 100_000 + b"]" * 100_000))
        settings = price_fetch.PricesSettings(
            sources=["litellm", "llm_prices", "openrouter"], urls={n: feeds.url(n) for n in feeds.paths},
            rules=Rules(), refresh_interval_s=1, aliases={}, overrides=[], fetch_timeout_s=5, retries=0)
        fetches, validators = await price_fetch.fetch_all(settings, TierRules(), {})
    by_source = {f.source: f for f in fetches}
    assert set(by_source) == {"litellm", "llm_prices", "openrouter"}
    assert len(by_source["litellm"].entries) == 15 and set(validators) == {"litellm"}
    assert by_source["llm_prices"].error.endswith("llm-prices.json: RuntimeError: the parser broke")
    assert "nested too deeply" in by_source["openrouter"].error
