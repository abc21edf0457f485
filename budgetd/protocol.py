"""Wire protocol v1: one JSON object per line, requests tagged by `op`.

Every op of DESIGN §3 is a Struct here, with the Struct its result decodes
to. Only msgspec is imported: clients load this module on every call.
"""

import datetime as dt
import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from budgetd.model import (
    Alert,
    Alternative,
    Bucket,
    BudgetSpec,
    BudgetState,
    Decision,
    Dim,
    Estimate,
    Facts,
    Filters,
    Forecast,
    Label,
    Name,
    Need,
    PriceDiff,
    PriceEntry,
    PriceSpec,
    Recorded,
    ReportRow,
    SourceReport,
    SourceStatus,
    Struct,
    Time,
    Topic,
    Totals,
    Usage,
    UsagePatch,
    UsageRecord,
)

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_BYTES = 1 << 20

RequestId = int | Annotated[str, Meta(max_length=128)] | None
IdempotencyKey = Annotated[str, Meta(min_length=1, max_length=128)]

ERROR_CODES = (
    "bad_frame", "frame_too_large", "unknown_op", "invalid", "not_found", "conflict",
    "idempotency_conflict", "unknown_reservation", "unauthorized", "forbidden",
    "busy", "unavailable", "internal",
)


class OpError(Exception):
    """A failure a client sees as `{"ok": false, "error": {...}}`."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        return f"OpError({self.code!r}, {self.message!r}, field={self.field!r})"


# -- requests -------------------------------------------------------------------


class Request(Struct, tag_field="op", kw_only=True):
    id: RequestId = None


class Hello(Request, tag="hello", kw_only=True):
    client: Label | None = None
    protocol: int | None = None


class Ping(Request, tag="ping", kw_only=True):
    pass


class Check(Request, tag="check", kw_only=True):
    estimate: Estimate


class Reserve(Request, tag="reserve", kw_only=True):
    estimate: Estimate
    ttl_s: Annotated[float, Meta(gt=0, le=86400)] | None = None
    idempotency_key: IdempotencyKey | None = None


class Commit(Request, tag="commit", kw_only=True):
    reservation_id: Annotated[str, Meta(min_length=1, max_length=128)]
    usage: UsagePatch
    idempotency_key: IdempotencyKey | None = None


class Release(Request, tag="release", kw_only=True):
    reservation_id: Annotated[str, Meta(min_length=1, max_length=128)]


class Record(Request, tag="record", kw_only=True):
    usage: Usage
    idempotency_key: IdempotencyKey | None = None


class BudgetSet(Request, tag="budget.set", kw_only=True):
    budget: BudgetSpec


class BudgetGet(Request, tag="budget.get", kw_only=True):
    name: Name


class BudgetList(Request, tag="budget.list", kw_only=True):
    pass


class BudgetDelete(Request, tag="budget.delete", kw_only=True):
    name: Name


class Status(Request, tag="status", kw_only=True):
    pass


class Report(Request, tag="report", kw_only=True):
    group_by: Annotated[list[Dim], Meta(max_length=6)] = msgspec.field(default_factory=list)
    since: Time | None = None
    until: Time | None = None
    bucket: Bucket | None = None
    timezone: Annotated[str, Meta(max_length=64)] = "UTC"
    filters: Filters | None = None
    limit: Annotated[int, Meta(ge=1, le=10_000)] | None = None
    order: Literal["cost", "tokens", "requests", "group"] = "cost"


class UsageList(Request, tag="usage.list", kw_only=True):
    filters: Filters | None = None
    since: Time | None = None
    until: Time | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100
    after: Annotated[str, Meta(max_length=64)] | None = None


class PricesGet(Request, tag="prices.get", kw_only=True):
    model: Name
    provider: Name | None = None


class PricesList(Request, tag="prices.list", kw_only=True):
    provider: Name | None = None
    search: Annotated[str, Meta(max_length=128)] | None = None
    limit: Annotated[int, Meta(ge=1, le=100_000)] | None = None


class PricesRefresh(Request, tag="prices.refresh", kw_only=True):
    pass


#: What `prices.set` takes: a PriceEntry of which only model and the two main rates are required.
PriceOverride = PriceSpec


class PricesSet(Request, tag="prices.set", kw_only=True):
    price: PriceOverride


class PricesUnset(Request, tag="prices.unset", kw_only=True):
    model: Name


class PricesHistory(Request, tag="prices.history", kw_only=True):
    model: Name


class Backup(Request, tag="backup", kw_only=True):
    """An online, consistent copy of the ledger, written by the daemon to `path` (absolute, on its machine)."""

    path: Annotated[str, Meta(min_length=1, max_length=4096)]


class Route(Request, tag="route", kw_only=True):
    estimate: Estimate
    candidates: Annotated[list[Name], Meta(max_length=256)] | None = None
    need: Need | None = None


class AlertsList(Request, tag="alerts.list", kw_only=True):
    since: Time | None = None
    unacked: bool = False
    limit: Annotated[int, Meta(ge=1, le=10_000)] | None = None


class AlertsAck(Request, tag="alerts.ack", kw_only=True):
    alert_id: int
    by: Label | None = None


class Subscribe(Request, tag="subscribe", kw_only=True):
    topics: Annotated[list[Topic], Meta(min_length=1, max_length=5)]
    after: Annotated[int, Meta(ge=0)] | None = None  # resume after this seq (recent events only)


class Ask(Request, tag="ask", kw_only=True):
    question: Annotated[str, Meta(min_length=1, max_length=4000)]


REQUEST_TYPES: tuple[type[Request], ...] = (
    Hello, Ping, Check, Reserve, Commit, Release, Record, BudgetSet, BudgetGet, BudgetList,
    BudgetDelete, Status, Report, UsageList, PricesGet, PricesList, PricesRefresh, PricesSet,
    PricesUnset, PricesHistory, Route, AlertsList, AlertsAck, Subscribe, Ask, Backup,
)
AnyRequest = (
    Hello | Ping | Check | Reserve | Commit | Release | Record | BudgetSet | BudgetGet | BudgetList
    | BudgetDelete | Status | Report | UsageList | PricesGet | PricesList | PricesRefresh
    | PricesSet | PricesUnset | PricesHistory | Route | AlertsList | AlertsAck | Subscribe | Ask | Backup
)
OPS: dict[str, type[Request]] = {t.__struct_config__.tag: t for t in REQUEST_TYPES}


def op_name(request_type: type[Request]) -> str:
    return request_type.__struct_config__.tag


# -- results --------------------------------------------------------------------


class HelloResult(Struct, kw_only=True):
    server: str
    version: str
    protocol: int
    ops: list[str]


class Empty(Struct, kw_only=True):
    pass


class Released(Struct, kw_only=True):
    released: bool


class BudgetResult(Struct, kw_only=True):
    budget: BudgetSpec


class BudgetGetResult(Struct, kw_only=True):
    budget: BudgetSpec
    states: list[BudgetState]


class BudgetListResult(Struct, kw_only=True):
    budgets: list[BudgetSpec]


class Deleted(Struct, kw_only=True):
    deleted: bool


class ActorStatus(Struct, kw_only=True):
    name: str
    restarts: int
    mailbox_depth: int
    running: bool


class DaemonStatus(Struct, kw_only=True):
    version: str
    pid: int
    started_at: dt.datetime
    now: dt.datetime  # the daemon's clock, which windows and relative times are measured by
    uptime_s: float
    socket: str | None
    data_dir: str
    durability: str
    actors: list[ActorStatus]


class PricesStatus(Struct, kw_only=True):
    version: int
    models: int
    updated_at: dt.datetime | None
    sources: list[SourceStatus]


class StatusResult(Struct, kw_only=True):
    budgets: list[BudgetState]
    totals: Totals
    daemon: DaemonStatus
    prices: PricesStatus
    forecasts: list[Forecast] = msgspec.field(default_factory=list)  # budgets with a limit


class ReportResult(Struct, kw_only=True):
    rows: list[ReportRow]
    totals: Totals
    forecasts: list[Forecast] = msgspec.field(default_factory=list)


class UsageListResult(Struct, kw_only=True):
    records: list[UsageRecord]
    next: str | None = None


class PriceResult(Struct, kw_only=True):
    price: PriceEntry
    resolved_from: str | None = None


class PriceListResult(Struct, kw_only=True):
    prices: list[PriceEntry]
    version: int
    total: int


class RefreshReport(Struct, kw_only=True):
    version: int
    sources: list[SourceReport]
    changes: list[PriceDiff] = msgspec.field(default_factory=list)  # at most MAX_DIFFS, new models last
    more_changes: int = 0


class PriceHistoryResult(Struct, kw_only=True):
    model: str
    versions: list[PriceEntry]


class PriceUnsetResult(Struct, kw_only=True):
    removed: bool


class RouteResult(Struct, kw_only=True):
    choice: str | None
    decision: Decision | None
    alternatives: list[Alternative]


class AlertListResult(Struct, kw_only=True):
    alerts: list[Alert]


class BackupResult(Struct, kw_only=True):
    path: str
    bytes: int
    records: int
    duration_s: float


class Acked(Struct, kw_only=True):
    acked: bool


class Subscribed(Struct, kw_only=True):
    subscribed: list[str]


class AskResult(Struct, kw_only=True):
    answer: str
    facts: Facts
    model: str | None = None  # the LLM that wrote the answer; None when offline
    cost_usd: float = 0.0  # what that LLM call cost (recorded as component budgetd.assistant)
    offline: bool = True
    why_offline: str | None = None


RESULT_TYPES: dict[type[Request], Any] = {
    Hello: HelloResult, Ping: Empty, Check: Decision, Reserve: Decision, Commit: Recorded,
    Release: Released, Record: Recorded, BudgetSet: BudgetResult, BudgetGet: BudgetGetResult,
    BudgetList: BudgetListResult, BudgetDelete: Deleted, Status: StatusResult,
    Report: ReportResult, UsageList: UsageListResult, PricesGet: PriceResult,
    PricesList: PriceListResult, PricesRefresh: RefreshReport, PricesSet: PriceResult,
    PricesUnset: PriceUnsetResult, PricesHistory: PriceHistoryResult, Route: RouteResult,
    AlertsList: AlertListResult, AlertsAck: Acked, Subscribe: Subscribed, Ask: AskResult, Backup: BackupResult,
}


# -- envelopes ------------------------------------------------------------------


class ErrorBody(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    field: str | None = None


class Ok(msgspec.Struct):
    id: Any
    result: Any
    ok: bool = True


class Err(msgspec.Struct):
    id: Any
    error: ErrorBody
    ok: bool = False


class Event(msgspec.Struct):
    event: str
    seq: int
    ts: dt.datetime
    data: Any


class Response(msgspec.Struct):
    """What a client decodes first; `result` is decoded by the op's result type."""

    id: Any = None
    ok: bool = False
    result: msgspec.Raw = msgspec.Raw()
    error: ErrorBody | None = None
    # Events share the stream with responses.
    event: str | None = None
    seq: int | None = None
    ts: str | None = None
    data: msgspec.Raw = msgspec.Raw()


class _Envelope(msgspec.Struct):
    """The lenient view of a frame that failed to decode, to echo its id and op."""

    id: Any = None
    op: Any = None


# -- encoding and decoding ------------------------------------------------------

_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(AnyRequest)
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_response_decoder = msgspec.json.Decoder(Response)
_FIELD = re.compile(r" - at `(\$[^`]*)`")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]*)`")


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def encode_line(obj: Any) -> bytes:
    buf = bytearray()
    _encoder.encode_into(obj, buf)
    buf += b"\n"
    return bytes(buf)


def validation_error(exc: msgspec.ValidationError, prefix: str = "$") -> OpError:
    """Turn msgspec's message into an `invalid` error that names the field."""
    text = str(exc)
    match = _FIELD.search(text)
    field = match.group(1) if match else prefix
    message = _FIELD.sub("", text)
    unknown = _UNKNOWN_FIELD.search(text)
    if unknown:
        field = f"{field}.{unknown.group(1)}"
    if prefix != "$" and field.startswith("$"):
        field = prefix + field[1:]
    return OpError("invalid", f"{message} (at {field})", field)


def decode_request(frame: bytes | str) -> Request:
    """Decode one frame; raise OpError(bad_frame | unknown_op | invalid) with the id attached."""
    try:
        return _request_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        envelope = _lenient(frame)
        error = _classify(exc, envelope)
        error.request_id = envelope.id if _valid_id(envelope.id) else None  # type: ignore[attr-defined]
        raise error from None
    except msgspec.DecodeError as exc:
        error = OpError("bad_frame", f"frame is not a JSON object: {exc}")
        error.request_id = None  # type: ignore[attr-defined]
        raise error from None


def _lenient(frame: bytes | str) -> _Envelope:
    try:
        return _envelope_decoder.decode(frame)
    except msgspec.MsgspecError:
        return _Envelope()


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, (int, str)) and not isinstance(value, bool))


def _classify(exc: msgspec.ValidationError, envelope: _Envelope) -> OpError:
    text = str(exc)
    if text.startswith("Expected `object`, got") and " - at `" not in text:
        return OpError("bad_frame", "a frame must be one JSON object per line")
    if envelope.op is None:
        return OpError("invalid", "the request has no `op`; send e.g. {\"op\": \"ping\", \"id\": 1}", "$.op")
    if not isinstance(envelope.op, str) or envelope.op not in OPS:
        return OpError(
            "unknown_op",
            f"unknown op {envelope.op!r}; known ops: {', '.join(sorted(OPS))}",
            "$.op",
        )
    return validation_error(exc)


def request_id_of(error: OpError) -> Any:
    return getattr(error, "request_id", None)


def decode_response(line: bytes) -> Response:
    return _response_decoder.decode(line)


def ok(request_id: Any, result: Any) -> Ok:
    return Ok(id=request_id, result=result)


def err(request_id: Any, error: OpError) -> Err:
    return Err(id=request_id, error=ErrorBody(code=error.code, message=error.message, field=error.field))
