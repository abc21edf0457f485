"""REST faces: how a method and path, the query and the JSON body make one protocol request."""

from typing import Any, Callable, NamedTuple

from budgetd.model import DIMS, BudgetSpec, Estimate, Usage, UsagePatch
from budgetd.protocol import (
    AlertsAck,
    AlertsList,
    Ask,
    Backup,
    BudgetDelete,
    BudgetGet,
    BudgetList,
    BudgetSet,
    Check,
    Commit,
    FleetStatus,
    OpError,
    PricesGet,
    PricesList,
    PricesRefresh,
    Record,
    Release,
    Report,
    Request,
    Reserve,
    Status,
    UsageList,
)
from budgetd.protocol import Route as RouteOp


class Face(NamedTuple):
    """One REST route: `build(query, body, path_params)` makes the fields of a request of `op`."""

    method: str
    path: str
    op: type[Request]
    build: Callable[[Any, Any, dict], dict]
    body: Any  # the documented type of the JSON body, or None


def _path(q: Any, b: Any, p: dict) -> dict:
    return dict(p)  # the request is in the path alone


REST: list[Face] = [Face(*row) for row in [
    ("POST", "/api/v1/usage", Record, lambda q, b, p: {"usage": b}, Usage),
    ("GET", "/api/v1/usage", UsageList, lambda q, b, p: _usage_query(q, b, p), None),
    ("POST", "/api/v1/check", Check, lambda q, b, p: {"estimate": b}, Estimate),
    ("POST", "/api/v1/reservations", Reserve, lambda q, b, p: b or {}, Reserve),
    ("POST", "/api/v1/reservations/{reservation_id}/commit", Commit, lambda q, b, p: {"usage": b, **p},
     UsagePatch),
    ("DELETE", "/api/v1/reservations/{reservation_id}", Release, _path, None),
    ("POST", "/api/v1/reservations/release", Release, lambda q, b, p: b or {}, Release),
    ("GET", "/api/v1/budgets", BudgetList, _path, None),
    ("GET", "/api/v1/budgets/{name}", BudgetGet, _path, None),
    ("PUT", "/api/v1/budgets/{name}", BudgetSet, lambda q, b, p: _budget_body(q, b, p), BudgetSpec),
    ("DELETE", "/api/v1/budgets/{name}", BudgetDelete, _path, None),
    ("GET", "/api/v1/status", Status, _path, None),
    ("GET", "/api/v1/fleet", FleetStatus, _path, None),
    ("GET", "/api/v1/report", Report, lambda q, b, p: _report_query(q, b, p), None),
    ("GET", "/api/v1/prices", PricesList, lambda q, b, p: dict(q), None),
    ("POST", "/api/v1/prices/refresh", PricesRefresh, _path, None),
    ("GET", "/api/v1/prices/{model:path}", PricesGet, lambda q, b, p: {**q, **p}, None),
    ("GET", "/api/v1/alerts", AlertsList, lambda q, b, p: dict(q), None),
    ("POST", "/api/v1/alerts/{alert_id:int}/ack", AlertsAck, lambda q, b, p: {**(b or {}), **p}, None),
    ("POST", "/api/v1/route", RouteOp, lambda q, b, p: b or {}, RouteOp),
    ("POST", "/api/v1/ask", Ask, lambda q, b, p: b or {}, Ask),
    ("POST", "/api/v1/backup", Backup, lambda q, b, p: b or {}, Backup),
]]


def _usage_query(query: Any, _body: Any, _path: dict) -> dict:
    return _query_fields(query, ("since", "until", "limit", "after"))


def _report_query(query: Any, _body: Any, _path: dict) -> dict:
    """`group_by=component,model` (or repeated), the dims as filters, the rest as they are."""
    fields = _query_fields(query, ("since", "until", "bucket", "timezone", "limit", "order"))
    group_by = [d for value in query.getlist("group_by") for d in value.split(",") if d]
    if group_by:
        fields["group_by"] = group_by
    return fields


def _query_fields(query: Any, names: tuple[str, ...]) -> dict:
    fields: dict[str, Any] = {name: query[name] for name in names if name in query}
    filters = {d: query[d] for d in DIMS if d in query}
    if filters:
        fields["filters"] = filters
    return fields


def _budget_body(_query: Any, body: Any, path: dict) -> dict:
    """PUT /budgets/{name}: the body is the BudgetSpec; its name, when absent, is the path's."""
    spec = dict(body or {})
    spec.setdefault("name", path["name"])
    if spec["name"] != path["name"]:
        raise OpError("invalid", f"the body names budget {spec['name']!r} but the path {path['name']!r}",
                      "$.budget.name")
    return {"budget": spec}
