"""Frames on the wire: the envelopes, and encoding and decoding with errors that name the field."""

import datetime as dt
from typing import Any, Union

import msgspec

from budgetd.errors import OpError
from budgetd.validation import in_words
from budgetd.protocol._requests import OPS, REQUEST_TYPES, Request

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_BYTES = 1 << 20

#: Any request, told apart by its `op`.
AnyRequest = Union[REQUEST_TYPES]  # type: ignore[valid-type]


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


class Event(msgspec.Struct, omit_defaults=True):
    event: str
    seq: int  # this node's numbering: each node's stream counts its own
    ts: dt.datetime
    data: Any
    node: str | None = None  # in a fleet: the node whose event it is


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
    node: str | None = None


class _Envelope(msgspec.Struct):
    """The lenient view of a frame that failed to decode, to echo its id and op."""

    id: Any = None
    op: Any = None


# -- encoding and decoding ------------------------------------------------------

_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(AnyRequest)
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_response_decoder = msgspec.json.Decoder(Response)


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def encode_line(obj: Any) -> bytes:
    buf = bytearray()
    _encoder.encode_into(obj, buf)
    buf += b"\n"
    return bytes(buf)


def validation_error(exc: msgspec.ValidationError, prefix: str = "$", root: Any = None) -> OpError:
    """Turn msgspec's message into an `invalid` error that names the field and says, in words, what it
    takes; `root` (the type decoded at `prefix`) lets it list a vocabulary's values."""
    path, words = in_words(exc, root)
    field = prefix + path[1:]
    return OpError("invalid", f"{field[2:] or 'the request'}: {words}", field)


_TOO_DEEP = "the frame is nested deeper than any request of the protocol; send one flat JSON object per line"


def decode_request(frame: bytes | str) -> Request:
    """Decode one frame; raise OpError(bad_frame | unknown_op | invalid) with the id attached."""
    try:
        return _request_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        envelope = _lenient(frame)
        error = _classify(exc, envelope) if envelope is not None else OpError("bad_frame", _TOO_DEEP)
        error.request_id = envelope.id if envelope is not None and _valid_id(envelope.id) else None  # type: ignore
        raise error from None
    except msgspec.DecodeError as exc:
        error = OpError("bad_frame", f"frame is not a JSON object: {exc}")
        error.request_id = None  # type: ignore[attr-defined]
        raise error from None
    except RecursionError:  # no request type nests deeply: such a frame is not one of ours
        error = OpError("bad_frame", _TOO_DEEP)
        error.request_id = None  # type: ignore[attr-defined]
        raise error from None


def decode_json(body: bytes) -> Any:
    """Any JSON document of a body (REST faces), with a depth no request needs refused as `bad_frame`."""
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise OpError("bad_frame", f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise OpError("bad_frame", _TOO_DEEP) from None


def _lenient(frame: bytes | str) -> _Envelope | None:
    """The id and op of a frame that failed to decode; None when it is nested too deeply to read."""
    try:
        return _envelope_decoder.decode(frame)
    except RecursionError:
        return None
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
    return validation_error(exc, root=OPS[envelope.op])


def request_id_of(error: OpError) -> Any:
    return getattr(error, "request_id", None)


def decode_response(line: bytes) -> Response:
    return _response_decoder.decode(line)


def ok(request_id: Any, result: Any) -> Ok:
    return Ok(id=request_id, result=result)


def err(request_id: Any, error: OpError) -> Err:
    return Err(id=request_id, error=ErrorBody(code=error.code, message=error.message, field=error.field))
