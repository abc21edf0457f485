"""The budget assistant: grounded answers through litellm against a real OpenAI-compatible stand-in on
127.0.0.1, its own spend budgeted, and offline answers checked against sums computed here."""

import datetime as dt
import json

import pytest

from budgetd.client import SyncBudgetClient
from tests.conftest import FIXTURES, run_cli
from tests.llm import FakeLLM

UTC = dt.timezone.utc
KEY_ENV = "TEST_ASSISTANT_KEY"
#: The daemons here run on a Thursday afternoon, so "today", "yesterday" and "this week" all hold records.
THURSDAY = "2026-11-26T15:00:00Z"


@pytest.fixture
def llm():
    fake = FakeLLM()
    yield fake
    fake.close()


def seed(c: SyncBudgetClient, now: dt.datetime) -> list[dict]:
    """Two days of traffic before `now`: rhetor on gpt-4o dominates; each record's tokens are known here."""
    records = []
    for i in range(12):
        for component, model, tokens_in, tokens_out in (("rhetor", "gpt-4o", 9000, 800),
                                                        ("apollo", "claude-haiku-4-5", 3000, 300),
                                                        ("athena", "gpt-4o-mini", 2000, 200)):
            r = c.record(component=component, model=model, input_tokens=tokens_in + i, output_tokens=tokens_out,
                         ts=now - dt.timedelta(hours=2 + 4 * i))
            records.append({"component": component, "model": r.model, "input": tokens_in + i, "output": tokens_out,
                            "cost": r.cost_usd})
    return records


def test_offline_answers_name_the_top_spender_and_a_correct_saving(make_daemon):
    d = make_daemon(clock=THURSDAY)
    with SyncBudgetClient(d.socket) as c:
        records = seed(c, d.now())
        result = c.ask("where did the money go?")
        prices = {m: c.prices_get(m).price for m in {c2.model for c2 in result.facts.cheaper_models}}
    assert result.offline and result.why_offline == "no assistant.model is configured" and result.cost_usd == 0
    facts = result.facts
    assert facts.horizon == "the last 7 days"
    assert facts.by_component[0].name == "rhetor"
    assert facts.totals.cost_usd == pytest.approx(sum(r["cost"] for r in records), abs=1e-9)
    assert "Top spender: rhetor" in result.answer
    assert facts.cheaper_models, "gpt-4o has cheaper models with its capabilities in the book"
    for alt in facts.cheaper_models:
        mine = [r for r in records if r["model"] == alt.instead_of]
        p = prices[alt.model]
        would = round(sum(r["input"] for r in mine) * p.input_per_mtok / 1e6
                      + sum(r["output"] for r in mine) * p.output_per_mtok / 1e6, 9)
        actual = round(sum(r["cost"] for r in mine), 9)
        assert alt.actual_cost_usd == pytest.approx(actual, abs=2e-9)
        assert alt.would_cost_usd == pytest.approx(would, abs=2e-9)
        assert alt.saving_usd == pytest.approx(actual - would, abs=4e-9) and alt.saving_usd > 0
    best = facts.cheaper_models[0]
    assert best.instead_of == "gpt-4o"
    switch = [r for r in facts.recommendations if r.kind == "switch_model"]
    assert switch and switch[0].saving_usd == best.saving_usd and best.model in result.answer

    out = run_cli("ask", "why", "did", "spend", "go", "up", "yesterday?", socket=d.socket)
    assert out.returncode == 0, out.stderr
    assert "Yesterday you spent" in out.stdout and "offline answer" in out.stdout
    out = run_cli("ask", "--json", "how much this week?", socket=d.socket)
    document = json.loads(out.stdout)
    assert document["facts"]["horizon"] == "this week" and document["offline"] is True


def test_the_model_answers_from_the_facts_and_its_cost_is_recorded(make_daemon, llm, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-123")
    d = make_daemon(f'[assistant]\nmodel = "openai/gpt-4o-mini"\napi_base = "{llm.url}"\n'
                    f'api_key_env = "{KEY_ENV}"\ntimeout = "20s"\n', clock=THURSDAY)
    with SyncBudgetClient(d.socket) as c:
        seed(c, d.now())
        result = c.ask("what did we spend on this week?")
        price = c.prices_get("gpt-4o-mini").price
        own = c.usage_list(filters={"component": "budgetd.assistant"}).records
    assert not result.offline and result.answer == llm.answer and result.model == "openai/gpt-4o-mini"
    sent = llm.requests[-1]
    assert sent["path"].endswith("/chat/completions") and sent["auth"] == "Bearer sk-test-123"
    assert sent["body"]["model"] == "gpt-4o-mini"
    prompt = "\n".join(m["content"] for m in sent["body"]["messages"])
    assert "what did we spend on this week?" in prompt
    facts = json.loads(prompt.split("Facts:\n", 1)[1])
    assert facts["by_component"][0]["name"] == "rhetor" and facts["totals"]["requests"] == 36
    assert "cite" in sent["body"]["messages"][0]["content"]

    assert len(own) == 1
    r = own[0]
    assert (r.input_tokens, r.output_tokens, r.cache_read_tokens) == (1300, 120, 200)
    want = round(1300 * price.input_per_mtok / 1e6 + 120 * price.output_per_mtok / 1e6
                 + 200 * price.cache_read_per_mtok / 1e6, 9)
    assert r.cost_usd == pytest.approx(want, abs=1e-9) and result.cost_usd == r.cost_usd
    assert r.reservation_id and r.task_type == "ask"


def test_a_budget_on_the_assistant_and_a_failing_model_fall_back_offline(make_daemon, llm, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-123")
    d = make_daemon(f'[assistant]\nmodel = "openai/gpt-4o-mini"\napi_base = "{llm.url}"\n'
                    f'api_key_env = "{KEY_ENV}"\ntimeout = "5s"\n', clock=THURSDAY)
    with SyncBudgetClient(d.socket) as c:
        seed(c, d.now())
        llm.status = 503
        failed = c.ask("what happened today?")
        assert failed.offline and "model call failed" in failed.why_offline
        assert "Today you spent" in failed.answer
        assert len(llm.requests) >= 1
        assert all(s.reserved_usd == 0 for s in c.status().budgets)  # the hold was released
        assert not c.usage_list(filters={"component": "budgetd.assistant"}).records

        llm.status = 200
        c.budget_set(name="assistant-cap", scope={"component": "budgetd.assistant"}, period="daily",
                     limit_usd=0.000001, policy="hard")
        asked_before = len(llm.requests)
        capped = c.ask("what happened today?")
        assert capped.offline and "budget" in capped.why_offline and "assistant-cap" in capped.why_offline
        assert len(llm.requests) == asked_before  # the model was not called
        assert capped.facts.by_component[0].name == "rhetor"


def test_horizons_and_bad_questions(make_daemon):
    d = make_daemon()
    with SyncBudgetClient(d.socket) as c:
        for question, label in (("today?", "today"), ("yesterday", "yesterday"), ("last month please", "last month"),
                                ("in the past 3 days", "the last 3 days"), ("last 12 hours", "the last 12 hours")):
            assert c.ask(question).facts.horizon == label
        empty = c.ask("anything?")
        assert empty.facts.totals.requests == 0 and "Nothing was recorded" in empty.answer
    out = run_cli("ask", "   ", socket=d.socket)
    assert out.returncode == 1 and "ask a question" in out.stderr
    from tests.conftest import RawConn

    with RawConn(d.socket) as conn:
        answer = conn.call({"op": "ask", "id": 1, "question": ""})
        assert answer["error"]["code"] == "invalid" and answer["error"]["field"] == "$.question"
        assert conn.call({"op": "ask", "id": 2, "question": "x" * 5000})["error"]["field"] == "$.question"


def test_advice_names_its_key_compares_like_with_like_and_needs_history(make_daemon, tmp_path):
    book = json.loads((FIXTURES / "litellm_prices.json").read_text())
    for variant in ("gpt-4o-mini-search-preview", "gpt-4o-audio-preview", "gpt-4o-realtime-preview"):
        book[variant] = {**{k: v for k, v in book["gpt-4o"].items() if not k.startswith(("deprecation", "cache"))},
                         "input_cost_per_token": 1e-8 * (len(variant) - 20), "output_cost_per_token": 1e-8}
    book_file = tmp_path / "book.json"
    book_file.write_text(json.dumps(book))
    d = make_daemon(clock=THURSDAY, start=False)
    d.config_file.write_text(d.config_file.read_text().replace(
        str(FIXTURES / "litellm_prices.json"), str(book_file)))
    d.start()
    with SyncBudgetClient(d.socket) as c:
        c.budget_set(name="per-component", period="daily", limit_usd=50.0, policy="warn", scope={"component": "*"})
        seed(c, d.now())
        week = c.ask("where did the money go?").facts
        today = c.ask("what happened today?")
        hours = c.ask("what happened in the last 12 hours?")
    alternatives = {alt.model for alt in week.cheaper_models}
    # The variants are the cheapest entries with gpt-4o's capabilities, yet none is a general replacement.
    assert alternatives and not alternatives & {"gpt-4o-mini-search-preview", "gpt-4o-audio-preview",
                                                "gpt-4o-realtime-preview"}, alternatives
    lower = [r for r in today.facts.recommendations if r.kind == "lower_limit"]
    assert len(lower) == 1 and "its busiest, component=rhetor" in lower[0].message, lower
    assert not today.facts.budgets_at_risk  # every key is far under its $50
    # The advised limit is above what the busiest key is heading for, so taking it denies no one.
    advised = float(lower[0].message.split("a limit near $", 1)[1].split()[0].replace(",", ""))
    rhetor = next(s for s in today.facts.by_component if s.name == "rhetor")
    assert advised > rhetor.cost_usd
    # Nine calls in the 12 hours before that: too few to speak of a change.
    assert hours.facts.change is None and hours.facts.previous.requests < 20
    assert "not enough history in the span before to compare" in hours.answer and "%" not in hours.answer.split(
        "\n")[0], hours.answer
