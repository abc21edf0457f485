"""The offline default: litellm's bundled price file, read from disk, agrees with litellm itself."""

import json
import subprocess
import sys

from actors.sources import litellm_bundled
from budgetd.pricing import Billed, PriceBook, TierRules, cost_nanos

CALLS = [
    ("gpt-4o", 1234, 567, 0, 0),
    ("gpt-4o-mini", 100_000, 20_000, 50_000, 0),
    ("claude-sonnet-4-5", 3000, 800, 12_000, 4000),
    ("gemini/gemini-2.5-pro", 150_000, 2000, 80_000, 0),  # above its 200k threshold
    ("deepseek/deepseek-chat", 5000, 1000, 2000, 0),
]

LITELLM = """
import json, os, sys
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["LITELLM_OFFLINE_MODE"] = "true"
import litellm
out = []
for model, inp, outp, cr, cw in json.loads(sys.argv[1]):
    # litellm's prompt_tokens include cached tokens (OpenAI's convention)
    p, c = litellm.cost_per_token(model=model, prompt_tokens=inp + cr + cw, completion_tokens=outp,
                                  cache_read_input_tokens=cr, cache_creation_input_tokens=cw)
    out.append(p + c)
print(json.dumps(out))
"""


def test_bundled_file_is_found_without_importing_litellm():
    # In a fresh interpreter: other test modules import litellm into this one.
    probe = ("import sys; from actors.sources import litellm_bundled; from budgetd.pricing import TierRules; "
             "entries, _ = litellm_bundled.load(TierRules()); print(len(entries), 'litellm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    count, imported = out.stdout.split()
    assert int(count) > 1000 and imported == "False"
    entries, refused = litellm_bundled.load(TierRules())
    book = PriceBook(entries)
    gpt = book.resolve("gpt-4o").entry
    assert gpt.provider == "openai" and gpt.mode == "chat" and "vision" in gpt.capabilities
    assert gpt.max_input_tokens and gpt.max_output_tokens


def test_costs_match_litellm_to_the_nano_dollar():
    book = PriceBook(litellm_bundled.load(TierRules())[0])
    ours = []
    for model, inp, out, cr, cw in CALLS:
        resolved = book.resolve(model)
        assert resolved is not None, model
        ours.append(cost_nanos(resolved.card, Billed(inp, out, cr, cw)))
    result = subprocess.run([sys.executable, "-c", LITELLM, json.dumps(CALLS)], capture_output=True, text=True,
                            check=True, timeout=120)
    theirs = json.loads(result.stdout.strip().splitlines()[-1])
    for call, nanos, usd in zip(CALLS, ours, theirs):
        assert abs(nanos - usd * 1e9) <= 1, (call, nanos, usd)
