"""How a call fails: the daemon's errors, a daemon that does not answer, and a connection that broke."""

from pathlib import Path

from budgetd.protocol import OpError

#: Errors from the daemon arrive as this exception (code, message, field).
BudgetError = OpError


class DaemonUnavailable(OpError):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            "unavailable",
            f"no budgetd answers on {path} ({reason}). Start one with `budget daemon` (or `make run`), "
            "or point to it with --socket / BUDGETD_SOCKET.",
        )


class Disconnected(Exception):
    """The connection broke before the answer came (the transports' one way to say so): the call may be
    retried on a new connection, and fails as DaemonUnavailable with this reason when no try is left."""
