"""The price file shipped inside the installed litellm package: the offline default.

The file is located through the import system's metadata, never by importing
litellm (which costs seconds and may reach for the network).
"""

import importlib.util
from pathlib import Path

import msgspec

from actors.sources import litellm
from budgetd.model import PriceEntry
from budgetd.pricing import TierRules

NAME = "litellm_bundled"
FILENAME = "model_prices_and_context_window_backup.json"


def bundled_path() -> Path:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("litellm is not installed, so its bundled price file cannot be read")
    path = Path(next(iter(spec.submodule_search_locations))) / FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"litellm is installed but {path} is missing")
    return path


def load(tiers: TierRules, path: Path | None = None) -> tuple[list[PriceEntry], list[str]]:
    data = msgspec.json.decode((path or bundled_path()).read_bytes())
    return litellm.parse(data, NAME, tiers)
