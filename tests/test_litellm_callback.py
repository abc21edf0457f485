"""litellm apps budgeted with one line, against a real OpenAI-compatible stand-in on 127.0.0.1."""

import os
import time

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402

from budgetd.client import BudgetDenied, SyncBudgetClient  # noqa: E402
from budgetd.integrations.litellm import BudgetCallback, normalise_usage  # noqa: E402
from tests.llm import FakeLLM  # noqa: E402

MESSAGES = [{"role": "user", "content": "Summarise the quarterly report in three lines."}]


@pytest.fixture
def llm():
    fake = FakeLLM(answer="Revenue up. Costs down. Margin better.", prompt_tokens=1200, completion_tokens=40,
                   cached_tokens=1000)
    yield fake
    fake.close()


@pytest.fixture
def callback(daemon):
    cb = BudgetCallback(component="report-app", socket=str(daemon.socket))
    litellm.callbacks = [cb]
    yield cb
    litellm.callbacks = []


def wait_for_records(daemon, n: int, component: str | None = None, timeout: float = 15.0) -> list:
    deadline = time.monotonic() + timeout
    with SyncBudgetClient(daemon.socket) as c:
        while time.monotonic() < deadline:
            records = c.usage_list(filters={"component": component} if component else None, limit=100).records
            if len(records) >= n:
                return records
            time.sleep(0.05)
    raise AssertionError(f"{n} records did not arrive")


def expected_cost(daemon, model: str, usage: dict) -> float:
    with SyncBudgetClient(daemon.socket) as c:
        p = c.prices_get(model).price
    return round((usage["input_tokens"] * p.input_per_mtok + usage["output_tokens"] * p.output_per_mtok
                  + usage["cache_read_tokens"] * p.cache_read_per_mtok) / 1e6, 9)


def test_usage_is_normalised_from_each_provider_convention():
    # OpenAI: prompt_tokens include the cached ones.
    assert normalise_usage({"prompt_tokens": 1200, "completion_tokens": 40,
                            "prompt_tokens_details": {"cached_tokens": 1000}}) == {
        "input_tokens": 200, "output_tokens": 40, "cache_read_tokens": 1000, "cache_write_tokens": 0}
    # Anthropic through litellm: reads and writes of the cache are reported apart (and counted in prompt_tokens).
    assert normalise_usage({"prompt_tokens": 5300, "completion_tokens": 10, "cache_read_input_tokens": 5000,
                            "cache_creation_input_tokens": 200}) == {
        "input_tokens": 100, "output_tokens": 10, "cache_read_tokens": 5000, "cache_write_tokens": 200}


def test_sync_async_and_streamed_calls_are_recorded_with_their_cost(daemon, llm, callback):
    common = {"model": "openai/gpt-4o-mini", "api_base": llm.url, "api_key": "sk-test", "messages": MESSAGES}
    response = litellm.completion(**common, metadata={"context_id": "q3", "task_type": "summarise"})
    assert response.choices[0].message.content == llm.answer
    records = wait_for_records(daemon, 1)
    r = records[0]
    assert (r.component, r.model, r.provider) == ("report-app", "gpt-4o-mini", "openai")
    assert (r.input_tokens, r.output_tokens, r.cache_read_tokens) == (200, 40, 1000)
    assert (r.context_id, r.task_type) == ("q3", "summarise")
    assert r.cost_usd == pytest.approx(expected_cost(daemon, "gpt-4o-mini", {
        "input_tokens": 200, "output_tokens": 40, "cache_read_tokens": 1000}), abs=1e-9)

    import asyncio

    async def in_an_app() -> list:
        await litellm.acompletion(**common, metadata={"component": "async-part"})
        # litellm logs an async call from a task of the running loop: the app's loop lives on.
        return await asyncio.to_thread(wait_for_records, daemon, 1, "async-part")

    assert asyncio.run(in_an_app())[0].output_tokens == 40

    stream = litellm.completion(**common, stream=True, stream_options={"include_usage": True},
                                metadata={"component": "streamer"})
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == llm.answer
    streamed = wait_for_records(daemon, 1, component="streamer")
    assert len(streamed) == 1 and streamed[0].cost_usd > 0  # never $0 for a streamed call
    assert (streamed[0].input_tokens, streamed[0].output_tokens) == (200, 40)
    assert callback.flush(5)


def test_a_failed_call_records_nothing_and_errors_stay_the_callers(daemon, llm, callback):
    llm.status = 500
    with pytest.raises(Exception) as info:
        litellm.completion(model="openai/gpt-4o-mini", api_base=llm.url, api_key="sk-test", messages=MESSAGES,
                           num_retries=0)
    assert not isinstance(info.value, BudgetDenied)
    assert callback.flush(5)
    with SyncBudgetClient(daemon.socket) as c:
        assert c.usage_list().records == []


def test_admission_denies_when_a_hard_budget_is_spent(daemon, llm, callback):
    with SyncBudgetClient(daemon.socket) as c:
        c.budget_set(name="app-cap", scope={"component": "report-app"}, period="daily", limit_usd=0.0001,
                     policy="hard")
    common = {"model": "openai/gpt-4o-mini", "api_base": llm.url, "api_key": "sk-test", "messages": MESSAGES,
              "max_tokens": 100}
    first = callback.completion(**common)  # the first small call fits
    assert first.choices[0].message.content == llm.answer
    records = wait_for_records(daemon, 1)
    assert records[0].reservation_id  # committed to its reservation
    calls = len(llm.requests)
    for _ in range(3):
        try:
            callback.completion(**common)
        except BudgetDenied as exc:
            assert "app-cap" in str(exc) and exc.decision.allowed is False
            break
    else:
        raise AssertionError("the budget never denied")
    assert len(llm.requests) < calls + 3  # the denied call never reached the model
    with SyncBudgetClient(daemon.socket) as c:
        assert all(s.reserved_usd == 0 for s in c.status().budgets)


def test_records_wait_for_a_daemon_that_is_away(make_daemon, llm):
    d = make_daemon(start=False)
    cb = BudgetCallback(component="patient", socket=str(d.socket))
    litellm.callbacks = [cb]
    try:
        response = litellm.completion(model="openai/gpt-4o-mini", api_base=llm.url, api_key="sk-test",
                                      messages=MESSAGES)
        assert response.choices[0].message.content == llm.answer  # the call is not held up
        deadline = time.monotonic() + 10
        while cb.pending == 0 and time.monotonic() < deadline:  # litellm logs in a thread of its own
            time.sleep(0.02)
        assert cb.pending == 1 and not cb.flush(0.5)  # nowhere to send yet
        d.start()
        assert cb.flush(20)
        assert len(wait_for_records(d, 1, component="patient")) == 1
    finally:
        litellm.callbacks = []
