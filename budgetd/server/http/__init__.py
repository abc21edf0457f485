"""The HTTP door (starlette, embedded uvicorn): the protocol at `POST /api/v1/rpc`, REST faces, events,
health, metrics and the OpenAPI document."""

from budgetd.server.http._door import HttpDoor, Token  # noqa: F401
from budgetd.server.http._openapi import openapi_document  # noqa: F401
from budgetd.server.http._rest import REST, Face  # noqa: F401
from budgetd.server.http._server import HttpRefused, HttpServer, parse_listen  # noqa: F401
