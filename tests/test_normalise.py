"""The normaliser on recorded answers of each provider (tests/fixtures/responses/), in process: no daemon."""

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest

from budgetd.model import UsagePatch, parts_problem
from budgetd.normalise import normalise_response, normalise_usage, service_tier_of

RESPONSES = Path(__file__).parent / "fixtures" / "responses"
ZERO = {"input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0,
        "cache_write_1h_tokens": 0, "reasoning_tokens": 0, "audio_input_tokens": 0, "audio_output_tokens": 0,
        "service_tier": "standard", "web_search_requests": 0}


def usage(**fields) -> dict:
    return {**ZERO, **fields}


def answer(name: str, as_objects: bool = False):
    """A recorded answer (the first line of a .jsonl), as JSON or as objects with attributes (as SDKs give)."""
    text = (RESPONSES / name).read_text().splitlines()[0] if name.endswith(".jsonl") else (RESPONSES / name).read_text()
    return json.loads(text, object_hook=(lambda d: SimpleNamespace(**d)) if as_objects else None)


EXPECTED = {
    # prompt 2648 = 1920 cached + 728; 612 audio tokens among the 728 (nothing says any audio was cached).
    "openai_chat_audio.json": usage(input_tokens=728, output_tokens=415, cache_read_tokens=1920,
                                    audio_input_tokens=612, audio_output_tokens=331),
    # service_tier "flex"; 1536 of the 1843 completion tokens were reasoning.
    "openai_chat_reasoning.json": usage(input_tokens=256, output_tokens=1843, cache_read_tokens=4864,
                                        reasoning_tokens=1536, service_tier="flex"),
    # input 9412 = 6144 cached + 3268; two web_search_call items; served at priority.
    "openai_responses.json": usage(input_tokens=3268, output_tokens=1380, cache_read_tokens=6144,
                                   reasoning_tokens=1088, service_tier="priority", web_search_requests=2),
    # A batch output line: the body says "default", the batch API bills at the batch tier.
    "openai_batch_output.jsonl": usage(input_tokens=304, output_tokens=2, cache_read_tokens=1536,
                                       service_tier="batch"),
    # input_tokens excludes the cache; 3000 written: 2000 for 5 minutes, 1000 for an hour.
    "anthropic_message.json": usage(input_tokens=1234, output_tokens=512, cache_read_tokens=8000,
                                    cache_write_tokens=2000, cache_write_1h_tokens=1000, service_tier="priority",
                                    web_search_requests=2),
    "anthropic_batch_result.jsonl": usage(input_tokens=2210, output_tokens=38, cache_read_tokens=4096,
                                          service_tier="batch"),
    # prompt 13410 = 12000 cached + 1410; audio 12000 of which 11000 cached; output 286 + 913 thoughts.
    "gemini_generate_content.json": usage(input_tokens=1410, output_tokens=1199, cache_read_tokens=12000,
                                          reasoning_tokens=913, audio_input_tokens=1000),
    # litellm's answers for the bodies above (anthropic_message, openai_chat_reasoning, gemini_generate_content).
    "litellm_anthropic_model_response.json": usage(input_tokens=1234, output_tokens=512, cache_read_tokens=8000,
                                                   cache_write_tokens=2000, cache_write_1h_tokens=1000,
                                                   service_tier="priority", web_search_requests=2),
    "litellm_openai_model_response.json": usage(input_tokens=256, output_tokens=1843, cache_read_tokens=4864,
                                                reasoning_tokens=1536, service_tier="flex"),
    "litellm_gemini_model_response.json": usage(input_tokens=1410, output_tokens=1199, cache_read_tokens=12000,
                                                reasoning_tokens=913, audio_input_tokens=1000),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_recorded_answer_gives_exactly_what_was_billed(name):
    assert normalise_response(answer(name)) == EXPECTED[name]
    assert normalise_response(answer(name, as_objects=True)) == EXPECTED[name]  # attributes read like keys
    assert parts_problem(msgspec.convert(EXPECTED[name], UsagePatch)) is None


def test_the_fixtures_cover_every_recorded_answer():
    assert sorted(EXPECTED) == sorted(p.name for p in RESPONSES.iterdir() if p.suffix in (".json", ".jsonl"))


@pytest.mark.parametrize("direct, through_litellm", [
    ("anthropic_message.json", "litellm_anthropic_model_response.json"),
    ("openai_chat_reasoning.json", "litellm_openai_model_response.json"),
    ("gemini_generate_content.json", "litellm_gemini_model_response.json"),
])
def test_a_call_counts_the_same_read_from_the_provider_or_through_litellm(direct, through_litellm):
    assert normalise_response(answer(through_litellm), provider="litellm") == normalise_response(answer(direct))


def test_litellm_cache_writes_reported_only_in_prompt_tokens_details_are_writes():
    # The defect: 3,234 input and no writes were recorded instead of 1,234 input + 2,000 writes.
    for name in ("cache_write_tokens", "cache_creation_tokens"):
        litellm_usage = {"prompt_tokens": 4234, "completion_tokens": 300,
                         "prompt_tokens_details": {"cached_tokens": 1000, name: 2000},
                         "completion_tokens_details": {"reasoning_tokens": 200}}
        assert normalise_usage(litellm_usage) == usage(input_tokens=1234, output_tokens=300, cache_read_tokens=1000,
                                                       cache_write_tokens=2000, reasoning_tokens=200)


def test_the_usage_block_alone_lacks_only_what_the_answer_says():
    assert normalise_usage(answer("anthropic_message.json")["usage"]) == EXPECTED["anthropic_message.json"]
    responses = answer("openai_responses.json")
    assert normalise_usage(responses["usage"]) == {**EXPECTED["openai_responses.json"], "service_tier": "standard",
                                                  "web_search_requests": 0}
    chat = answer("openai_chat_reasoning.json")
    assert normalise_usage(chat["usage"])["service_tier"] == "standard"


def test_an_explicit_provider_decides_the_format():
    block = {"input_tokens": 900, "output_tokens": 20, "input_tokens_details": {"cached_tokens": 300}}
    assert normalise_usage(block)["input_tokens"] == 600  # OpenAI Responses: input_tokens counts the cached
    assert normalise_usage(block, provider="anthropic")["input_tokens"] == 900  # no such details: all input
    gemini = answer("gemini_generate_content.json")["usageMetadata"]
    assert normalise_usage(gemini, provider="gemini") == normalise_usage(gemini) == EXPECTED[
        "gemini_generate_content.json"]


def test_gemini_tool_use_prompts_are_input_unless_grounded_with_google_search():
    body = answer("gemini_generate_content.json")
    body["usageMetadata"].update(toolUsePromptTokenCount=500, totalTokenCount=15109)
    assert normalise_response(body)["input_tokens"] == 1910
    grounded = copy.deepcopy(body)
    grounded["candidates"][0]["groundingMetadata"] = {
        "webSearchQueries": ["ECB rate decision", "ECB rate decision", "euro area inflation"]}
    fields = normalise_response(grounded)
    assert (fields["input_tokens"], fields["web_search_requests"]) == (1410, 2)  # billed per distinct query


def test_gemini_candidates_that_already_count_the_thoughts_are_not_counted_twice():
    body = answer("gemini_generate_content.json")
    body["usageMetadata"].update(candidatesTokenCount=1199, totalTokenCount=13410 + 1199)
    fields = normalise_response(body)
    assert (fields["output_tokens"], fields["reasoning_tokens"]) == (1199, 913)


def test_counts_that_do_not_add_up_are_clamped_never_negative_and_parts_within_wholes():
    openai = {"prompt_tokens": 100, "completion_tokens": 50,
              "prompt_tokens_details": {"cached_tokens": 80, "cache_write_tokens": 70, "audio_tokens": 400},
              "completion_tokens_details": {"reasoning_tokens": 45, "audio_tokens": 30}}
    assert normalise_usage(openai) == usage(input_tokens=0, output_tokens=50, cache_read_tokens=80,
                                            cache_write_tokens=70, reasoning_tokens=45, audio_output_tokens=5)
    anthropic = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 100,
                 "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 300}}
    assert normalise_usage(anthropic) == usage(input_tokens=10, output_tokens=5, cache_write_1h_tokens=100)
    split_only = {"input_tokens": 10, "output_tokens": 5,
                  "cache_creation": {"ephemeral_5m_input_tokens": 40, "ephemeral_1h_input_tokens": 60}}
    assert normalise_usage(split_only) == usage(input_tokens=10, output_tokens=5, cache_write_tokens=40,
                                                cache_write_1h_tokens=60)
    for fields in (normalise_usage(openai), normalise_usage(anthropic)):
        assert parts_problem(msgspec.convert(fields, UsagePatch)) is None


def test_what_is_not_a_count_counts_as_nothing():
    junk = {"prompt_tokens": -5, "completion_tokens": "12", "prompt_tokens_details": {"cached_tokens": math.nan},
            "completion_tokens_details": {"reasoning_tokens": True, "audio_tokens": math.inf}}
    assert normalise_usage(junk) == ZERO
    assert normalise_usage({"prompt_tokens": 12.0, "completion_tokens": 3})["input_tokens"] == 12
    assert normalise_usage(None) == ZERO


def test_answers_without_usage_and_failed_batch_requests_consumed_nothing():
    assert normalise_response(None) is None
    assert normalise_response({"id": "chatcmpl-2", "object": "chat.completion.chunk", "choices": []}) is None
    openai_failed = {"id": "batch_req_1", "custom_id": "ticket-1", "response": None,
                     "error": {"code": "invalid_request", "message": "max_tokens is too large"}}
    anthropic_failed = {"custom_id": "invoice-1", "result": {"type": "errored", "error": {
        "type": "invalid_request_error", "message": "prompt is too long"}}}
    assert normalise_response(openai_failed) is None and normalise_response(anthropic_failed) is None


@pytest.mark.parametrize("word, tier", [("default", "standard"), ("auto", "standard"), ("scale", "standard"),
                                        ("standard", "standard"), ("priority", "priority"), ("Flex", "flex"),
                                        ("batch", "batch"), ("standard_only", "standard"), (None, "standard"),
                                        (3, "standard")])
def test_service_tier_words(word, tier):
    assert service_tier_of(word) == tier
