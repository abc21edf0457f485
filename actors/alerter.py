"""The alerter: turns bus events into alerts, once each, stored, announced and delivered.

Each rule names its alert by a dedupe key (a budget, key, window and threshold;
a model and price; a source and hour ...). The ledger keeps one alert per key,
so an alert fires once even across restarts. New alerts go on the bus (topic
`alert`), to the log, and to every webhook whose `kinds` include them.
"""

import collections
import datetime as dt
import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, NamedTuple

import anyio
import msgspec

from actors.bus import Publish, SubscribeMsg
from actors.ledger import SaveAlert
from budgetd.periods import from_us, to_us
from actors.runtime import Actor, Mailbox, Ref
from budgetd.backoff import Backoff
from budgetd.clock import SYSTEM, Clock
from budgetd.model import Alert, format_usd
from budgetd.protocol import Event, OpError

log = logging.getLogger("budgetd.alerts")
_json = msgspec.json.Encoder()
DENIED_EVERY_S = 60.0
STORE_AGAIN_S = 2.0  # alerts the ledger could not store (its database away, its disk full) are tried again
MAX_UNSTORED = 1000


@dataclass(frozen=True)
class WebhookSettings:
    url: str
    secret: str | None = None
    kinds: frozenset[str] | None = None
    attempts: int = 5
    timeout_s: float = 5.0
    backoff_s: float = 0.5


class AlertDraft(NamedTuple):
    """An alert a rule raises, before the ledger gives it an id; `dedupe` names it once per firing."""

    kind: str
    severity: str
    budget: str | None
    key: dict | None
    window_start: dt.datetime | None
    message: str
    data: dict
    dedupe: str


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`X-Budgetd-Signature`: HMAC-SHA256 of `<timestamp>.<body>` with the webhook's secret."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class Alerter(Actor):
    name = "alerter"

    def __init__(self, ledger: Ref, bus: Ref, webhooks: list[WebhookSettings], timeout: float = 10.0,
                 clock: Clock = SYSTEM) -> None:
        super().__init__()
        self.clock = clock
        self.ledger = ledger
        self.bus = bus
        self.webhooks = webhooks
        self.timeout = timeout
        self._last_denied: dict[tuple, float] = {}
        self._queues: list[tuple[WebhookSettings, Any]] = []
        # Alerts raised while the ledger could not store them, with when they were raised: tried again later
        # (each has its dedupe key, so a try that did store one but lost the answer stores nothing twice).
        self._unstored: collections.deque[tuple[int, AlertDraft]] = collections.deque(maxlen=MAX_UNSTORED)

    async def started(self) -> None:
        self.feed = await self.bus.ask(
            lambda reply: SubscribeMsg(topics=["budget", "price", "system"], after=None, reply=reply,
                                       local_only=True),  # another node's events are its alerter's
            self.timeout
        )

    async def run(self, mailbox: Mailbox) -> None:
        async with anyio.create_task_group() as tg:
            for hook in self.webhooks:
                send, receive = anyio.create_memory_object_stream[bytes](1000)
                self._queues.append((hook, send))
                tg.start_soon(_deliver, hook, receive, self.clock)
            tg.start_soon(self._watch)
            tg.start_soon(self._store_again)
            async for _ in mailbox:  # nothing is sent to the alerter; its mailbox closing means stop
                pass
            tg.cancel_scope.cancel()

    async def _watch(self) -> None:
        while not self.feed.closed:
            await self.feed.wait()
            for event in self.feed.take():
                alert = self._rule(event)
                if alert is not None:
                    await self._raise(alert)

    # -- rules ---------------------------------------------------------------------------

    def _rule(self, event: Event) -> AlertDraft | None:
        """The alert an event raises, or None."""
        d = event.data if isinstance(event.data, dict) else {}
        name = event.event
        if name.startswith("budget."):
            budget, key = d.get("budget"), d.get("key") or {}
            window = d.get("window_start")
            if name == "budget.denied":  # at most one alert a while per budget key and window: judged first
                now = time.monotonic()
                limiter = (budget, tuple(sorted(key.items())), window)
                last = self._last_denied.get(limiter)
                if last is not None and now - last < DENIED_EVERY_S:
                    return None
                if len(self._last_denied) >= 10_000:
                    self._last_denied.clear()  # bounded: forgetting only lets one more alert through
                self._last_denied[limiter] = now
            where = f"{budget}" + (f" ({', '.join(f'{k}={v}' for k, v in key.items())})" if key else "")
            spent = f"{format_usd(d.get('spent_usd'))} of {format_usd(d.get('limit_usd'))}" \
                if d.get("limit_usd") is not None else f"{d.get('spent_tokens'):,} of {d.get('limit_tokens'):,} tokens"
            scope = f"{budget}:{json.dumps(key, sort_keys=True)}:{None if window is None else to_us(window)}"
            if name == "budget.threshold":
                t = d["threshold"]
                return AlertDraft("threshold", "critical" if t >= 1.0 else "warning", budget, key, window,
                        f"budget {where} reached {t:.0%} of its limit: {spent}", d, f"threshold:{scope}:{t}")
            if name == "budget.exceeded":
                return AlertDraft("limit_exceeded", "critical", budget, key, window,
                        f"budget {where} is over its limit: {spent}", d, f"exceeded:{scope}")
            if name == "budget.denied":
                minute = int(self.clock.time() // DENIED_EVERY_S)
                return AlertDraft("denied", "warning", budget, key, window,
                        f"budget {where} denied a request of {d.get('component')} for {d.get('model')} "
                        f"({format_usd(d.get('estimated_cost_usd'))}): {spent} spent", d, f"denied:{scope}:{minute}")
            if name == "budget.projected_exhaustion":
                at = d.get("projected_at")
                return AlertDraft("projected_exhaustion", "warning", budget, key, window,
                        f"budget {where} will reach its limit at "
                        f"{at:%Y-%m-%d %H:%M} UTC at the last hour's burn rate ({spent} spent)", d,
                        f"projected:{scope}")
            if name == "budget.anomaly":
                return AlertDraft("anomaly", "warning", budget, key, window,
                        f"budget {where}: the last hour's spend is over {d.get('factor')}x the hourly average "
                        f"of the day before", d, f"anomaly:{scope}:{d.get('hour')}")
            if name == "budget.critical_bypass":
                return AlertDraft("critical_bypass", "critical", budget, key, window,
                        f"a critical request of {d.get('component')} passed the hard limit of budget {where}",
                        d, f"bypass:{uuid.uuid4().hex}")
            return None
        if name == "price.held":
            new = d.get("new", {})
            return AlertDraft("price_held", "warning", None, None, None,
                              d.get("message") or f"price of {d.get('model')} held",
                              d, f"held:{d.get('model')}:{json.dumps(new, sort_keys=True)}")  # every rate held
        if name == "price.changed":
            new, old = d.get("new", {}), d.get("old") or {}
            text = (f"price of {d.get('model')} changed ({d.get('source')}): input "
                    f"{old.get('input_per_mtok', '-')} -> {new.get('input_per_mtok')}, output "
                    f"{old.get('output_per_mtok', '-')} -> {new.get('output_per_mtok')} per Mtok")
            return AlertDraft("price_changed", "info", None, None, None, text, d, f"changed:{uuid.uuid4().hex}")
        if name == "price.unverified":
            price = d.get("price", {})
            return AlertDraft("price_changed", "warning", None, None, None,
                    f"sources disagree on the price of {d.get('model')}: {d.get('source')} says {price}, "
                    f"others say {d.get('others')}; kept, marked unverified", d,
                    f"unverified:{d.get('model')}:{price.get('input_per_mtok')}:{price.get('output_per_mtok')}")
        if name == "price.unpriced_model":
            return AlertDraft("unpriced_model", "warning", None, None, None,
                    f"model {d.get('model')!r} has no price; charged by pricing.unknown_model={d.get('policy')}",
                    d, f"unpriced:{d.get('model')}:{d.get('date')}")
        if name == "system.source_failed":
            hour = int(self.clock.time() // 3600)
            return AlertDraft("source_failed", "warning", None, None, None,
                    f"price source {d.get('source')} failed: {d.get('error')}", d,
                    f"source:{d.get('source')}:{hour}")
        return None

    async def _store_again(self) -> None:
        while True:
            await anyio.sleep(STORE_AGAIN_S)
            for _ in range(len(self._unstored)):  # one try each; what fails again goes to the back
                now, alert = self._unstored.popleft()
                await self._raise(alert, now)

    async def _raise(self, a: AlertDraft, now: int | None = None) -> None:
        now = self.clock.now_us() if now is None else now
        body = _json.encode(a.data)
        try:
            alert_id = await self.ledger.ask(lambda reply: SaveAlert(
                ts=now, kind=a.kind, severity=a.severity, budget=a.budget,
                key=None if a.key is None else json.dumps(a.key, sort_keys=True),
                window_start=None if a.window_start is None else to_us(a.window_start), message=a.message,
                data=body, dedupe=a.dedupe, reply=reply,
            ), self.timeout)
        except OpError as exc:
            if exc.code in ("unavailable", "busy"):
                if len(self._unstored) == MAX_UNSTORED:
                    log.error("%d alerts wait to be stored; the oldest is dropped", MAX_UNSTORED)
                self._unstored.append((now, a))
                log.error("alert not stored yet (%s), tried again in %gs: %s", exc.message, STORE_AGAIN_S,
                          a.message)
            else:
                log.error("alert not stored (%s): %s", exc.message, a.message)
            return
        if alert_id is None:
            return  # raised before: once is enough
        alert = Alert(id=alert_id, ts=from_us(now), kind=a.kind, severity=a.severity,  # type: ignore[arg-type]
                      budget=a.budget, key=a.key, window_start=a.window_start, message=a.message,
                      data=msgspec.json.decode(body))
        log.log(logging.WARNING if a.severity != "info" else logging.INFO, "alert %d %s: %s", alert_id, a.kind,
                a.message)
        try:
            self.bus.tell(Publish(events=[("alert.raised", alert)]))
        except OpError:
            pass
        payload = _json.encode(alert)
        for hook, queue in self._queues:
            if hook.kinds is None or a.kind in hook.kinds:
                try:
                    queue.send_nowait(payload)
                except anyio.WouldBlock:
                    log.error("webhook %s is 1000 alerts behind; alert %d not sent to it", hook.url, alert_id)


async def _deliver(hook: WebhookSettings, queue: Any, clock: Clock) -> None:
    """POST each alert, retrying with exponential backoff; a dead receiver only delays its own queue."""
    import httpx

    async with httpx.AsyncClient(timeout=hook.timeout_s) as client, queue:
        async for body in queue:
            backoff = Backoff(first=hook.backoff_s, cap=60.0)
            for attempt in range(1, hook.attempts + 1):
                stamp = str(int(clock.time()))
                headers = {"Content-Type": "application/json", "X-Budgetd-Timestamp": stamp}
                if hook.secret:
                    headers["X-Budgetd-Signature"] = signature(hook.secret, stamp, body)
                try:
                    with anyio.fail_after(hook.timeout_s + 1):
                        response = await client.post(hook.url, content=body, headers=headers)
                    if response.status_code < 300:
                        break
                    problem = f"HTTP {response.status_code}"
                except (httpx.HTTPError, TimeoutError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                if attempt == hook.attempts:
                    log.error("webhook %s failed %d times (%s); alert dropped for it", hook.url, attempt, problem)
                    break
                await anyio.sleep(backoff.next())
