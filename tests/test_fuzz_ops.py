"""A fuzz of every op's fields, generated from the protocol's own types (msgspec's type info): values
inside each type's bounds, at its edges, just past them, of the wrong type, and absurd ones (the
largest integers and floats, NaN, the oldest and newest times, very long strings). Every answer must be
a valid envelope that is never `internal`, and the daemon must keep serving without an actor restart."""

import datetime as dt
import json
import math

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgetd.protocol import OPS
from conftest import RawConn

UTC = dt.timezone.utc
ABSURD = st.sampled_from([None, True, -1, 0, 2**63, -(2**63) - 1, 10**40, 1e308, -1e308, "", "x" * 5000, [], {},
                          [[[]]], {"a": {"b": {}}}, "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00"])
TIMES = st.sampled_from(["2026-11-28T13:00:00Z", "1970-01-01T00:00:00Z", "1999-12-31T23:59:59.999999Z",
                         "2000-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00",
                         "2026-11-28T13:00:00", "not a time", "2026-02-30T00:00:00Z"])


def values(t: msgspec.inspect.Type, valid: bool, depth: int = 0) -> st.SearchStrategy:
    """Values for one field's type: inside its bounds (`valid`), or at and past them and absurd."""
    inspect = msgspec.inspect
    if isinstance(t, inspect.UnionType):
        return st.one_of([values(x, valid, depth) for x in t.types])
    if isinstance(t, inspect.NoneType):
        return st.none()
    if isinstance(t, inspect.BoolType):
        return st.booleans() if valid else ABSURD
    if isinstance(t, inspect.IntType):
        lo = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else -(2**63))
        hi = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else 2**63 - 1)
        if valid:
            return st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi]))
        return st.one_of(st.sampled_from([lo - 1, hi + 1]), ABSURD)
    if isinstance(t, inspect.FloatType):
        lo = t.ge if t.ge is not None else t.gt
        hi = t.le if t.le is not None else t.lt
        if valid:
            return st.floats(lo, hi, allow_nan=False, allow_infinity=False)
        past = [x * 1.000001 + 1e-9 for x in (hi,) if x is not None] + [-1e-9 for x in (lo,) if x == 0]
        return st.one_of(st.sampled_from([*past, math.inf, -math.inf, math.nan]), ABSURD)
    if isinstance(t, inspect.StrType):
        size = t.max_length or 64
        if valid:
            return st.text(min_size=t.min_length or 1, max_size=min(size, 64))
        return st.one_of(st.just("x" * (size + 1)), ABSURD)
    if isinstance(t, inspect.LiteralType):
        return st.sampled_from(list(t.values)) if valid else st.one_of(st.just("no-such-value"), ABSURD)
    if isinstance(t, inspect.DateTimeType):
        return st.sampled_from(["2026-11-28T13:00:00Z", "2026-12-01T00:00:00+01:00"]) if valid else TIMES
    if isinstance(t, inspect.ListType):
        if depth > 3:
            return st.just([])
        return st.lists(values(t.item_type, valid, depth + 1), max_size=4) if valid else ABSURD
    if isinstance(t, inspect.DictType):
        if depth > 3:
            return st.just({})
        items = st.dictionaries(st.text(min_size=1, max_size=8), values(t.value_type, valid, depth + 1), max_size=4)
        return items if valid else st.one_of(items, ABSURD)
    if isinstance(t, inspect.StructType):
        return struct_of(t, valid, depth)
    return ABSURD


def struct_of(t: msgspec.inspect.StructType, valid: bool, depth: int = 0) -> st.SearchStrategy:
    """A valid object, or (when not `valid`) one with exactly one field made wrong."""
    if depth > 3:
        return st.just({})
    good = {f.encode_name: values(f.type, True, depth + 1) for f in t.fields}
    required = {f.encode_name: good[f.encode_name] for f in t.fields if f.required}
    optional = {k: v for k, v in good.items() if k not in required}
    whole = st.fixed_dictionaries(required, optional=optional)
    if valid or not t.fields:
        return whole
    bad = {f.encode_name: values(f.type, False, depth + 1) for f in t.fields}

    def spoil(pair: tuple[dict, str]) -> st.SearchStrategy:
        obj, name = pair
        return bad[name].map(lambda v: {**obj, name: v})

    return st.one_of(st.tuples(whole, st.sampled_from(sorted(bad))).flatmap(spoil), ABSURD)


def request_of(name: str) -> st.SearchStrategy:
    info = msgspec.inspect.type_info(OPS[name])
    fields = tuple(f for f in info.fields if f.encode_name != "id")
    shape = msgspec.inspect.StructType(info.cls, fields, None, None, False, True)
    return st.one_of(struct_of(shape, True), struct_of(shape, False)).map(
        lambda d: {"op": name, "id": 1, **(d if isinstance(d, dict) else {"junk": d})})


SAFE_OPS = sorted(set(OPS) - {"subscribe", "prices.refresh", "backup"})  # a stream, a slow fetch, a file write
REQUESTS = st.one_of([request_of(name) for name in SAFE_OPS])


@pytest.fixture(scope="module")
def fuzzed(shared_daemon):
    yield shared_daemon
    with RawConn(shared_daemon.socket) as conn:
        status = conn.call({"op": "status", "id": 1})
    assert status["ok"] and not any(a["restarts"] for a in status["result"]["daemon"]["actors"]), status


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(request=REQUESTS)
def test_every_op_answers_any_field_with_a_valid_envelope(fuzzed, request):
    frame = json.dumps(request, allow_nan=True).encode()
    with RawConn(fuzzed.socket, timeout=30) as conn:
        conn.send(frame + b"\n")
        answer = conn.recv()
        assert set(answer) >= {"id", "ok"}, answer
        if not answer["ok"]:
            error = answer["error"]
            assert error["code"] != "internal", (request, error)
            assert error["message"], error
        assert conn.call({"op": "ping", "id": "alive"})["ok"]
