"""Property-based fuzz of the HTTP door driven by its own OpenAPI document: bodies generated from each
route's schema (valid and mutated), zero 5xx, every failure the error envelope."""

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgetd.server.http import openapi_document

DOC = openapi_document()
COMPONENTS = DOC["components"]["schemas"]
WITH_BODY = [(path, method, op) for path, item in DOC["paths"].items() for method, op in item.items()
             if "requestBody" in op and path != "/api/v1/rpc"]


def schema_of(op: dict) -> dict:
    return op["requestBody"]["content"]["application/json"]["schema"]


def from_schema(schema: dict, depth: int = 0) -> st.SearchStrategy:
    """Values for the JSON-schema subset msgspec emits (refs, objects, anyOf, enums, bounds)."""
    if "$ref" in schema:
        return st.deferred(lambda: from_schema(COMPONENTS[schema["$ref"].rsplit("/", 1)[-1]], depth + 1))
    if "anyOf" in schema:
        return st.one_of([from_schema(s, depth) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if kind == "object" and "properties" in schema:
        required = set(schema.get("required", ()))
        props = schema["properties"]
        optional = {k: from_schema(v, depth + 1) for k, v in props.items() if k not in required}
        fixed = {k: from_schema(v, depth + 1) for k, v in props.items() if k in required}
        return st.fixed_dictionaries(fixed, optional=optional if depth < 3 else {})
    if kind == "object":
        return st.dictionaries(st.text(max_size=10), st.one_of(st.integers(), st.text(max_size=10)), max_size=3)
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), depth + 1), max_size=3)
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum"), max_value=schema.get("maximum"))
    if kind == "number":
        return st.floats(min_value=schema.get("minimum"), max_value=schema.get("maximum"), allow_nan=False,
                         allow_infinity=False)
    if kind == "string":
        if schema.get("format") == "date-time":
            return st.datetimes(timezones=st.just(__import__("datetime").timezone.utc)).map(lambda t: t.isoformat())
        if schema.get("format") == "date":
            return st.dates().map(str)
        return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 40), 40))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return st.one_of(st.none(), st.integers(), st.text(max_size=10))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from conftest import Daemon

    d = Daemon(tmp_path_factory.mktemp("props"), http=True).start()
    yield d
    d.stop()


def concrete(path: str) -> str:
    return (path.replace("{reservation_id}", "r-x").replace("{name}", "fuzz")
            .replace("{model}", "gpt-4o").replace("{alert_id}", "1"))


@pytest.mark.parametrize("path,method,op", WITH_BODY, ids=[f"{m} {p}" for p, m, _ in WITH_BODY])
def test_generated_bodies_never_get_a_5xx(server, path, method, op):
    mutate = st.one_of(st.none(), st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=3))

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=from_schema(schema_of(op)), noise=st.dictionaries(st.text(max_size=8), mutate, max_size=2))
    def check(body, noise):
        if isinstance(body, dict) and noise:
            body = {**body, **noise}
        r = httpx.request(method.upper(), server.url + concrete(path), content=json.dumps(body), timeout=30)
        assert r.status_code < 500, (body, r.status_code, r.text)
        answer = r.json()
        if r.status_code >= 400:
            assert answer["ok"] is False and answer["error"]["code"] and answer["error"]["message"]

    check()
