"""Live prices from real HTTP feeds on 127.0.0.1: verification, versions, overrides, failures."""

import pytest
from conftest import run_cli
from feeds import Route, report_of, litellm_price, llm_prices_price

from budgetd.client import BudgetError, SyncBudgetClient


def test_a_moderate_rise_in_the_primary_is_applied(priced, feeds):
    with SyncBudgetClient(priced.socket) as c:
        before = c.prices_get("gpt-4o").price
        data = feeds.edit("litellm")
        litellm_price(data, "gpt-4o", input_per_token=3.25e-06)  # +30%
        feeds.publish("litellm", data)
        report = c.prices_refresh(timeout=60)
        assert report_of(report, "litellm").applied == 1
        after = c.prices_get("gpt-4o").price
        assert (before.input_per_mtok, after.input_per_mtok) == (2.5, 3.25)
        assert after.version == report.version > before.version
        diff = next(d for d in report.changes if d.model == "gpt-4o")
        assert (diff.status, diff.old_input_per_mtok, diff.new_input_per_mtok) == ("changed", 2.5, 3.25)
        # llm-prices and openrouter still say 2.5: applied, but not verified
        assert after.verified is False


def test_a_fivefold_rise_is_held_until_a_second_source_agrees(priced, feeds):
    with SyncBudgetClient(priced.socket) as c:
        data = feeds.edit("litellm")
        litellm_price(data, "gpt-4o-mini", input_per_token=7.5e-07)  # 0.15 -> 0.75 per Mtok: 5x
        feeds.publish("litellm", data)
        held = c.prices_refresh(timeout=60)
        assert report_of(held, "litellm").held == 1
        assert c.prices_get("gpt-4o-mini").price.input_per_mtok == 0.15
        assert any(d.model == "gpt-4o-mini" and d.status == "held" for d in held.changes)
        assert "price.held" in priced.log.read_text()

        confirming = feeds.edit("llm_prices")
        llm_prices_price(confirming, "gpt-4o-mini", 0.75)
        feeds.publish("llm_prices", confirming)
        applied = c.prices_refresh(timeout=60)
        assert report_of(applied, "litellm").applied == 1
        price = c.prices_get("gpt-4o-mini").price
        assert price.input_per_mtok == 0.75
        history = c.prices_history("gpt-4o-mini").versions
        assert [v.input_per_mtok for v in history] == [0.15, 0.75]
        assert history[0].effective_to == history[1].effective_from and history[1].effective_to is None


def test_insane_prices_are_refused(priced, feeds):
    with SyncBudgetClient(priced.socket) as c:
        data = feeds.edit("litellm")
        litellm_price(data, "gpt-5", input_per_token=0.0)              # free overnight: a 100% change, held
        litellm_price(data, "o3", input_per_token=-2e-06)              # negative: rejected
        litellm_price(data, "gpt-4.1", output_per_token=5.0)           # $5M per Mtok: rejected
        feeds.publish("litellm", data)
        router = feeds.edit("openrouter")
        router["data"][0]["pricing"]["prompt"] = "NaN"                 # not a number: refused
        feeds.publish("openrouter", router)
        report = c.prices_refresh(timeout=60)
        assert report_of(report, "litellm").rejected == 2
        assert report_of(report, "litellm").held == 1
        assert report_of(report, "openrouter").rejected == 1
        assert c.prices_get("gpt-5").price.input_per_mtok == 1.25
        assert c.prices_get("o3").price.input_per_mtok == 2.0
        assert c.prices_get("gpt-4.1").price.output_per_mtok == 8.0


def test_a_truncated_snapshot_is_rejected_whole(priced, feeds):
    with SyncBudgetClient(priced.socket) as c:
        data = feeds.edit("litellm")
        kept = {k: v for k, v in data.items() if k in ("sample_spec", "gpt-4o")}
        kept["gpt-4o"]["input_cost_per_token"] = 2.6e-06
        feeds.publish("litellm", kept)
        report = c.prices_refresh(timeout=60)
        lite = report_of(report, "litellm")
        assert lite.applied == 0 and lite.rejected == 1 and "under half" in lite.error
        assert c.prices_get("gpt-4o").price.input_per_mtok == 2.5
        assert len(c.prices_list().prices) >= 14


@pytest.mark.parametrize("route,needle", [
    (Route(b'{"error": "boom"}', status=500), "HTTP 500"),
    (Route(b"<!DOCTYPE html><html><body>Just a moment...</body></html>", content_type="text/html"), "HTML"),
    (Route(b'{"gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost'), "not JSON"),
    (Route(b"{}", delay=3.0), "no complete answer"),
    (Route(b"", stream_bytes=50 << 20), "cap"),
])
def test_a_broken_feed_fails_alone(priced, feeds, route, needle):
    with SyncBudgetClient(priced.socket) as c:
        before = c.prices_get("gpt-4o").price
        feeds.break_("litellm", route)
        report = c.prices_refresh(timeout=60)
        lite = report_of(report, "litellm")
        assert not lite.fetched and needle in lite.error
        assert report_of(report, "llm_prices").fetched
        assert c.prices_get("gpt-4o").price == before
        recorded = c.record(component="x", model="gpt-4o", input_tokens=1000)
        assert recorded.cost_usd == 2_500_000 / 1e9
        status = c.status().prices
        lite_status = next(s for s in status.sources if s.source == "litellm")
        assert needle in lite_status.last_error and lite_status.last_success is not None


def test_all_sources_down_keeps_the_last_book(make_daemon, feeds):
    d = make_daemon(feeds.config())
    with SyncBudgetClient(d.socket) as c:
        c.prices_refresh(timeout=60)
        feeds.__exit__()
        report = c.prices_refresh(timeout=60)
        assert not any(s.fetched for s in report.sources if s.source != "litellm_bundled")
        assert c.prices_get("claude-sonnet-4-5").price.output_per_mtok == 15.0
        assert c.record(component="x", model="claude-sonnet-4-5", output_tokens=1000).cost_usd == 0.015


def test_offline_start_with_network_sources_says_they_failed(make_daemon):
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens
    d = make_daemon(
        "[pricing]\n"
        'sources = ["litellm_bundled", "litellm", "llm_prices", "openrouter"]\n'
        'fetch_timeout = "1s"\nretries = 0\n'
        f'[pricing.urls]\nlitellm = "{closed}/a"\nllm_prices = "{closed}/b"\nopenrouter = "{closed}/c"\n'
    )
    with SyncBudgetClient(d.socket) as c:
        assert c.record(component="x", model="gpt-4o", input_tokens=1000).cost_usd == 0.0025
        report = c.prices_refresh(timeout=60)
        failed = {s.source: s.error for s in report.sources if not s.fetched}
        assert set(failed) == {"litellm", "llm_prices", "openrouter"}
        assert all("ConnectError" in e or "refused" in e.lower() for e in failed.values()), failed
        status = c.status().prices
        assert status.models == 15
        assert next(s for s in status.sources if s.source == "litellm_bundled").last_error is None
    text = run_cli("status", socket=d.socket).stdout
    assert "litellm          failed:" in text and "litellm_bundled  ok, 15 models" in text


def test_overrides_survive_refresh_and_unset_restores(priced, feeds):
    with SyncBudgetClient(priced.socket) as c:
        c.prices_set(model="gpt-4o", input_per_mtok=1.0, output_per_mtok=2.0)
        data = feeds.edit("litellm")
        litellm_price(data, "gpt-4o", input_per_token=2.7e-06)
        feeds.publish("litellm", data)
        c.prices_refresh(timeout=60)
        price = c.prices_get("gpt-4o").price
        assert (price.source, price.input_per_mtok, price.output_per_mtok) == ("override", 1.0, 2.0)
        assert price.provider == "openai"  # an override of a known key keeps its provider
        assert c.record(component="o", model="gpt-4o", input_tokens=1_000_000).cost_usd == 1.0
        assert c.record(component="o", model="gpt-4o", provider="openai", input_tokens=1_000_000).cost_usd == 1.0
        assert c.prices_unset("gpt-4o") is True
        assert c.prices_unset("gpt-4o") is False
        restored = c.prices_get("gpt-4o").price
        assert restored.source != "override" and restored.input_per_mtok == 2.5
        # a brand-new model priced only by an override
        c.prices_set(model="acme/rocket-1", provider="acme", input_per_mtok=3, output_per_mtok=9)
        assert c.record(component="o", model="acme/rocket-1", input_tokens=1_000_000).priced
        assert c.prices_unset("acme/rocket-1")
        assert not c.record(component="o", model="acme/rocket-1", input_tokens=1).priced
        with pytest.raises(BudgetError) as info:
            c.prices_set(model="bad", input_per_mtok=5000.0, output_per_mtok=1.0)
        assert info.value.code == "invalid" and "max_per_mtok" in info.value.message


def test_records_keep_the_price_they_were_priced_with(priced, feeds):
    with SyncBudgetClient(priced.socket) as c:
        old = c.record(component="v", model="claude-haiku-4-5", input_tokens=1_000_000)
        data = feeds.edit("litellm")
        litellm_price(data, "claude-haiku-4-5", input_per_token=1.2e-06)  # +20%
        feeds.publish("litellm", data)
        c.prices_refresh(timeout=60)
        new = c.record(component="v", model="claude-haiku-4-5", input_tokens=1_000_000)
        assert (old.cost_usd, new.cost_usd) == (1.0, 1.2)
        assert new.price_version > old.price_version
        stored = {r.record_id: r for r in c.usage_list(filters={"component": "v"}).records}
        assert stored[old.record_id].cost_usd == 1.0 and stored[old.record_id].price_version == old.price_version
    priced.stop()
    priced.start()
    with SyncBudgetClient(priced.socket) as c:  # the applied book is reloaded, not rebuilt from the bundle
        assert c.prices_get("claude-haiku-4-5").price.input_per_mtok == 1.2


def test_unchanged_feeds_are_not_downloaded_again(priced, feeds):
    with SyncBudgetClient(priced.socket) as c:
        c.prices_refresh(timeout=60)
        assert feeds.not_modified.get("/litellm.json", 0) >= 1


def test_cli_refresh_set_history(priced, feeds):
    data = feeds.edit("litellm")
    litellm_price(data, "claude-sonnet-4-5", input_per_token=3.3e-06)
    feeds.publish("litellm", data)
    r = run_cli("prices", "refresh", socket=priced.socket)
    assert r.returncode == 0, r.stderr
    assert "claude-sonnet-4-5" in r.stdout and "3 -> 3.3 (+10%)" in r.stdout
    r = run_cli("prices", "set", "claude-sonnet-4-5", "--input", "2", "--output", "10", socket=priced.socket)
    assert r.returncode == 0 and "override set" in r.stdout and "was: in 3.3" in r.stdout
    r = run_cli("prices", "history", "claude-sonnet-4-5", socket=priced.socket)
    assert r.returncode == 0 and "override" in r.stdout and r.stdout.count("\n") >= 5
    r = run_cli("prices", "unset", "claude-sonnet-4-5", socket=priced.socket)
    assert r.returncode == 0
    r = run_cli("prices", "set", "x", "--input", "-1", "--output", "1", socket=priced.socket)
    assert r.returncode == 2
