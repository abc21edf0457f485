"""The failures a client sees, by code: one vocabulary for every door and every actor.

Standard library only: the actor runtime raises these without loading the wire protocol.
"""

from typing import Literal, get_args

ErrorCode = Literal[
    "bad_frame", "frame_too_large", "unknown_op", "invalid", "not_found", "conflict",
    "idempotency_conflict", "unknown_reservation", "unauthorized", "forbidden",
    "busy", "unavailable", "internal",
]
ERROR_CODES: tuple[str, ...] = get_args(ErrorCode)
#: What each code is over HTTP.
HTTP_STATUS: dict[str, int] = {
    "bad_frame": 400, "frame_too_large": 413, "unknown_op": 404, "invalid": 400, "not_found": 404,
    "conflict": 409, "idempotency_conflict": 409, "unknown_reservation": 404, "unauthorized": 401,
    "forbidden": 403, "busy": 503, "unavailable": 503, "internal": 500,
}
#: Codes a client may retry with the same request (and idempotency key).
RETRYABLE_CODES = frozenset({"busy", "unavailable"})


class OpError(Exception):
    """A failure a client sees as `{"ok": false, "error": {...}}`."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        return f"OpError({self.code!r}, {self.message!r}, field={self.field!r})"
