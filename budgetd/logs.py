"""The daemon's log: one line per distinct failure, with a count, never a storm.

A failure that repeats (the same logger and message, or for an exception the same place
and exception type, whatever its message) is
logged in full the first time; its repeats within `window_s` are counted and
summed up in one line when the window ends (`flush`, called every few seconds
by the daemon, and at exit). Anyone on the socket could otherwise fill the
disk by making the daemon log the same traceback thousands of times.
"""

import logging
import sys
import time
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Deduplicate(logging.Filter):
    def __init__(self, window_s: float = 60.0) -> None:
        super().__init__()
        self.window_s = window_s
        self._seen: dict[tuple, list[Any]] = {}  # key -> [first seen (monotonic), repeats, a record]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        if record.exc_info and record.exc_info[0]:  # where it was logged and what was raised
            key: tuple = (record.name, record.levelno, record.pathname, record.lineno, record.exc_info[0])
        else:
            key = (record.name, record.levelno, record.getMessage()[:300])
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is None or now - seen[0] >= self.window_s:
            if seen is not None and seen[1]:
                self._summarise(seen)
            self._seen[key] = [now, 0, record]
            return True
        seen[1] += 1
        return False

    def flush(self) -> None:
        """Sum up the repeats of every failure whose window has ended."""
        now = time.monotonic()
        for key, seen in list(self._seen.items()):
            if now - seen[0] >= self.window_s:
                if seen[1]:
                    self._summarise(seen)
                del self._seen[key]

    def _summarise(self, seen: list[Any]) -> None:
        first: logging.LogRecord = seen[2]
        line = logging.LogRecord(first.name, first.levelno, first.pathname, first.lineno,
                                 "the failure above repeated %d more times within %.0fs: %s",
                                 (seen[1], self.window_s, first.getMessage()[:200]), None)
        for handler in logging.getLogger().handlers:
            handler.handle(line)


def configure(level: str) -> Deduplicate:
    """Log to stderr at `level`, every failure at most once per window (see above)."""
    logging.basicConfig(level=getattr(logging, level.upper()), format=FORMAT, stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per feed request is noise
    dedupe = Deduplicate()
    for handler in logging.getLogger().handlers:
        handler.addFilter(dedupe)
    return dedupe
