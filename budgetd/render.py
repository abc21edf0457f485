"""Text for people, shared by the CLI and the dashboard: counts, durations, bars."""

from budgetd.model import format_usd

money = format_usd
_BLOCKS = " ▏▎▍▌▋▊▉█"


def count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def duration(seconds: float) -> str:
    """`45s`, `12m05s`, `3h07m`, `2d04h`."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def bar(fraction: float, width: int) -> str:
    """A horizontal bar in eighths of a character."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    return "█" * (eighths // 8) + (_BLOCKS[eighths % 8] if eighths % 8 else "")
