"""`budget mcp`: the daemon's ops as MCP tools, resources and prompts, so agents can see and respect budgets.

Built on the installed `mcp` SDK's `MCPServer`. Every tool talks to the daemon
through the client library; a daemon error becomes a tool error carrying the
daemon's message. Tool results are structured content (the daemon's answer
as JSON) plus one short line for people and models to read. The daemon's
events drive resource-updated notifications, both to `subscriptions/listen`
streams (protocol 2026-07-28) and to clients of earlier versions that sent
`resources/subscribe`.
"""

import contextlib
import logging
from typing import Annotated, Any, AsyncIterator, Awaitable, Callable, Mapping

import anyio
import msgspec
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError, UnexpectedToolError
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated
from mcp.shared.exceptions import MCPError
from mcp_types import (INTERNAL_ERROR, INVALID_PARAMS, CallToolResult, EmptyResult, SubscribeRequestParams,
                       TextContent, ToolAnnotations, UnsubscribeRequestParams)
from pydantic import Field, ValidationError

import budgetd
from budgetd.backoff import Backoff
from budgetd.client import BudgetClient
from budgetd.model import Bucket, Dim, ReportOrder, ServiceTier, Tier
from budgetd.periods import when_text
from budgetd.protocol import HTTP_STATUS, Ask, OpError
from budgetd.render import count, money

log = logging.getLogger("budgetd.mcp")

INSTRUCTIONS = """\
budgetd is the LLM budget authority of this system. Before an expensive LLM call, ask it:
budget_check (would it fit?) or budget_reserve (hold the estimate), then budget_commit the
actual usage (or budget_release the hold). If a decision is not allowed, do not make the
call; use its suggestion (a cheaper model) or route_model. budget_status shows every budget
and where it is heading; budget_report shows what was spent on what. Money is in USD."""

Component = Annotated[str, Field(description="Who spends: the calling agent or service, e.g. 'rhetor'",
                                 min_length=1, max_length=128)]
Model = Annotated[str, Field(description="Model name as the provider or litellm knows it, e.g. 'gpt-4o', "
                                         "'claude-sonnet-4-5', 'anthropic/claude-haiku-4-5'",
                             min_length=1, max_length=128)]
Tokens = Annotated[int, Field(ge=0, le=100_000_000)]
CacheRead = Annotated[int, Field(ge=0, le=100_000_000, description="Prompt tokens served from the cache")]
CacheWrite = Annotated[int, Field(ge=0, le=100_000_000, description="Prompt tokens written to the cache for its "
                                                                   "default lifetime (Anthropic's 5 minutes)")]
CacheWrite1h = Annotated[int, Field(ge=0, le=100_000_000, description="Prompt tokens written to the cache for an "
                                                                     "hour")]
Reasoning = Annotated[int, Field(ge=0, le=100_000_000, description="How many of output_tokens were reasoning")]
AudioIn = Annotated[int, Field(ge=0, le=100_000_000, description="How many of input_tokens were audio")]
AudioOut = Annotated[int, Field(ge=0, le=100_000_000, description="How many of output_tokens were audio")]
ServiceTierField = Annotated[ServiceTier, Field(description="The provider's processing tier the call was billed at")]
WebSearches = Annotated[int, Field(ge=0, le=10_000, description="Web searches the call made")]
ReservationId = Annotated[str, Field(description="The reservation_id a budget_reserve returned", min_length=1,
                                     max_length=64)]
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True)
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False)


def _builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


def _result(value: Any, text: str) -> CallToolResult:
    data = _builtins(value)
    if not isinstance(data, dict):
        data = {"result": data}
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


def _error_result(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _pairs(mapping: Mapping[str, Any]) -> str:
    """A group or budget key as people read it: `component=a, model=gpt-4o` (`-` for no value)."""
    return ", ".join(f"{k}={'-' if v is None else v}" for k, v in mapping.items())


def _budget_name(state: Any) -> str:
    """A budget's counter: its name, and the key when the budget is counted per component, model, ..."""
    return f"{state.budget} [{_pairs(state.key)}]" if state.key else state.budget


def _limit_text(state: Any) -> str:
    return money(state.limit_usd) if state.limit_usd is not None else f"{count(state.limit_tokens)} tokens"


def _decision_text(d: Any) -> str:
    head = f"{'ALLOWED' if d.allowed else 'DENIED'} ({d.action}): estimated {money(d.estimated_cost_usd)}"
    parts = [head] + list(d.reasons)
    if d.suggestion is not None:
        parts.append(f"suggestion: {d.suggestion.model} at {money(d.suggestion.estimated_cost_usd)}")
    if getattr(d, "reservation_id", None):
        parts.append(f"reservation {d.reservation_id} until {d.expires_at:%H:%M:%S} UTC")
    return "; ".join(parts)


def _time(value: str | None, field: str) -> str | None:
    """A time bound, checked here and sent as written: the daemon reads it by its clock and zone. A bad one
    is refused as the daemon would refuse it."""
    if value is None:
        return None
    try:
        return when_text(value)
    except ValueError as exc:
        raise OpError("invalid", str(exc), field) from None


def _refusal_text(exc: OpError) -> str:
    """The daemon's message as every door gives it (what was wrong, what to do; the field named in it)."""
    return exc.message


def _tool_error(exc: OpError) -> Exception:
    return ToolError(_refusal_text(exc))


def _protocol_error(exc: OpError) -> Exception:
    """For resources and prompts: a JSON-RPC error with the daemon's message (raised as MCPError, the SDK
    passes it on as it is, without logging a traceback)."""
    callers_fault = HTTP_STATUS.get(exc.code, 500) < 500
    return MCPError(code=INVALID_PARAMS if callers_fault else INTERNAL_ERROR, message=_refusal_text(exc))


def _arguments_text(tool: str, error: ValidationError) -> str:
    problems = "; ".join(f"{'.'.join(str(part) for part in e['loc']) or 'arguments'}: {e['msg']}"
                         for e in error.errors(include_url=False))
    return f"bad arguments to {tool}: {problems}. Correct them as the tool's input schema says and call again."


class BridgeServer(MCPServer):
    """`MCPServer` with every error a user can cause in one clear line (no traceback on stderr), and
    `resources/subscribe` for clients of protocol versions before 2026-07-28 (a classic `ClientSession`),
    whose updates go to their connection rather than to a `subscriptions/listen` stream."""

    def __init__(self, **settings: Any) -> None:
        self._bus = InMemorySubscriptionBus()
        super().__init__(subscriptions=self._bus, **settings)
        #: Tools left out by --read-only, named in the refusal when a client calls one anyway.
        self.withheld_tools: set[str] = set()
        self._subscribed: dict[Connection, set[str]] = {}
        self._lowlevel_server.add_request_handler("resources/subscribe", SubscribeRequestParams, self._subscribe)
        self._lowlevel_server.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams,
                                                  self._unsubscribe)

    async def resource_updated(self, uri: str) -> None:
        """Tell every client that follows `uri`, whichever way it subscribed."""
        await self._bus.publish(ResourceUpdated(uri=uri))
        for connection, uris in list(self._subscribed.items()):
            if uri in uris:
                await connection.send_resource_updated(uri)  # best effort: a closed connection drops it

    async def _subscribe(self, ctx: ServerRequestContext, params: SubscribeRequestParams) -> EmptyResult:
        # A subscription belongs to the connection, which the SDK's per-request session holds but does
        # not expose; its exit stack forgets the subscriptions when the client goes.
        connection = ctx.session._connection
        if connection not in self._subscribed:
            self._subscribed[connection] = set()
            connection.exit_stack.callback(self._subscribed.pop, connection, None)
        self._subscribed[connection].add(str(params.uri))
        return EmptyResult()

    async def _unsubscribe(self, ctx: ServerRequestContext, params: UnsubscribeRequestParams) -> EmptyResult:
        self._subscribed.get(ctx.session._connection, set()).discard(str(params.uri))
        return EmptyResult()

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError:
            raise  # a bug of ours: the SDK logs it and tells the client only that the tool failed
        except ToolError as exc:
            if name in self.withheld_tools:
                return _error_result(f"{name} is not served: this bridge runs with --read-only "
                                     "(start `budget mcp` without it to reserve, commit, record or ack)")
            if name not in {t.name for t in await self.list_tools()}:
                return _error_result(f"no tool named {name!r}; tools/list shows the tools of this server")
            if isinstance(exc.__cause__, ValidationError):
                return _error_result(_arguments_text(name, exc.__cause__))
            # The SDK's ToolError wraps the one a tool raised (its `__cause__`), which is already one line.
            return _error_result(str(exc.__cause__ or exc))

    async def read_resource(self, uri: Any, context: Any = None) -> Any:
        try:
            return await super().read_resource(uri, context)
        except ResourceNotFoundError:  # no resource has this URI (one that does raises MCPError)
            raise MCPError(code=INVALID_PARAMS, data={"uri": str(uri)}, message=f"no resource {uri}; resources/list "
                           "and resources/templates/list show the resources of this server") from None

    async def get_prompt(self, name: str, arguments: dict[str, Any] | None = None, context: Any = None) -> Any:
        prompt = {p.name: p for p in await self.list_prompts()}.get(name)
        if prompt is None:
            raise MCPError(code=INVALID_PARAMS, message=f"no prompt named {name!r}; prompts/list shows the "
                                                        "prompts of this server")
        takes = {a.name: bool(a.required) for a in prompt.arguments or []}
        wrong = ([f"missing {a}" for a, required in takes.items() if required and a not in (arguments or {})]
                 + [f"no argument {a}" for a in arguments or {} if a not in takes])
        if wrong:
            accepted = ", ".join(a if required else f"{a} (optional)" for a, required in takes.items())
            raise MCPError(code=INVALID_PARAMS, message=f"bad arguments to prompt {name}: {', '.join(wrong)}; "
                                                        f"it takes {accepted or 'no arguments'}")
        return await super().get_prompt(name, arguments, context)


def build_server(socket: str | None = None, *, read_only: bool = False) -> BridgeServer:
    """The MCP server; tools call the daemon at `socket` (default: the standard path)."""
    state: dict[str, BudgetClient] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_server: MCPServer) -> AsyncIterator[None]:
        async with BudgetClient(socket, timeout=30.0, retries=2) as client, anyio.create_task_group() as tg:
            state["client"] = client
            tg.start_soon(_follow_events, socket, server.resource_updated, budget_uris)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()

    server = BridgeServer(name="budgetd", version=budgetd.__version__, instructions=INSTRUCTIONS,
                          lifespan=lifespan)

    async def call(make: Any) -> Any:
        return await _read(state, make, _tool_error)

    async def read(make: Any) -> Any:
        return await _read(state, make, _protocol_error)

    async def budget_uris() -> list[str]:
        """The resources that move when spend does: all budgets, and each one."""
        try:
            names = [b.name for b in await state["client"].budget_list()]
        except OpError as exc:
            log.debug("budget names: %s", exc)
            names = []
        return ["budget://budgets", *(f"budget://budgets/{name}" for name in names)]

    def writes(tool: Callable[..., Awaitable[CallToolResult]]) -> Any:
        """A tool that changes things: served, unless read-only."""
        if read_only:
            server.withheld_tools.add(tool.__name__)
            return tool
        return server.tool(annotations=WRITES)(tool)

    # -- read-only tools -------------------------------------------------------------

    @server.tool(annotations=READ_ONLY)
    async def budget_check(
        component: Component, model: Model,
        input_tokens: Annotated[Tokens, Field(description="Prompt tokens you will send")],
        max_output_tokens: Annotated[Tokens | None, Field(description="Most output tokens you allow; "
                                                                       "default: the model's maximum, capped")] = None,
        task_type: Annotated[str | None, Field(description="What the call is for, e.g. 'summarise'")] = None,
        context_id: Annotated[str | None, Field(description="Session or task id")] = None,
        priority: Annotated[int, Field(ge=1, le=10, description="10 is critical")] = 5,
    ) -> CallToolResult:
        """Would this LLM call fit every budget that covers it? Nothing is held. Answers allowed, the
        action (allow, warn, downgrade, deny), the estimated cost, the reasons, and a cheaper suggestion."""
        d = await call(lambda c: c.check(component=component, model=model, input_tokens=input_tokens,
                                         max_output_tokens=max_output_tokens, task_type=task_type,
                                         context_id=context_id, priority=priority))
        return _result(d, _decision_text(d))

    @server.tool(annotations=READ_ONLY)
    async def budget_status() -> CallToolResult:
        """Every budget's current window (spent, held, limit, status), the forecast of each (projected
        spend at the window's end, when the limit will be reached) and the ledger's totals."""
        s = await call(lambda c: c.status())
        lines = [f"total spent {money(s.totals.cost_usd)} over {count(s.totals.requests)} calls"]
        lines += [f"{_budget_name(b)}: {money(b.spent_usd)} of {_limit_text(b)} ({b.used_fraction:.0%}, {b.status})"
                  for b in s.budgets]
        data = {"budgets": _builtins(s.budgets), "forecasts": _builtins(s.forecasts), "totals": _builtins(s.totals)}
        return CallToolResult(content=[TextContent(type="text", text="\n".join(lines))], structured_content=data)

    @server.tool(annotations=READ_ONLY)
    async def budget_report(
        group_by: Annotated[list[Dim], Field(description="Dims to group by", max_length=6)] = [],  # noqa: B006
        since: Annotated[str | None, Field(description="RFC 3339 time, a date, or a duration back from now "
                                                        "such as '7d' or '12h'")] = None,
        until: Annotated[str | None, Field(description="As since; default now")] = None,
        bucket: Annotated[Bucket | None,
                          Field(description="Time buckets, in `timezone`")] = None,
        timezone: Annotated[str, Field(description="IANA zone of the buckets and dates")] = "UTC",
        filters: Annotated[dict[Dim, str] | None, Field(description="Exact values of dims to keep")] = None,
        limit: Annotated[int | None, Field(ge=1, le=1000, description="Keep the first N groups; the rest "
                                                                       "are one 'other' row")] = None,
        order: Annotated[ReportOrder,
                         Field(description="How groups are ranked (largest first), or by name")] = "cost",
    ) -> CallToolResult:
        """Tokens and cost grouped by dims (component, model, provider, tier, context_id, task_type),
        optionally per hour/day/week/month, over a time range. Exact sums; rows add up to the totals."""
        r = await call(lambda c: c.report(group_by, since=_time(since, "since"),
                                          until=_time(until, "until"), bucket=bucket,
                                          timezone=timezone, filters=filters, limit=limit, order=order))
        lines = [f"total {money(r.totals.cost_usd)} over {count(r.totals.requests)} calls, "
                 f"{count(r.totals.tokens)} tokens"]
        for row in r.rows[:20]:
            name = "(other)" if row.other else _pairs(row.group) or "all"
            when = f"{row.bucket_start:%Y-%m-%d %H:%M} " if row.bucket_start else ""
            lines.append(f"{when}{name}: {money(row.cost_usd)}, {count(row.tokens)} tokens")
        if len(r.rows) > 20:
            lines.append(f"... {len(r.rows) - 20} more rows in the structured result")
        return _result(r, "\n".join(lines))

    @server.tool(annotations=READ_ONLY)
    async def price_lookup(model: Model, provider: Annotated[str | None, Field(description="e.g. 'openai'")] = None
                           ) -> CallToolResult:
        """The price budgetd charges for a model: USD per million input, output and cache tokens, tier,
        context size, capabilities, source."""
        r = await call(lambda c: c.prices_get(model, provider))
        p = r.price
        return _result(r, f"{p.model} ({p.provider or '?'}, {p.tier or '?'}): ${p.input_per_mtok:g}/M in, "
                          f"${p.output_per_mtok:g}/M out, from {p.source}")

    @server.tool(annotations=READ_ONLY)
    async def price_search(
        search: Annotated[str, Field(description="Part of a model name, e.g. 'sonnet'", max_length=128)],
        provider: Annotated[str | None, Field(description="Only this provider")] = None,
        limit: Annotated[int, Field(ge=1, le=200, description="At most this many models")] = 20,
    ) -> CallToolResult:
        """Models whose name matches, with their prices (USD per million tokens)."""
        r = await call(lambda c: c.prices_list(search=search, provider=provider, limit=limit))
        lines = [f"{p.model}: ${p.input_per_mtok:g}/M in, ${p.output_per_mtok:g}/M out ({p.tier or '?'})"
                 for p in r.prices]
        return _result(r, "\n".join(lines) or f"no model matches {search!r}")

    @server.tool(annotations=READ_ONLY)
    async def route_model(
        component: Component,
        model: Annotated[str, Field(description="The model you would use; alternatives are weighed against it",
                                    min_length=1, max_length=128)],
        input_tokens: Annotated[Tokens, Field(description="Prompt tokens you will send")],
        max_output_tokens: Annotated[Tokens | None, Field(description="Most output tokens you allow")] = None,
        candidates: Annotated[list[str] | None, Field(description="Models to choose from (default: priced "
                                                                   "chat models)", max_length=256)] = None,
        capabilities: Annotated[list[str] | None, Field(description="Needed, e.g. ['function_calling', "
                                                                     "'vision']")] = None,
        min_context_tokens: Annotated[Tokens | None, Field(description="Context window needed")] = None,
        max_tier: Annotated[Tier | None,
                            Field(description="Most expensive tier acceptable")] = None,
    ) -> CallToolResult:
        """Which model to use for this request under the budgets: the choice, its decision, and every
        alternative with its estimated cost and whether it fits."""
        need = {k: v for k, v in (("capabilities", capabilities), ("min_context_tokens", min_context_tokens),
                                  ("max_tier", max_tier)) if v}
        r = await call(lambda c: c.route(component=component, model=model, input_tokens=input_tokens,
                                         max_output_tokens=max_output_tokens, candidates=candidates,
                                         need=need or None))
        if r.choice is None or r.decision is None:
            return _result(r, "no model fits the budgets: " + "; ".join(f"{a.model}: {a.why}"
                                                                         for a in r.alternatives[:5]))
        return _result(r, f"use {r.choice}: " + _decision_text(r.decision))

    @server.tool(annotations=READ_ONLY)
    async def alerts_list(
        unacked_only: Annotated[bool, Field(description="Only alerts nobody acknowledged yet")] = True,
        limit: Annotated[int, Field(ge=1, le=500, description="At most this many alerts")] = 20,
    ) -> CallToolResult:
        """Recent budget and price alerts, newest first."""
        alerts = await call(lambda c: c.alerts_list(unacked=unacked_only, limit=limit))
        lines = [f"#{a.id} {a.severity} {a.kind}: {a.message}" for a in alerts]
        return _result({"alerts": alerts}, "\n".join(lines) or "no alerts")

    @server.tool(annotations=READ_ONLY)
    async def budget_ask(question: Annotated[str, Field(description="A question about spend and budgets",
                                                        min_length=1, max_length=2000)]) -> CallToolResult:
        """Ask budgetd's assistant about spending: answers from the ledger's facts (with an LLM when one is
        configured), with recommendations."""
        r = await call(lambda c: c.call(Ask(question=question)))
        return _result(r, r.answer)

    # -- tools that change things ---------------------------------------------------------

    @writes
    async def budget_reserve(
        component: Component, model: Model,
        input_tokens: Annotated[Tokens, Field(description="Prompt tokens you will send")],
        max_output_tokens: Annotated[Tokens | None, Field(description="Most output tokens you allow")] = None,
        task_type: Annotated[str | None, Field(description="What the call is for")] = None,
        context_id: Annotated[str | None, Field(description="Session or task id")] = None,
        priority: Annotated[int, Field(ge=1, le=10, description="10 is critical")] = 5,
        ttl_s: Annotated[float | None, Field(gt=0, le=86400, description="Seconds the hold lives")] = None,
    ) -> CallToolResult:
        """Hold the estimated cost against the budgets before an LLM call. If allowed, make the call and
        then budget_commit the actual usage with the reservation_id (or budget_release it)."""
        d = await call(lambda c: c.reserve(component=component, model=model, input_tokens=input_tokens,
                                           max_output_tokens=max_output_tokens, task_type=task_type,
                                           context_id=context_id, priority=priority, ttl_s=ttl_s))
        return _result(d, _decision_text(d))

    @writes
    async def budget_commit(
        reservation_id: ReservationId,
        input_tokens: Annotated[Tokens, Field(description="Prompt tokens not served from cache")] = 0,
        output_tokens: Annotated[Tokens, Field(description="Output tokens, reasoning included")] = 0,
        cache_read_tokens: CacheRead = 0, cache_write_tokens: CacheWrite = 0,
        cache_write_1h_tokens: CacheWrite1h = 0,
        reasoning_tokens: Reasoning = 0, audio_input_tokens: AudioIn = 0, audio_output_tokens: AudioOut = 0,
        service_tier: ServiceTierField = "standard", web_search_requests: WebSearches = 0,
        model: Annotated[str | None, Field(description="The model used, if not the one reserved")] = None,
    ) -> CallToolResult:
        """Replace a hold with what the call actually used; the ledger records it."""
        fields = {"input_tokens": input_tokens, "output_tokens": output_tokens,
                  "cache_read_tokens": cache_read_tokens, "cache_write_tokens": cache_write_tokens,
                  "cache_write_1h_tokens": cache_write_1h_tokens, "reasoning_tokens": reasoning_tokens,
                  "audio_input_tokens": audio_input_tokens, "audio_output_tokens": audio_output_tokens,
                  "service_tier": service_tier, "web_search_requests": web_search_requests}
        if model:
            fields["model"] = model
        r = await call(lambda c: c.commit(reservation_id, **fields))
        return _result(r, f"recorded #{r.record_id}: {money(r.cost_usd)} for {r.model}")

    @writes
    async def budget_release(reservation_id: ReservationId) -> CallToolResult:
        """Drop a hold without spending (the call was not made)."""
        released = await call(lambda c: c.release(reservation_id))
        return _result({"released": released}, "released" if released else "nothing to release")

    @writes
    async def budget_record(
        component: Component, model: Model,
        input_tokens: Annotated[Tokens, Field(description="Prompt tokens not served from cache")] = 0,
        output_tokens: Annotated[Tokens, Field(description="Output tokens, reasoning included")] = 0,
        cache_read_tokens: CacheRead = 0, cache_write_tokens: CacheWrite = 0,
        cache_write_1h_tokens: CacheWrite1h = 0,
        reasoning_tokens: Reasoning = 0, audio_input_tokens: AudioIn = 0, audio_output_tokens: AudioOut = 0,
        service_tier: ServiceTierField = "standard", web_search_requests: WebSearches = 0,
        task_type: Annotated[str | None, Field(description="What the call was for")] = None,
        context_id: Annotated[str | None, Field(description="Session or task id")] = None,
        cost_usd: Annotated[float | None, Field(ge=0, description="A cost you know (overrides the "
                                                                   "computed one)")] = None,
    ) -> CallToolResult:
        """Record an LLM call that was made without a reservation."""
        r = await call(lambda c: c.record(component=component, model=model, input_tokens=input_tokens,
                                          output_tokens=output_tokens, cache_read_tokens=cache_read_tokens,
                                          cache_write_tokens=cache_write_tokens,
                                          cache_write_1h_tokens=cache_write_1h_tokens,
                                          reasoning_tokens=reasoning_tokens, audio_input_tokens=audio_input_tokens,
                                          audio_output_tokens=audio_output_tokens, service_tier=service_tier,
                                          web_search_requests=web_search_requests, task_type=task_type,
                                          context_id=context_id, cost_usd=cost_usd))
        return _result(r, f"recorded #{r.record_id}: {money(r.cost_usd)} for {r.model}")

    @writes
    async def alerts_ack(alert_id: Annotated[int, Field(ge=1, description="The alert's id")]) -> CallToolResult:
        """Acknowledge an alert (by its id from alerts_list), so it leaves the unacknowledged list."""
        acked = await call(lambda c: c.alerts_ack(alert_id, by="mcp"))
        return _result({"acked": acked}, f"alert {alert_id} acknowledged" if acked else
                       f"alert {alert_id} was already acknowledged or does not exist")

    # -- resources ---------------------------------------------------------------------------

    @server.resource("budget://budgets", mime_type="application/json",
                     description="Every budget with its current window's state and forecast")
    async def budgets_resource() -> str:
        s = await read(lambda c: c.status())
        return msgspec.json.encode({"budgets": s.budgets, "forecasts": s.forecasts}).decode()

    @server.resource("budget://budgets/{name}", mime_type="application/json",
                     description="One budget: its spec and the states of its current window")
    async def budget_resource(name: str) -> str:
        return msgspec.json.encode(await read(lambda c: c.budget_get(name))).decode()

    @server.resource("budget://prices/{model}", mime_type="application/json", description="One model's price")
    async def price_resource(model: str) -> str:
        return msgspec.json.encode(await read(lambda c: c.prices_get(model))).decode()

    @server.resource("budget://alerts", mime_type="application/json", description="Unacknowledged alerts")
    async def alerts_resource() -> str:
        return msgspec.json.encode({"alerts": await read(lambda c: c.alerts_list(unacked=True))}).decode()

    # -- prompts -------------------------------------------------------------------------------

    @server.prompt(name="plan-within-budget", description="Plan a task so that its LLM calls fit the budgets")
    async def plan_within_budget(task: str, component: str) -> str:
        s = await read(lambda c: c.status())
        budgets = "\n".join(f"- {_budget_name(b)}: {money(b.spent_usd)} spent of {_limit_text(b)} ({b.status}), "
                            f"policy {b.policy}" for b in s.budgets) or "- none"
        return (f"You are about to do this task as component '{component}':\n\n{task}\n\n"
                f"The budgets now:\n{budgets}\n\n"
                "Plan the LLM calls the task needs. For each, estimate the tokens, use route_model to pick "
                "the cheapest model with the capabilities it needs, and budget_reserve before making it; "
                "commit the actual usage after. If a reservation is denied, change the plan (smaller "
                "prompts, a cheaper tier, fewer calls) instead of retrying.")

    @server.prompt(name="explain-spend", description="Explain where the money went and how to spend less")
    async def explain_spend(since: str = "7d") -> str:
        r = await read(lambda c: c.report(["component", "model"], since=_time(since, "since"), limit=15))
        rows = "\n".join(f"- {'(other)' if row.other else _pairs(row.group)}: {money(row.cost_usd)}, "
                         f"{count(row.tokens)} tokens, {count(row.requests)} calls" for row in r.rows) or "- none"
        return (f"Spend since {since}: {money(r.totals.cost_usd)} over {count(r.totals.requests)} calls.\n"
                f"By component and model:\n{rows}\n\n"
                "Explain which components and models drive the cost, and suggest concrete savings "
                "(cheaper models with the same capabilities via price_search, prompt caching, lower tiers). "
                "Quote the numbers.")

    return server


async def _read(state: dict[str, BudgetClient], make: Any, refuse: Callable[[OpError], Exception]) -> Any:
    """`make(client)`, with the daemon's refusals (or its absence) as `refuse` makes them: a tool error for
    tools, a JSON-RPC error for resources and prompts."""
    client = state.get("client")
    if client is None:
        raise refuse(OpError("unavailable", "the bridge is not connected to budgetd yet; retry"))
    try:
        return await make(client)
    except OpError as exc:
        raise refuse(exc) from None


async def _follow_events(socket: str | None, publish: Callable[[str], Awaitable[None]],
                         budget_uris: Callable[[], Awaitable[list[str]]]) -> None:
    """The daemon's events as resource-updated notifications: alerts and prices as they come, budgets at
    most once a second (a burst of spend is one notification, its last change never left out)."""
    budgets_moved, moves = anyio.create_memory_object_stream[None](1)
    backoff = Backoff(first=0.5, cap=10.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_announce_budgets, moves, publish, budget_uris)
        while True:
            try:
                async with BudgetClient(socket, timeout=10.0, retries=0) as stream, \
                        contextlib.aclosing(stream.subscribe(["usage", "budget", "alert", "price"])) as events:
                    async for event in events:
                        backoff.reset()
                        topic = event.event.split(".", 1)[0]
                        if topic in ("usage", "budget", "lagged"):  # lagged: missed events may have moved them
                            with contextlib.suppress(anyio.WouldBlock):  # one announcement already pending
                                budgets_moved.send_nowait(None)
                        if topic in ("alert", "lagged"):
                            await publish("budget://alerts")
                        elif topic == "price" and isinstance(event.data, dict) and event.data.get("model"):
                            await publish(f"budget://prices/{event.data['model']}")
            except (OpError, OSError) as exc:
                log.debug("event stream: %s", exc)
            await anyio.sleep(backoff.next())


async def _announce_budgets(moves: Any, publish: Callable[[str], Awaitable[None]],
                            budget_uris: Callable[[], Awaitable[list[str]]]) -> None:
    async for _ in moves:
        for uri in await budget_uris():
            await publish(uri)
        await anyio.sleep(1.0)  # moves meanwhile wait as one, announced when this second is over


def run(socket: str | None, http: str | None = None, read_only: bool = False) -> None:
    server = build_server(socket, read_only=read_only)
    if http:
        host, _, port = http.rpartition(":")
        server.run("streamable-http", host=host or "127.0.0.1", port=int(port))
    else:
        server.run("stdio")
