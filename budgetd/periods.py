"""Calendar windows in a time zone: an hour starts at :00, a day at midnight,
a week on Monday 00:00, a month on the 1st; `total` never resets.

Windows are computed on local wall time and converted to UTC, so a day in
Europe/Berlin is 23 or 25 hours long across a DST change.
"""

import datetime as dt
import functools
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from budgetd.durations import is_duration, parse_duration
from budgetd.model import PERIODS

UTC = dt.timezone.utc


class Window(NamedTuple):
    start: dt.datetime | None  # UTC; None for `total`
    end: dt.datetime | None
    start_us: int | None = None  # the same instants in microseconds since the epoch
    end_us: int | None = None

    def contains(self, ts: dt.datetime) -> bool:
        return (self.start is None or ts >= self.start) and (self.end is None or ts < self.end)

    def contains_us(self, ts_us: int) -> bool:
        return (self.start_us is None or ts_us >= self.start_us) and (self.end_us is None or ts_us < self.end_us)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_US = dt.timedelta(microseconds=1)
HOUR_US = 3_600_000_000


def to_us(t: dt.datetime) -> int:
    """An aware instant as microseconds since the epoch (the ledger's time unit)."""
    return (t - _EPOCH) // _US


def from_us(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


def _make(start: dt.datetime, end: dt.datetime) -> Window:
    return Window(start, end, to_us(start), to_us(end))


@functools.lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The zone named `name`, or ValueError with a message for people."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}; use an IANA name such as 'UTC' or 'Europe/Berlin'") from None


def _local_midnight(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def parse_when(text: str, zone_name: str = "UTC", now: dt.datetime | None = None) -> dt.datetime:
    """RFC 3339, a date, or a duration back from `now` (`7d`, `12h`, `30m`). A time without an offset
    (a date is its midnight) is wall time in `zone_name`. ValueError says what is accepted."""
    text = text.strip()
    if is_duration(text):
        return (now or dt.datetime.now(UTC)) - dt.timedelta(seconds=parse_duration(text))
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time: use RFC 3339 (2026-11-28T13:00:00Z), a date (2026-11-28) "
                         "or a duration back from now (7d, 12h)") from None
    return value if value.tzinfo else value.replace(tzinfo=zone(zone_name)).astimezone(UTC)


def when_text(text: str) -> str:
    """`text` when it is in the `When` grammar (checked here, read by the daemon by its clock and zone), or
    ValueError saying what is accepted."""
    parse_when(text)
    return text.strip()


def window(period: str, tz_name: str, ts: dt.datetime) -> Window:
    """The window of `period` in zone `tz_name` that contains the instant `ts`."""
    if period == "total":
        return Window(None, None)
    tz = zone(tz_name)
    local = ts.astimezone(tz)
    if period == "hourly":
        # Hours are absolute: across a fall-back the repeated hour is two windows.
        start = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        return _make(start, start + dt.timedelta(hours=1))
    if period == "daily":
        day = local.date()
        return _make(_local_midnight(day, tz), _local_midnight(day + dt.timedelta(days=1), tz))
    if period == "weekly":
        monday = local.date() - dt.timedelta(days=local.weekday())
        return _make(_local_midnight(monday, tz), _local_midnight(monday + dt.timedelta(days=7), tz))
    if period == "monthly":
        first = local.date().replace(day=1)
        following = (first + dt.timedelta(days=32)).replace(day=1)
        return _make(_local_midnight(first, tz), _local_midnight(following, tz))
    raise ValueError(f"unknown period {period!r}; use one of {', '.join(PERIODS)}")
