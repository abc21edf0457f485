"""Calendar windows in time zones, DST included (pure functions)."""

import datetime as dt

import pytest

from budgetd.periods import window

UTC = dt.timezone.utc


def t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize("period,zone,ts,start,end", [
    # UTC basics: hour, day, Monday weeks, month of 1st
    ("hourly", "UTC", "2026-11-28T13:59:59.999999+00:00", "2026-11-28T13:00:00+00:00", "2026-11-28T14:00:00+00:00"),
    ("daily", "UTC", "2026-11-28T00:00:00+00:00", "2026-11-28T00:00:00+00:00", "2026-11-29T00:00:00+00:00"),
    ("daily", "UTC", "2026-11-27T23:59:59.999999+00:00", "2026-11-27T00:00:00+00:00", "2026-11-28T00:00:00+00:00"),
    ("weekly", "UTC", "2026-11-29T23:59:59+00:00", "2026-11-23T00:00:00+00:00", "2026-11-30T00:00:00+00:00"),
    ("weekly", "UTC", "2026-11-30T00:00:00+00:00", "2026-11-30T00:00:00+00:00", "2026-12-07T00:00:00+00:00"),
    ("monthly", "UTC", "2026-12-31T23:59:59+00:00", "2026-12-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"),
    ("monthly", "UTC", "2027-02-01T00:00:00+00:00", "2027-02-01T00:00:00+00:00", "2027-03-01T00:00:00+00:00"),
    # Berlin midnight is 23:00 UTC in winter
    ("daily", "Europe/Berlin", "2026-11-27T22:59:59+00:00", "2026-11-26T23:00:00+00:00", "2026-11-27T23:00:00+00:00"),
    ("daily", "Europe/Berlin", "2026-11-27T23:00:00+00:00", "2026-11-27T23:00:00+00:00", "2026-11-28T23:00:00+00:00"),
    # DST starts 2026-03-29 in Berlin: that day has 23 hours
    ("daily", "Europe/Berlin", "2026-03-29T12:00:00+00:00", "2026-03-28T23:00:00+00:00", "2026-03-29T22:00:00+00:00"),
    # DST ends 2026-10-25: 25 hours
    ("daily", "Europe/Berlin", "2026-10-25T12:00:00+00:00", "2026-10-24T22:00:00+00:00", "2026-10-25T23:00:00+00:00"),
    # the week containing the change starts on Monday local midnight (summer time) and ends in winter time
    ("weekly", "Europe/Berlin", "2026-10-25T12:00:00+00:00", "2026-10-18T22:00:00+00:00", "2026-10-25T23:00:00+00:00"),
    ("monthly", "America/New_York", "2026-11-01T03:59:00+00:00", "2026-10-01T04:00:00+00:00", "2026-11-01T04:00:00+00:00"),
    # the repeated hour at fall-back is two windows
    ("hourly", "Europe/Berlin", "2026-10-25T00:30:00+00:00", "2026-10-25T00:00:00+00:00", "2026-10-25T01:00:00+00:00"),
    ("hourly", "Europe/Berlin", "2026-10-25T01:30:00+00:00", "2026-10-25T01:00:00+00:00", "2026-10-25T02:00:00+00:00"),
    # a half-hour zone: hours start at local :00
    ("hourly", "Asia/Kolkata", "2026-11-28T13:10:00+00:00", "2026-11-28T12:30:00+00:00", "2026-11-28T13:30:00+00:00"),
])
def test_windows(period, zone, ts, start, end):
    w = window(period, zone, t(ts))
    assert (w.start, w.end) == (t(start), t(end))
    assert w.contains(t(ts))


def test_total_never_resets():
    w = window("total", "UTC", t("2026-01-01T00:00:00+00:00"))
    assert w.start is None and w.end is None and w.contains(t("1999-01-01T00:00:00+00:00"))


def test_unknown_zone_and_period():
    with pytest.raises(ValueError, match="unknown time zone"):
        window("daily", "Mars/Olympus", t("2026-01-01T00:00:00+00:00"))
    with pytest.raises(ValueError, match="unknown period"):
        window("fortnightly", "UTC", t("2026-01-01T00:00:00+00:00"))
