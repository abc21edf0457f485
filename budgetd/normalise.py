"""What a provider's (or litellm's) answer says a call consumed, as budgetd's Usage fields: the one normaliser
for every caller that reads an answer (the litellm callback, which also records the calls of its completion
wrappers, and the assistant). Standard library only: the light client side imports it.

`normalise_response(response)` reads a whole answer (a dict, as the provider's JSON, or an object, as litellm
and the SDKs return it); `normalise_usage(usage)` reads the usage block alone, which cannot carry what only the
answer says (OpenAI's service tier, the web searches of a Responses or Gemini answer). Both give every Usage
token field, `service_tier` and `web_search_requests`, and nothing budgetd does not know.

What an object is, unless `provider` says whose format it is in ("anthropic", "gemini"; "openai" or "litellm":
chat or Responses by its fields). litellm reshapes every provider's usage like OpenAI's, so whatever litellm
returns is "litellm", whoever served the call. Told apart by what they carry:

    Gemini             usageMetadata: promptTokenCount, candidatesTokenCount, ... (the REST JSON)
    OpenAI chat        prompt_tokens / completion_tokens (litellm's Usage, for every provider)
    OpenAI Responses   input_tokens with input_tokens_details, output_tokens_details or total_tokens
    Anthropic          input_tokens without them (its usage has no total)
    a batch line       OpenAI's {custom_id, response: {body}}, Anthropic's {custom_id, result: {message}}: the
                       answer inside, at the batch tier; a request that failed consumed nothing (None)

budgetd's convention (budgetd.model.Usage): input_tokens are the prompt tokens neither read from nor written to
a cache; output_tokens include reasoning and audio; reasoning_tokens and audio_output_tokens are parts of
output_tokens, audio_input_tokens a part of input_tokens. Field by field:

    OpenAI chat, litellm   input = prompt_tokens - cache reads - cache writes (prompt_tokens counts both).
                           Reads: prompt_tokens_details.cached_tokens (litellm also cache_read_input_tokens).
                           Writes: prompt_tokens_details.cache_write_tokens (litellm also cache_creation_tokens and
                           cache_creation_input_tokens), of which prompt_tokens_details.cache_creation_token_details
                           .ephemeral_1h_input_tokens are cache_write_1h_tokens. output = completion_tokens;
                           reasoning and audio output: completion_tokens_details.reasoning_tokens, .audio_tokens;
                           audio input: prompt_tokens_details.audio_tokens less their cached part
                           (cached_tokens_details.audio_tokens). Searches: server_tool_use.web_search_requests
                           (Anthropic through litellm) or prompt_tokens_details.web_search_requests (Gemini).
    OpenAI Responses       the same from input_tokens, output_tokens, input_tokens_details, output_tokens_details;
                           searches: the answer's web_search_call output items.
    Anthropic              input = input_tokens (already without the cache); reads: cache_read_input_tokens;
                           writes: cache_creation_input_tokens, of which cache_creation.ephemeral_1h_input_tokens
                           are cache_write_1h_tokens; searches: server_tool_use.web_search_requests. Thinking is
                           billed inside output_tokens and not reported apart: reasoning_tokens stays 0.
    Gemini                 input = promptTokenCount - cachedContentTokenCount + toolUsePromptTokenCount (tool-use
                           prompts bill as input, except for Grounding with Google Search, billed by the search;
                           only a whole answer shows the grounding). Reads: cachedContentTokenCount.
                           output = candidatesTokenCount + thoughtsTokenCount, unless the candidates already count
                           the thoughts (prompt + candidates + tool use == totalTokenCount, as litellm tells them
                           apart); reasoning = thoughtsTokenCount. Audio: the AUDIO modality of promptTokensDetails
                           less that of cacheTokensDetails, and of candidatesTokensDetails. Searches: the distinct
                           groundingMetadata.webSearchQueries of the candidates (whether a model bills per query or
                           per grounded prompt is the price's business).

Writes of other lifetimes than an hour (Anthropic's 5 minutes, OpenAI's 30 minutes and 12 hours) count as
cache_write_tokens: budgetd has no field for a 12-hour write. Service tier: the answer's service_tier, else its
usage's (Anthropic); OpenAI's "default", "auto" and "scale" are standard, and so is a word budgetd does not know.
Every count is a non-negative integer (anything else counts as 0), and counts that do not add up are clamped:
input to 0 when the cached tokens exceed the prompt, a part to what its whole leaves (the 1-hour writes to the
writes, reasoning to the output, audio output to the rest of it, audio input to the input), since the daemon
refuses a usage whose parts exceed their wholes and the call would go unrecorded.
"""

import math
from typing import Any, Literal

Provider = Literal["openai", "anthropic", "gemini", "litellm"]

# Where OpenAI's two APIs (and litellm, like chat) put the prompt, the output and their details.
_CHAT_NAMES = ("prompt_tokens", "completion_tokens", "prompt_tokens_details", "completion_tokens_details")
_RESPONSES_NAMES = ("input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details")
_TIERS = {"standard": "standard", "default": "standard", "auto": "standard", "scale": "standard",
          "priority": "priority", "flex": "flex", "batch": "batch"}


def service_tier_of(word: Any) -> str:
    """A provider's word for the tier a call was served at (or asked for), as budgetd's ServiceTier."""
    return _TIERS.get(word.lower(), "standard") if isinstance(word, str) else "standard"


def normalise_response(response: Any, provider: Provider | None = None) -> dict[str, Any] | None:
    """A provider's whole answer as Usage fields; None when it carries no usage (a streamed chunk before the
    last, a batch request that failed)."""
    if _get(response, "custom_id") is not None:  # a line of a batch's results
        answer = _get(_get(response, "response"), "body") or _get(_get(response, "result"), "message")
        fields = None if answer is None else normalise_response(answer, provider)
        return None if fields is None else {**fields, "service_tier": "batch"}
    gemini_usage = _get(response, "usageMetadata")
    if gemini_usage is not None:
        searches = _gemini_searches(response)
        return {**_gemini(gemini_usage, search_grounded=searches > 0), "web_search_requests": searches}
    usage = _get(response, "usage")
    if usage is None:
        return None
    fields = normalise_usage(usage, provider)
    tier = _get(response, "service_tier")
    if tier is not None:
        fields["service_tier"] = service_tier_of(tier)
    output = _get(response, "output")
    if isinstance(output, list):  # a Responses answer: each web search is an output item
        searches = sum(1 for item in output if _get(item, "type") == "web_search_call")
        # The same searches when litellm also counts them in the usage, so the larger, not the sum.
        fields["web_search_requests"] = max(fields["web_search_requests"], searches)
    return fields


def normalise_usage(usage: Any, provider: Provider | None = None) -> dict[str, Any]:
    """A provider's usage block (or litellm's Usage) as Usage fields."""
    if provider == "anthropic":
        return _anthropic(usage)
    if provider == "gemini" or (provider is None and _has(usage, "promptTokenCount", "candidatesTokenCount")):
        return _gemini(usage, search_grounded=False)
    if _has(usage, "prompt_tokens", "completion_tokens"):
        return _openai(usage, _CHAT_NAMES)
    if provider is not None or _has(usage, "input_tokens_details", "output_tokens_details", "total_tokens"):
        return _openai(usage, _RESPONSES_NAMES)
    return _anthropic(usage)


def _openai(usage: Any, names: tuple[str, str, str, str]) -> dict[str, Any]:
    prompt_name, output_name, prompt_details_name, output_details_name = names
    prompt_details = _get(usage, prompt_details_name)
    output_details = _get(usage, output_details_name)
    # litellm reports each of these in two places (the same tokens, one place often left unset): the larger.
    read = max(_count(prompt_details, "cached_tokens"), _count(usage, "cache_read_input_tokens"))
    written = max(_count(prompt_details, "cache_write_tokens"), _count(prompt_details, "cache_creation_tokens"),
                  _count(usage, "cache_creation_input_tokens"))
    searches = max(_count(_get(usage, "server_tool_use"), "web_search_requests"),
                   _count(prompt_details, "web_search_requests"))
    audio_read = _count(_get(prompt_details, "cached_tokens_details"), "audio_tokens")
    return _fields(
        # prompt_tokens counts cache reads and writes too; more of them than prompt tokens leaves no input, not less.
        input_tokens=max(0, _count(usage, prompt_name) - read - written),
        output_tokens=_count(usage, output_name),
        read=read,
        written=written,
        written_1h=_count(_get(prompt_details, "cache_creation_token_details"), "ephemeral_1h_input_tokens"),
        reasoning=_count(output_details, "reasoning_tokens"),
        audio_input=max(0, _count(prompt_details, "audio_tokens") - audio_read),
        audio_output=_count(output_details, "audio_tokens"),
        searches=searches,
        tier=_get(usage, "service_tier"),
    )


def _anthropic(usage: Any) -> dict[str, Any]:
    lifetimes = _get(usage, "cache_creation")
    written_1h = _count(lifetimes, "ephemeral_1h_input_tokens")
    return _fields(
        input_tokens=_count(usage, "input_tokens"),
        output_tokens=_count(usage, "output_tokens"),
        read=_count(usage, "cache_read_input_tokens"),
        written=_count(usage, "cache_creation_input_tokens")
        or _count(lifetimes, "ephemeral_5m_input_tokens") + written_1h,
        written_1h=written_1h,
        reasoning=0,
        audio_input=0,
        audio_output=0,
        searches=_count(_get(usage, "server_tool_use"), "web_search_requests"),
        tier=_get(usage, "service_tier"),
    )


def _gemini(usage: Any, search_grounded: bool) -> dict[str, Any]:
    prompt = _count(usage, "promptTokenCount")
    cached = _count(usage, "cachedContentTokenCount")
    tool_use = _count(usage, "toolUsePromptTokenCount")
    candidates = _count(usage, "candidatesTokenCount")
    thoughts = _count(usage, "thoughtsTokenCount")
    thoughts_in_candidates = thoughts > 0 and _count(usage, "totalTokenCount") == prompt + candidates + tool_use
    return _fields(
        input_tokens=max(0, prompt - cached) + (0 if search_grounded else tool_use),
        output_tokens=candidates if thoughts_in_candidates else candidates + thoughts,
        read=cached,
        written=0,
        written_1h=0,
        reasoning=thoughts,
        audio_input=max(0, _modality(usage, "promptTokensDetails", "AUDIO")
                        - _modality(usage, "cacheTokensDetails", "AUDIO")),
        audio_output=_modality(usage, "candidatesTokensDetails", "AUDIO"),
        searches=0,
        tier=None,
    )


def _gemini_searches(response: Any) -> int:
    queries = set()
    for candidate in _list(_get(response, "candidates")):
        queries.update(q for q in _list(_get(_get(candidate, "groundingMetadata"), "webSearchQueries"))
                       if isinstance(q, str) and q)
    return len(queries)


def _fields(*, input_tokens: int, output_tokens: int, read: int, written: int, written_1h: int, reasoning: int,
            audio_input: int, audio_output: int, searches: int, tier: Any) -> dict[str, Any]:
    # Parts are clamped to their wholes: the daemon refuses a usage whose parts exceed them, and counts that do not
    # add up must not leave the call unrecorded.
    written_1h = min(written_1h, written)
    reasoning = min(reasoning, output_tokens)
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": read,
        "cache_write_tokens": written - written_1h,
        "cache_write_1h_tokens": written_1h,
        "reasoning_tokens": reasoning,
        "audio_input_tokens": min(audio_input, input_tokens),
        "audio_output_tokens": min(audio_output, output_tokens - reasoning),
        "service_tier": service_tier_of(tier),
        "web_search_requests": searches,
    }


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _has(obj: Any, *names: str) -> bool:
    return any(_get(obj, name) is not None for name in names)


def _count(obj: Any, name: str) -> int:
    value = _get(obj, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0
    return max(0, int(value))


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _modality(usage: Any, details_name: str, modality: str) -> int:
    return sum(_count(d, "tokenCount") for d in _list(_get(usage, details_name))
               if str(_get(d, "modality")).upper() == modality)
