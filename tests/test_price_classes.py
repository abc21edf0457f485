"""Every class of price the old daemon got wrong, priced right through the socket and over HTTP, on the
installed litellm's own bundled file. The expected figures are written here from that file's raw numbers
(read as JSON, not through budgetd's parser)."""

import datetime as dt
import importlib.util
import json
from pathlib import Path

import httpx
import pytest

from budgetd.client import SyncBudgetClient
from conftest import FIXTURES

BOOK = Path(importlib.util.find_spec("litellm").submodule_search_locations[0]) / \
    "model_prices_and_context_window_backup.json"
RAW = json.loads(BOOK.read_text())
#: The daemon's clock: a Sunday, so a call of the day before is on a Saturday.
SUNDAY = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.timezone.utc)
SATURDAY_NOON = SUNDAY - dt.timedelta(days=1)
FRIDAY_8AM = dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.timezone.utc)  # outside deepseek's weekday windows


def rate(model: str, kind: str) -> float:
    return RAW[model][kind]


def _cases() -> list[tuple[str, dict, float]]:
    qwen_flash = RAW["dashscope/qwen-flash"]["tiered_pricing"][0]
    haiku_go = RAW["opencode_go/claude-haiku-5-5"]["tiered_pricing"][1]
    sonnet = RAW["claude-sonnet-latest"]["alias_of"]
    return [
        ("tiered pricing the only price", dict(model="dashscope/qwen-flash", input_tokens=1234, output_tokens=567),
         1234 * qwen_flash["input_cost_per_token"] + 567 * qwen_flash["output_cost_per_token"]),
        ("tiered pricing beside a base price",
         dict(model="opencode_go/claude-haiku-5-5", input_tokens=250_000, output_tokens=1000),
         250_000 * haiku_go["input_cost_per_token"] + 1000 * haiku_go["output_cost_per_token"]),
        ("the highest of several thresholds", dict(model="kyma/qwen3.7-flash", input_tokens=300_000, output_tokens=1000),
         300_000 * rate("kyma/qwen3.7-flash", "input_cost_per_token_above_256k_tokens")
         + 1000 * rate("kyma/qwen3.7-flash", "output_cost_per_token_above_256k_tokens")),
        ("a 1-hour cache write", dict(model="claude-haiku-4-5", cache_write_1h_tokens=2000),
         2000 * rate("claude-haiku-4-5", "cache_creation_input_token_cost_above_1hr")),
        ("a service tier", dict(model="gpt-5", input_tokens=1000, output_tokens=100, service_tier="priority"),
         1000 * rate("gpt-5", "input_cost_per_token_priority") + 100 * rate("gpt-5", "output_cost_per_token_priority")),
        ("reasoning at its rate",
         dict(model="dashscope/qwen-plus-2025-04-28", input_tokens=100, output_tokens=1000, reasoning_tokens=800),
         100 * rate("dashscope/qwen-plus-2025-04-28", "input_cost_per_token")
         + 200 * rate("dashscope/qwen-plus-2025-04-28", "output_cost_per_token")
         + 800 * rate("dashscope/qwen-plus-2025-04-28", "output_cost_per_reasoning_token")),
        ("audio in and out at their rates",
         dict(model="gpt-4o-audio-preview-2024-12-17", input_tokens=1000, audio_input_tokens=600, output_tokens=500,
              audio_output_tokens=300),
         400 * rate("gpt-4o-audio-preview-2024-12-17", "input_cost_per_token")
         + 600 * rate("gpt-4o-audio-preview-2024-12-17", "input_cost_per_audio_token")
         + 200 * rate("gpt-4o-audio-preview-2024-12-17", "output_cost_per_token")
         + 300 * rate("gpt-4o-audio-preview-2024-12-17", "output_cost_per_audio_token")),
        ("a fee per web search", dict(model="gpt-5", input_tokens=1000, output_tokens=100, web_search_requests=3),
         1000 * rate("gpt-5", "input_cost_per_token") + 100 * rate("gpt-5", "output_cost_per_token")
         + 3 * RAW["gpt-5"]["search_context_cost_per_query"]["search_context_size_medium"]),
        ("Fireworks' cached input at half the input rate",
         dict(model="fireworks_ai/accounts/fireworks/models/deepseek-v3", input_tokens=50_000,
              cache_read_tokens=180_000, output_tokens=1000),
         (50_000 + 180_000 * 0.5) * rate("fireworks_ai/accounts/fireworks/models/deepseek-v3", "input_cost_per_token")
         + 1000 * rate("fireworks_ai/accounts/fireworks/models/deepseek-v3", "output_cost_per_token")),
        ("off-peak on a Saturday",
         dict(model="deepseek/deepseek-v4-pro", input_tokens=1000, output_tokens=1000, ts=SATURDAY_NOON.isoformat()),
         1000 * RAW["deepseek/deepseek-v4-pro"]["off_peak_pricing"]["input_cost_per_token"]
         + 1000 * RAW["deepseek/deepseek-v4-pro"]["off_peak_pricing"]["output_cost_per_token"]),
        ("peak on a Friday morning",
         dict(model="deepseek/deepseek-v4-pro", input_tokens=1000, output_tokens=1000, ts=FRIDAY_8AM.isoformat()),
         1000 * rate("deepseek/deepseek-v4-pro", "input_cost_per_token")
         + 1000 * rate("deepseek/deepseek-v4-pro", "output_cost_per_token")),
        ("an alias priced as its target", dict(model="claude-sonnet-latest", input_tokens=1000, output_tokens=100),
         1000 * rate(sonnet, "input_cost_per_token") + 100 * rate(sonnet, "output_cost_per_token")),
    ]


CASES = _cases()


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    from conftest import Daemon

    d = Daemon(tmp_path_factory.mktemp("classes"), http=True, clock=SUNDAY)
    d.config_file.write_text(d.config_file.read_text().replace(str(FIXTURES / "litellm_prices.json"), str(BOOK)))
    d.start()
    yield d
    d.stop()


@pytest.mark.parametrize("what,usage,expected", CASES, ids=[c[0] for c in CASES])
def test_each_class_is_priced_right_on_both_doors(bundled, what, usage, expected):
    with SyncBudgetClient(bundled.socket) as client:
        socket = client.record(component="classes", **usage)
    http = httpx.post(f"{bundled.url}/api/v1/usage", json={"component": "classes", **usage}, timeout=30).json()
    want = round(expected * 1e9) / 1e9
    assert socket.priced and http["priced"], (socket, http)
    assert socket.cost_usd == pytest.approx(want, abs=1e-9) and http["cost_usd"] == socket.cost_usd, (what, socket)


@pytest.mark.parametrize("model,provider", [("groq/llama-3.3-70b-versatile", None), ("grok-4", "xai"),
                                            ("gemini/gemini-2.0-flash", None)])
def test_a_named_provider_is_never_billed_at_another_providers_price(bundled, model, provider):
    others = [k for k in RAW if k.endswith("/" + model.rpartition("/")[2]) or k == model.rpartition("/")[2]]
    with SyncBudgetClient(bundled.socket) as client:
        r = client.record(component="classes", model=model, provider=provider, input_tokens=1000)
    named = provider or model.partition("/")[0]
    assert r.provider in (named, None) or r.provider.startswith(named), (r, others)
    if not r.priced:
        assert r.cost_usd == 1000 * 15 / 1e6  # the unpriced fallback, flagged, not another provider's rate
