"""Off-peak windows: whether a call made at a given instant falls in one (README, "How a call is priced")."""

import datetime as dt
import re
import zoneinfo
from typing import NamedTuple

from budgetd.model import OffPeak

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


class _Rule(NamedTuple):
    weekdays: frozenset[int] | None  # ISO weekdays on the schedule's calendar; None: every day
    spans: tuple[tuple[int, int], ...]  # [start, end) in seconds of the UTC day; end <= start wraps midnight


def _span(window: str) -> tuple[int, int] | None:
    """ "HH:MM-HH:MM" as seconds of the day, or None when malformed (ignored, as litellm does)."""
    m = _WINDOW.match(window)
    if m is None:
        return None
    h1, m1, h2, m2 = map(int, m.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        return None
    return h1 * 3600 + m1 * 60, h2 * 3600 + m2 * 60


def _calendar(name: str) -> dt.tzinfo:
    """The zone whose calendar the weekdays are read on; an unknown zone reads them in UTC (litellm's rule)."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        return dt.timezone.utc


class OffPeakSchedule:
    """An entry's off-peak windows, ready to be asked about instants."""

    def __init__(self, off_peak: OffPeak) -> None:
        self.calendar = _calendar(off_peak.weekday_timezone)
        self.rules = tuple(
            _Rule(None if w.weekdays is None else frozenset(w.weekdays),
                  tuple(span for span in map(_span, w.hours_utc) if span is not None))
            for w in off_peak.windows
        )

    def open_at(self, at_us: int) -> bool:
        when = dt.datetime.fromtimestamp(at_us / 1_000_000, dt.timezone.utc)
        second = when.hour * 3600 + when.minute * 60 + when.second
        weekday = when.astimezone(self.calendar).isoweekday()
        for rule in self.rules:
            if rule.weekdays is not None and weekday not in rule.weekdays:
                continue
            for start, end in rule.spans:
                if start < end and start <= second < end:
                    return True
                if start >= end and (second >= start or second < end):  # wraps midnight; equal: the whole day
                    return True
        return False
