"""The daemon's one source of time.

Every actor and door reads wall time through a `Clock` handed to it, never
through `time.time()` or `datetime.now()` directly. A clock may run shifted
to a chosen instant: the tests start real daemons at the hard moments of the
calendar (Monday 00:00, the last second of a year, DST changes) this way.

`BUDGETD_CLOCK_START` (RFC 3339, tests only) starts a daemon's wall clock at
that instant; it then runs at the normal rate. Monotonic time (timeouts,
backoff) is never shifted.
"""

import datetime as dt
import os
import time
from typing import Mapping

UTC = dt.timezone.utc
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_US = dt.timedelta(microseconds=1)
CLOCK_START_ENV = "BUDGETD_CLOCK_START"


class Clock:
    """Wall time in microseconds since the epoch (the ledger's unit) and as aware datetimes."""

    __slots__ = ("offset_us",)

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.offset_us = 0 if start is None else (start - _EPOCH) // _US - time.time_ns() // 1000

    def now_us(self) -> int:
        return time.time_ns() // 1000 + self.offset_us

    def now(self) -> dt.datetime:
        return _EPOCH + dt.timedelta(microseconds=self.now_us())

    def time(self) -> float:
        """Seconds since the epoch, as `time.time()`."""
        return self.now_us() / 1e6

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()


class HeldClock(Clock):
    """A clock that can be held at an instant: an actor holds it while it handles a message, so every part of
    one decision reads the same time (a window cannot end between two of them)."""

    __slots__ = ("base", "held")

    def __init__(self, base: Clock) -> None:
        self.base = base
        self.held: int | None = None

    def now_us(self) -> int:
        return self.base.now_us() if self.held is None else self.held


#: The real clock, for code that runs outside a daemon (the CLI, the dashboard).
SYSTEM = Clock()


def from_environ(environ: Mapping[str, str] | None = None) -> Clock:
    """The real clock, or one started at `BUDGETD_CLOCK_START` (for tests). ValueError names a bad value."""
    text = (os.environ if environ is None else environ).get(CLOCK_START_ENV, "").strip()
    if not text:
        return SYSTEM
    try:
        start = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{CLOCK_START_ENV}={text!r} is not an RFC 3339 time such as 2026-12-28T00:00:30Z") from None
    if start.tzinfo is None:
        raise ValueError(f"{CLOCK_START_ENV}={text!r} needs an offset, e.g. 2026-12-28T00:00:30Z")
    return Clock(start)
