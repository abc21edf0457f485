"""litellm apps budgeted with one line, against real stand-ins on 127.0.0.1: an OpenAI-compatible server, and
providers answering with recorded bodies (tests/fixtures/responses/)."""

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402

from budgetd.client import BudgetDenied, SyncBudgetClient  # noqa: E402
from budgetd.integrations.litellm import BudgetCallback  # noqa: E402
from tests.llm import FakeLLM  # noqa: E402

MESSAGES = [{"role": "user", "content": "Summarise the quarterly report in three lines."}]
RESPONSES = Path(__file__).parent / "fixtures" / "responses"
USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens",
                "reasoning_tokens", "audio_input_tokens", "audio_output_tokens", "service_tier", "web_search_requests")


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


def billed(record) -> dict:
    return {name: getattr(record, name) for name in USAGE_FIELDS}


def cost_recorded_directly(daemon, model: str, provider: str, usage: dict) -> float:
    """What the daemon charges for the same usage recorded by hand (priced from every field)."""
    with SyncBudgetClient(daemon.socket) as c:
        return c.record(component="reference", model=model, provider=provider, **usage).cost_usd


class RecordedProvider:
    """A provider's API on 127.0.0.1 answering every POST with one recorded body (tests/fixtures/responses/)."""

    def __init__(self, fixture: str) -> None:
        body = (RESPONSES / fixture).read_bytes()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_cache_writes_in_prompt_tokens_details_reasoning_and_the_tier_are_recorded_exactly(daemon, callback):
    # What litellm reports for an OpenAI-compatible call that wrote 2,000 tokens to the cache: they are inside
    # prompt_tokens and only prompt_tokens_details says so (the defect recorded 3,234 input and no writes).
    usage = {"prompt_tokens": 4234, "completion_tokens": 300, "total_tokens": 4534,
             "prompt_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 2000, "audio_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 200, "audio_tokens": 0,
                                           "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
    want = {"input_tokens": 1234, "output_tokens": 300, "cache_read_tokens": 1000, "cache_write_tokens": 2000,
            "cache_write_1h_tokens": 0, "reasoning_tokens": 200, "audio_input_tokens": 0, "audio_output_tokens": 0,
            "service_tier": "priority", "web_search_requests": 0}
    fake = FakeLLM(answer="Done.", usage=usage, service_tier="priority")
    try:
        common = {"model": "openai/gpt-4o-mini", "api_base": fake.url, "api_key": "sk-test", "messages": MESSAGES}
        litellm.completion(**common, metadata={"component": "whole"})
        stream = litellm.completion(**common, stream=True, stream_options={"include_usage": True},
                                    metadata={"component": "streamed"})
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == "Done."
        records = [wait_for_records(daemon, 1, component)[0] for component in ("whole", "streamed")]
    finally:
        fake.close()
    cost = cost_recorded_directly(daemon, "gpt-4o-mini", "openai", want)
    for r in records:
        assert billed(r) == want
        assert r.cost_usd == cost


def test_an_anthropic_answer_through_litellm_is_recorded_with_its_hour_writes_searches_and_tier(daemon, callback):
    anthropic = RecordedProvider("anthropic_message.json")
    try:
        litellm.completion(model="anthropic/claude-sonnet-4-5", api_base=anthropic.url, api_key="sk-ant-test",
                           messages=MESSAGES, metadata={"component": "researcher"})
        r = wait_for_records(daemon, 1, "researcher")[0]
    finally:
        anthropic.close()
    want = {"input_tokens": 1234, "output_tokens": 512, "cache_read_tokens": 8000, "cache_write_tokens": 2000,
            "cache_write_1h_tokens": 1000, "reasoning_tokens": 0, "audio_input_tokens": 0, "audio_output_tokens": 0,
            "service_tier": "priority", "web_search_requests": 2}
    assert (r.model, r.provider) == ("claude-sonnet-4-5", "anthropic")
    assert billed(r) == want
    assert r.cost_usd == cost_recorded_directly(daemon, "claude-sonnet-4-5", "anthropic", want)


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


def test_the_wrappers_reserve_at_the_service_tier_asked_for():
    cb = BudgetCallback(component="tiers")
    ask = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 50}
    assert "service_tier" not in cb._estimate(ask)  # the daemon's default: standard
    assert cb._estimate({**ask, "service_tier": "priority"})["service_tier"] == "priority"
    assert cb._estimate({**ask, "service_tier": "auto"})["service_tier"] == "standard"


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
