"""The offline default: litellm's bundled price file, read from disk without importing litellm. That its every
price agrees with litellm's own calculator is tests/test_price_conformance.py."""

import subprocess
import sys

from actors.sources import litellm_bundled
from budgetd.pricing import PriceBook, TierRules


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
