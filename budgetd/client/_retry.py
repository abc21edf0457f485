"""The one retry policy of both clients.

A call is tried again, under a fresh request id and after a doubling delay, when the connection broke,
when no daemon listens, or when the daemon answered `busy` or `unavailable`. That is safe because every
write carries an idempotency key: a write sent twice is charged once.

    for attempt in attempts(request, ids, retries, path):
        with attempt:
            return attempt.result(transport.roundtrip(attempt.line, attempt.request_id, timeout))
        time.sleep(attempt.delay)

`with attempt` swallows a failure worth retrying while tries are left; the last attempt swallows nothing,
so the loop ends by that `return` or by an exception.
"""

import math
from pathlib import Path
from typing import Any, Iterator

import msgspec

from budgetd.backoff import Backoff
from budgetd.client._errors import DaemonUnavailable, Disconnected
from budgetd.protocol import RESULT_TYPES, RETRYABLE_CODES, OpError, Request, Response, encode_line


class _RetryableAnswer(Exception):
    """The daemon answered `busy` or `unavailable` and a try is left."""


class Attempt:
    """One try of a call: the request's line under its own id, and what to do with the answer."""

    def __init__(self, request: Request, request_id: int, *, delay: float, last: bool, path: Path) -> None:
        self.request = request
        self.request_id = request_id
        # A fresh id per try, so that a late answer to an earlier try is not taken for this one's.
        self.line = encode_line(msgspec.structs.replace(request, id=request_id))
        self.delay = delay  # how long to wait before the next try, when this one fails
        self.last = last
        self.path = path

    def result(self, response: Response) -> Any:
        """The answer's typed result; BudgetError when the daemon refused."""
        error = response.error
        if error is not None:
            if error.code in RETRYABLE_CODES and not self.last:
                raise _RetryableAnswer
            raise OpError(error.code, error.message, error.field)
        return msgspec.json.decode(response.result or b"{}", type=RESULT_TYPES[type(self.request)])

    def __enter__(self) -> "Attempt":
        return self

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> bool:
        if isinstance(error, _RetryableAnswer):
            return True
        if isinstance(error, OpError) and error.code in RETRYABLE_CODES and not self.last:
            return True  # no answer in time: the same request again (its idempotency key makes it safe)
        if isinstance(error, (Disconnected, DaemonUnavailable)):
            if not self.last:
                return True
            if isinstance(error, Disconnected):
                raise DaemonUnavailable(self.path, str(error)) from None
        return False


def attempts(request: Request, ids: Iterator[int], retries: int, path: Path) -> Iterator[Attempt]:
    """The tries of one call: `retries + 1` at most, waiting 0.05 s after the first failure, then twice as long
    after each next one."""
    backoff = Backoff(first=0.05, cap=math.inf)  # no cap: `retries` bounds the waiting
    for n in range(retries + 1):
        yield Attempt(request, next(ids), delay=backoff.next(), last=n == retries, path=path)
