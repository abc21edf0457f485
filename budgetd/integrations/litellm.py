"""Budget any litellm app with one line: `litellm.callbacks = [BudgetCallback(component="my-app")]`.

Every successful call (sync, async, streaming: the final usage) is recorded
in the daemon with what the provider billed, read by `budgetd.normalise` into
budgetd's convention (cache reads, writes and their 1-hour part, reasoning and
audio, web searches, the service tier the call was served at). Recording never
breaks the caller's LLM call: records are queued
(bounded) and sent by a background thread that retries until the daemon
takes them, each with an idempotency key so a retry is charged once.

litellm runs its logging callbacks after the call and swallows whatever they
raise, so a callback cannot stop a call. Admission is therefore a wrapper:
`callback.completion(...)` / `await callback.acompletion(...)` reserve first,
raise `BudgetDenied` when the budgets say no, and the callback commits the
actual usage to the reservation (or releases it when the call fails).
"""

import collections
import logging
import os
import threading
import time
from typing import Any

from budgetd.backoff import Backoff
from budgetd.client import BudgetClient, BudgetDenied, SyncBudgetClient
from budgetd.normalise import normalise_response, service_tier_of
from budgetd.protocol import OpError

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # this module is only imported by litellm apps

from litellm.integrations.custom_logger import CustomLogger  # noqa: E402

log = logging.getLogger("budgetd.integrations.litellm")
RESERVATION_KEY = "budgetd_reservation_id"
_RETRYABLE = {"unavailable", "busy", "internal"}


class BudgetCallback(CustomLogger):
    """Records every successful litellm call as `component` (or `metadata={"component": ...}` per call)."""

    def __init__(self, component: str, socket: str | None = None, admission: bool = False,
                 max_buffer: int = 10_000) -> None:
        super().__init__()
        self.component = component
        self.socket = socket
        self.admission = admission
        self.max_buffer = max_buffer
        self.dropped = 0  # records lost because the buffer was full while the daemon was away
        self._queue: collections.deque[tuple[str, str, dict[str, Any]]] = collections.deque()
        self._wake = threading.Condition()
        self._busy = False
        self._thread: threading.Thread | None = None

    # -- litellm's hooks -------------------------------------------------------------

    def log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._on_success(kwargs, response_obj, start_time)

    async def async_log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._on_success(kwargs, response_obj, start_time)

    def log_failure_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._on_failure(kwargs)

    async def async_log_failure_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._on_failure(kwargs)

    def _on_success(self, kwargs: dict, response_obj: Any, start_time: Any) -> None:
        try:
            final = kwargs.get("complete_streaming_response") or response_obj
            usage = normalise_response(final, provider="litellm")
            if usage is None:
                if kwargs.get("stream"):
                    return  # an intermediate chunk: the final response comes with its own event
                log.warning("litellm call without usage; not recorded")
                return
            meta = _metadata(kwargs)
            fields: dict[str, Any] = {
                "component": str(meta.get("component") or self.component),
                "model": str(kwargs.get("model") or getattr(final, "model", "unknown")),
                **usage,
            }
            provider = (kwargs.get("litellm_params") or {}).get("custom_llm_provider") or kwargs.get(
                "custom_llm_provider")
            if provider:
                fields["provider"] = str(provider)
            for key, name in (("context_id", "context_id"), ("session_id", "context_id"), ("task_type", "task_type")):
                if meta.get(key) and name not in fields:
                    fields[name] = str(meta[key])[:256]
            if hasattr(start_time, "astimezone"):
                fields["ts"] = start_time.astimezone()
            call_id = str(kwargs.get("litellm_call_id") or getattr(final, "id", "") or time.time_ns())
            reservation = meta.get(RESERVATION_KEY)
            if reservation:
                self._enqueue("commit", f"litellm:{call_id}", {"reservation_id": reservation, **fields})
            else:
                self._enqueue("record", f"litellm:{call_id}", fields)
        except Exception:  # never the caller's problem
            log.exception("could not read litellm's usage")

    def _on_failure(self, kwargs: dict) -> None:
        reservation = _metadata(kwargs).get(RESERVATION_KEY)
        if reservation:
            self._enqueue("release", f"release:{reservation}", {"reservation_id": reservation})

    # -- admission ------------------------------------------------------------------------

    def _estimate(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        import litellm

        meta = kwargs.get("metadata") or {}
        messages = kwargs.get("messages") or []
        try:
            prompt = litellm.token_counter(model=kwargs["model"], messages=messages)
        except Exception:
            prompt = sum(len(str(m.get("content", ""))) for m in messages) // 4 + 1
        estimate: dict[str, Any] = {
            "component": str(meta.get("component") or self.component), "model": kwargs["model"],
            "input_tokens": prompt,
        }
        if kwargs.get("max_tokens") or kwargs.get("max_completion_tokens"):
            estimate["max_output_tokens"] = int(kwargs.get("max_tokens") or kwargs["max_completion_tokens"])
        if kwargs.get("service_tier"):  # the tier asked for prices the reservation; the record says the one served
            estimate["service_tier"] = service_tier_of(kwargs["service_tier"])
        for key in ("context_id", "task_type"):
            if meta.get(key):
                estimate[key] = str(meta[key])
        return estimate

    def completion(self, **kwargs: Any) -> Any:
        """`litellm.completion` behind a reservation: raises BudgetDenied when the budgets say no."""
        import litellm

        with SyncBudgetClient(self.socket, retries=2) as client:
            decision = client.reserve(**self._estimate(kwargs))
        if not decision.allowed:
            raise BudgetDenied(decision)
        kwargs["metadata"] = {**(kwargs.get("metadata") or {}), RESERVATION_KEY: decision.reservation_id}
        return litellm.completion(**kwargs)

    async def acompletion(self, **kwargs: Any) -> Any:
        """`litellm.acompletion` behind a reservation: raises BudgetDenied when the budgets say no."""
        import litellm

        async with BudgetClient(self.socket, retries=2) as client:
            decision = await client.reserve(**self._estimate(kwargs))
        if not decision.allowed:
            raise BudgetDenied(decision)
        kwargs["metadata"] = {**(kwargs.get("metadata") or {}), RESERVATION_KEY: decision.reservation_id}
        return await litellm.acompletion(**kwargs)

    # -- delivery --------------------------------------------------------------------------

    def _enqueue(self, op: str, key: str, fields: dict[str, Any]) -> None:
        with self._wake:
            if len(self._queue) >= self.max_buffer:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append((op, key, fields))
            if self._thread is None:
                self._thread = threading.Thread(target=self._deliver, name="budgetd-recorder", daemon=True)
                self._thread.start()
            self._wake.notify()

    @property
    def pending(self) -> int:
        """Records, commits and releases waiting to reach the daemon."""
        with self._wake:
            return len(self._queue)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued record reached the daemon; False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(min(left, 0.05))
        return True

    def _deliver(self) -> None:
        backoff = Backoff(first=0.1, cap=5.0)
        client: SyncBudgetClient | None = None
        while True:
            with self._wake:
                while not self._queue:
                    self._wake.wait()
                op, key, fields = self._queue[0]
                self._busy = True
            try:
                if client is None:
                    client = SyncBudgetClient(self.socket, timeout=10.0, retries=0)
                _send(client, op, key, fields)
                backoff.reset()
            except (OpError, OSError) as exc:
                code = getattr(exc, "code", "unavailable")
                if code in _RETRYABLE:
                    if client is not None:
                        client.close()
                        client = None
                    with self._wake:
                        self._busy = False
                    time.sleep(backoff.next())
                    continue  # the same item again: its idempotency key makes the retry safe
                log.error("budgetd refused a %s (%s: %s); dropped", op, code, getattr(exc, "message", exc))
            with self._wake:
                if self._queue and self._queue[0][1] == key:
                    self._queue.popleft()
                self._busy = False
                self._wake.notify_all()


def _send(client: SyncBudgetClient, op: str, key: str, fields: dict[str, Any]) -> None:
    if op == "record":
        client.record(idempotency_key=key, **fields)
    elif op == "commit":
        usage = {k: v for k, v in fields.items() if k != "reservation_id"}
        try:
            client.commit(fields["reservation_id"], idempotency_key=key, **usage)
        except OpError as exc:
            if exc.code != "unknown_reservation":
                raise
            client.record(idempotency_key=key, **usage)  # the hold expired: the usage still counts
    else:
        client.release(fields["reservation_id"])


def _metadata(kwargs: dict) -> dict[str, Any]:
    params = kwargs.get("litellm_params") or {}
    return params.get("metadata") or kwargs.get("metadata") or {}
