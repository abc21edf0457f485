"""The OpenAPI 3.1 document, generated from the msgspec types that are the schema."""

from typing import Any

import msgspec

import budgetd
from budgetd.protocol import RESULT_TYPES, AnyRequest, Err
from budgetd.server.http._rest import REST

JSON = "application/json"


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1, generated from the msgspec types that are the schema."""
    bodies = [face.body for face in REST if face.body is not None]
    results = [RESULT_TYPES[face.op] for face in REST]
    (rpc_request, err_schema, *rest_schemas), components = msgspec.json.schema_components(
        [AnyRequest, Err, *bodies, *results], ref_template="#/components/schemas/{name}")
    body_schemas = dict(zip([id(t) for t in bodies], rest_schemas[: len(bodies)]))
    result_schemas = rest_schemas[len(bodies):]
    for name in ("Reserve", "Route", "Ask", "Backup"):  # as REST bodies their `op` comes from the path
        required = components.get(name, {}).get("required", [])
        if "op" in required:
            required.remove("op")
    error = {"description": "the error envelope", "content": {JSON: {"schema": err_schema}}}
    paths: dict[str, dict] = {
        "/api/v1/rpc": {"post": {
            "summary": "any protocol request; answers the protocol's envelope",
            "requestBody": {"required": True, "content": {JSON: {"schema": rpc_request}}},
            "responses": {"200": {"description": "the success envelope"}, "default": error},
        }},
        "/api/v1/events": {"get": {
            "summary": "server-sent events; Last-Event-ID resumes",
            "parameters": [{"name": "topics", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "text/event-stream"}, "default": error},
        }},
        "/health": {"get": {"responses": {"200": {"description": "the process is up"}}}},
        "/ready": {"get": {"responses": {"200": {"description": "ledger open, prices loaded"}, "503": error}}},
        "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text"}}}},
    }
    for (method, path, kind, _, body), result in zip(REST, result_schemas):  # each Face with its result
        doc_path = path.replace(":path", "").replace(":int", "")
        op: dict[str, Any] = {"operationId": f"{method.lower()}_{kind.__struct_config__.tag.replace('.', '_')}",
                              "responses": {"200": {"description": "the result",
                                                    "content": {JSON: {"schema": result}}}, "default": error}}
        params = [{"name": n.split(":")[0], "in": "path", "required": True,
                   "schema": {"type": "integer" if n.endswith(":int") else "string"}}
                  for n in _path_names(path)]
        if method == "GET":
            params += [{"name": f, "in": "query", "schema": {"type": "string"}}
                       for f in kind.__struct_fields__ if f not in ("id", *[p["name"] for p in params])
                       and f != "filters"]
        if params:
            op["parameters"] = params
        if body is not None:
            op["requestBody"] = {"required": True, "content": {JSON: {"schema": body_schemas[id(body)]}}}
        paths.setdefault(doc_path, {})[method.lower()] = op
    return {"openapi": "3.1.0", "info": {"title": "budgetd", "version": budgetd.__version__},
            "paths": paths, "components": {"schemas": components,
                                           "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
