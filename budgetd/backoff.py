"""Exponential backoff: the one retry schedule of every loop that waits before trying again.

    backoff = Backoff(first=0.05, cap=5.0)
    while ...:
        try: ...; backoff.reset()
        except ...: await anyio.sleep(backoff.next())

Standard library only (the client imports it).
"""

import random


class Backoff:
    """Delays of `first`, doubling up to `cap`, each with up to `jitter` of itself added at random
    (so that many clients that failed together do not retry together); `reset` after a success."""

    __slots__ = ("first", "cap", "factor", "jitter", "_next")

    def __init__(self, first: float = 0.05, cap: float = 5.0, factor: float = 2.0, jitter: float = 0.0) -> None:
        self.first, self.cap, self.factor, self.jitter = first, cap, factor, jitter
        self._next = first

    def next(self) -> float:
        """The delay to wait now; the following one grows."""
        delay = self._next
        self._next = min(self.cap, self._next * self.factor)
        return delay * (1 + self.jitter * random.random()) if self.jitter else delay

    def reset(self) -> None:
        self._next = self.first

    @property
    def at_cap(self) -> bool:
        return self._next >= self.cap
