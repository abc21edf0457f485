"""Durations as people write them (`250ms`, `30s`, `10m`, `6h`, `1d`, `2w`): one grammar for the
config and for times given as "this long back from now"."""

UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """`250ms`, `30s`, `10m`, `6h`, `1d`, `2w` (or plain seconds) -> seconds; ValueError says what is wanted."""
    text = str(text).strip()
    for unit in ("ms", "s", "m", "h", "d", "w"):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            value = float(text[: -len(unit)]) * UNITS[unit]
            break
    else:
        if not text.replace(".", "", 1).isdigit():
            raise ValueError(f"{text!r} is not a duration; write e.g. 30s, 10m, 6h or 1d")
        value = float(text)
    if value <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return value


def is_duration(text: str) -> bool:
    """A number with a unit (a bare number is not: it could be a year)."""
    return any(text.endswith(u) and text[: -len(u)].replace(".", "", 1).isdigit() for u in UNITS)
