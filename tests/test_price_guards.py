"""What a hostile feed could do to the price book, through a real daemon and real feeds on 127.0.0.1:
change a rate other than input and output, walk a price in small steps, add a key that takes over a
model's requests, answer something that is not a snapshot, or break its parser."""

import pytest
from feeds import Route, report_of, litellm_price, llm_prices_price, openrouter_price

from budgetd.client import SyncBudgetClient


def status_of(client, source):
    return next(s for s in client.status().prices.sources if s.source == source)


def held_events(client) -> dict[str, dict]:
    """The `price.held` events the daemon has published so far (replayed from its recent events), by model."""
    held = {}
    try:
        for event in client.subscribe(["price"], after=0, idle_timeout=0.5):
            if event.event == "price.held":
                held[event.data["model"]] = event.data
    except TimeoutError:
        pass
    return held


# -- every rate is judged -------------------------------------------------------------------------


def test_every_rate_of_an_entry_is_judged_not_only_input_and_output(priced, feeds):
    models = ["claude-sonnet-4-5", "gpt-4o", "claude-haiku-4-5", "gemini/gemini-2.5-pro"]
    with SyncBudgetClient(priced.socket) as c:
        before = {m: c.prices_get(m).price for m in models}
        data = feeds.edit("litellm")
        data["claude-sonnet-4-5"]["cache_read_input_token_cost"] = 0.0      # 0.3 -> 0 per Mtok
        data["gpt-4o"]["cache_read_input_token_cost"] = 9.99e-04            # 1.25 -> 999 per Mtok
        del data["claude-haiku-4-5"]["cache_creation_input_token_cost"]     # 1.25 -> absent
        data["gemini/gemini-2.5-pro"]["input_cost_per_token_above_200k_tokens"] = 7.5e-06  # long context: 2.5 -> 7.5
        feeds.publish("litellm", data)
        report = c.prices_refresh(timeout=60)
        assert report_of(report, "litellm").held == 4 and report_of(report, "litellm").applied == 0
        assert {d.model for d in report.changes if d.status == "held"} == set(models)
        assert {m: c.prices_get(m).price for m in models} == before
        assert c.record(component="x", model="claude-sonnet-4-5", cache_read_tokens=1_000_000).cost_usd == 0.3
        held = held_events(c)
    assert {m: held[m]["terms"] for m in models} == {
        "claude-sonnet-4-5": ["cache_read_per_mtok"], "gpt-4o": ["cache_read_per_mtok"],
        "claude-haiku-4-5": ["cache_write_per_mtok"], "gemini/gemini-2.5-pro": ["long_context.input_per_mtok"]}
    assert (held["gpt-4o"]["old"]["cache_read_per_mtok"], held["gpt-4o"]["new"]["cache_read_per_mtok"]) == (1.25, 999.0)
    assert "cache_write_per_mtok" not in held["claude-haiku-4-5"]["new"]


def test_a_cache_rate_change_is_applied_when_a_second_source_agrees_on_that_rate(priced, feeds):
    with SyncBudgetClient(priced.socket) as c:
        data = feeds.edit("litellm")
        data["gpt-4o"]["cache_read_input_token_cost"] = 5e-07               # 1.25 -> 0.5 per Mtok
        feeds.publish("litellm", data)
        assert report_of(c.prices_refresh(timeout=60), "litellm").held == 1
        router = feeds.edit("openrouter")
        openrouter_price(router, "openai/gpt-4o", input_cache_read=5e-07)   # openrouter agrees on that rate
        feeds.publish("openrouter", router)
        report = c.prices_refresh(timeout=60)
        assert report_of(report, "litellm").applied == 1
        price = c.prices_get("gpt-4o").price
        # llm-prices still says 1.25 for a cached input token: applied, not verified
        assert (price.cache_read_per_mtok, price.input_per_mtok, price.verified) == (0.5, 2.5, False)


# -- drift from the last confirmed price ------------------------------------------------------------


def test_a_walk_of_small_cuts_is_held_once_it_drifts_past_the_limit_across_a_restart(priced, feeds):
    cuts = [1.375e-06, 7.56e-07, 4.16e-07, 2.29e-07, 1.26e-07, 6.9e-08]  # each about -45%: 2.5 -> 0.069 per Mtok
    with SyncBudgetClient(priced.socket) as c:
        data = feeds.edit("litellm")
        litellm_price(data, "gpt-4o", input_per_token=cuts[0])
        feeds.publish("litellm", data)
        assert report_of(c.prices_refresh(timeout=60), "litellm").applied == 1
        assert c.prices_get("gpt-4o").price.input_per_mtok == 1.375
    priced.stop()
    priced.start()  # the last confirmed price (2.5) comes back from the ledger
    with SyncBudgetClient(priced.socket) as c:
        c.prices_refresh(timeout=60)  # the refresh a start begins is over: it must not see the next cut first
        for cut in cuts[1:]:
            litellm_price(data, "gpt-4o", input_per_token=cut)
            feeds.publish("litellm", data)
            report = c.prices_refresh(timeout=60)
            assert report_of(report, "litellm").held == 1, cut
            assert c.prices_get("gpt-4o").price.input_per_mtok == 1.375
        # the other sources confirm the second step: it applies and is the new confirmed price
        litellm_price(data, "gpt-4o", input_per_token=cuts[1])
        feeds.publish("litellm", data)
        cheaper = feeds.edit("llm_prices")
        llm_prices_price(cheaper, "gpt-4o", 0.756)
        feeds.publish("llm_prices", cheaper)
        router = feeds.edit("openrouter")
        openrouter_price(router, "openai/gpt-4o", prompt=7.56e-07)
        feeds.publish("openrouter", router)
        assert report_of(c.prices_refresh(timeout=60), "litellm").applied == 1
        history = c.prices_history("gpt-4o").versions
        assert [(v.input_per_mtok, v.verified) for v in history] == [(2.5, True), (1.375, False), (0.756, True)]
        held = held_events(c)["gpt-4o"]
    assert [held[k]["input_per_mtok"] for k in ("confirmed", "old", "new")] == [2.5, 1.375, 0.069]


# -- a new key that would take over a model's requests ---------------------------------------------------


def test_a_new_key_that_would_take_over_a_models_requests_is_held_until_confirmed(priced, feeds):
    with SyncBudgetClient(priced.socket) as c:
        c.budget_set(name="gpt4o-cap", period="daily", limit_usd=100, policy="hard", scope={"model": "gpt-4o"})
        data = feeds.edit("litellm")
        data["openai/gpt-4o"] = dict(data["gpt-4o"], input_cost_per_token=2.5e-07, output_cost_per_token=1e-06)
        data["gpt-4o-2024-11-20"] = dict(data["gpt-4o"])  # takes over that name too, but the other feeds agree
        data["acme-rocket-1"] = {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
                                 "litellm_provider": "acme", "mode": "chat"}  # nothing resolves to it today
        feeds.publish("litellm", data)
        report = c.prices_refresh(timeout=60)
        lite = report_of(report, "litellm")
        assert (lite.held, lite.applied) == (1, 2)
        assert {(d.model, d.status) for d in report.changes} == {
            ("openai/gpt-4o", "held"), ("gpt-4o-2024-11-20", "new"), ("acme-rocket-1", "new")}
        got = c.prices_get("openai/gpt-4o")
        assert (got.price.model, got.resolved_from) == ("gpt-4o", "openai/gpt-4o")
        recorded = c.record(component="x", model="openai/gpt-4o", input_tokens=1000)
        assert (recorded.model, recorded.cost_usd) == ("gpt-4o", 0.0025)
        assert "gpt4o-cap" in {b.budget for b in recorded.budgets}
        assert c.prices_get("gpt-4o-2024-11-20").price.model == "gpt-4o-2024-11-20"
        assert c.prices_get("acme-rocket-1").price.input_per_mtok == 1.0
        held = held_events(c)["openai/gpt-4o"]
    assert held["takes_over"] == "gpt-4o"
    assert (held["old"]["input_per_mtok"], held["new"]["input_per_mtok"]) == (2.5, 0.25)


# -- only a snapshot of the expected shape counts as fetched ------------------------------------------


@pytest.mark.parametrize("source,body,needle", [
    ("litellm", b"null", "JSON object of model -> spec"),
    ("litellm", b"[1, 2, 3]", "JSON object of model -> spec"),
    ("litellm", b'{"sample_spec": {"input_cost_per_token": 0}}', "no usable model"),
    ("llm_prices", b'{"updated_at": "2026-11-20"}', "`prices` list"),
    ("llm_prices", b'{"prices": [{"id": 5}, "gpt-4o"]}', "no usable model"),
    ("openrouter", b"null", "`data` list"),
    ("openrouter", b'{"data": []}', "no usable model"),
])
def test_a_feed_that_is_not_a_snapshot_of_its_shape_is_a_failed_fetch(priced, feeds, source, body, needle):
    path = feeds.paths[source]
    with SyncBudgetClient(priced.socket) as c:
        before, answered_304 = status_of(c, source), feeds.not_modified.get(path, 0)
        feeds.break_(source, Route(body))
        for _ in range(2):  # and again: the failed feed is not taken for the last good one ("304 Not Modified")
            report = c.prices_refresh(timeout=60)
            failed = report_of(report, source)
            assert not failed.fetched and needle in failed.error
            after = status_of(c, source)
            assert (after.models, after.last_success) == (before.models, before.last_success)
            assert needle in after.last_error
        assert c.prices_get("gpt-4o").price.input_per_mtok == 2.5
    assert feeds.not_modified.get(path, 0) == answered_304


# -- one bad feed never affects another ------------------------------------------------------------


def test_a_feed_nested_too_deeply_fails_alone(priced, feeds):
    with SyncBudgetClient(priced.socket) as c:
        feeds.break_("llm_prices", Route(b"[" * 100_000 + b"]" * 100_000))
        data = feeds.edit("litellm")
        litellm_price(data, "gpt-4o", input_per_token=3.25e-06)  # +30%
        feeds.publish("litellm", data)
        report = c.prices_refresh(timeout=60)
        nested = report_of(report, "llm_prices")
        assert not nested.fetched and "nested too deeply" in nested.error
        assert report_of(report, "litellm").applied == 1 and report_of(report, "openrouter").fetched
        assert c.prices_get("gpt-4o").price.input_per_mtok == 3.25


def test_numbers_no_parser_can_convert_refuse_their_model_not_the_refresh(priced, feeds):
    with SyncBudgetClient(priced.socket) as c:
        data = feeds.edit("litellm")
        litellm_price(data, "o3", input_per_token=10**400)  # beyond any float
        feeds.publish("litellm", data)
        prices = feeds.edit("llm_prices")
        llm_prices_price(prices, "gpt-5", 10**400)
        feeds.publish("llm_prices", prices)
        router = feeds.edit("openrouter")
        router["data"][0]["pricing"]["prompt"] = "1e999999999"  # beyond what Decimal holds
        feeds.publish("openrouter", router)
        report = c.prices_refresh(timeout=60)
        for source in ("litellm", "llm_prices", "openrouter"):
            assert report_of(report, source).fetched and report_of(report, source).rejected == 1, source
        assert c.prices_get("o3").price.input_per_mtok == 2.0


def test_a_model_the_ledger_could_not_read_back_is_refused(priced, feeds):
    with SyncBudgetClient(priced.socket) as c:
        data = feeds.edit("litellm")
        data["acme-rocket-1"] = {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
                                 "litellm_provider": "p" * 200}  # provider names are at most 128 characters
        feeds.publish("litellm", data)
        report = c.prices_refresh(timeout=60)
        assert report_of(report, "litellm").rejected == 1 and report_of(report, "litellm").applied == 0
    priced.stop()
    priced.start()  # the ledger holds nothing it cannot read back
    with SyncBudgetClient(priced.socket) as c:
        assert c.prices_get("gpt-4o").price.input_per_mtok == 2.5
