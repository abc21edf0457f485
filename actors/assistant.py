"""The assistant: answers budget questions from the ledger's facts, with an LLM when one is configured.

Its own LLM calls go through the allocator like any component's (reserve,
then commit the provider's usage) as component `budgetd.assistant`, so a
budget on that component limits it. Whenever the model is not configured,
fails, or its budget says no, the answer is written from the facts alone
(`offline: true`): `ask` never fails for lack of an LLM.
"""

import datetime as dt
import logging
import os
from dataclasses import dataclass
from typing import Any

import msgspec

from actors.allocator import CommitMsg, ForecastsMsg, ReleaseMsg, ReserveMsg
from actors.facts import Inputs, build, horizon_of, offline_answer
from actors.ledger import CallExtremes, ReportQuery, RunReport, payload_hash
from actors.prices import GetBook
from actors.runtime import Actor, Ref, ReplyTo, answering
from budgetd.clock import SYSTEM, Clock
from budgetd.normalise import normalise_response
from budgetd.model import Estimate, Facts, UsagePatch
from budgetd.periods import to_us
from budgetd.protocol import AskResult, OpError, commit_key

log = logging.getLogger("budgetd.assistant")
COMPONENT = "budgetd.assistant"
FACTS_CHARS = 16_000  # the most of the facts a prompt carries

PROMPT = """\
You are budgetd's budget assistant. You answer questions about LLM spending in this system.
Use only the facts given (JSON from the ledger, the budgets and the price book); cite their numbers
(dollars, shares, dates) and do not invent any. Be brief: a direct answer first, then at most five
concrete recommendations, each with its saving when the facts give one. Money is USD."""


@dataclass(frozen=True)
class AssistantSettings:
    model: str = ""  # a litellm model string; "" = offline answers only
    api_base: str = ""
    api_key_env: str = ""
    timeout_s: float = 60.0
    max_output_tokens: int = 800


class AskMsg(msgspec.Struct, frozen=True):
    question: str
    reply: ReplyTo


class Assistant(Actor):
    name = "assistant"

    def __init__(self, reader: Ref, allocator: Ref, prices: Ref, settings: AssistantSettings,
                 timeout: float, clock: Clock = SYSTEM) -> None:
        super().__init__()
        self.clock = clock
        self.handlers = {AskMsg: answering(lambda m: self.answer(m.question))}
        self.reader = reader
        self.allocator = allocator
        self.prices = prices
        self.settings = settings
        self.timeout = timeout


    async def answer(self, question: str) -> AskResult:
        facts = await self.facts(question, self.clock.now())
        if not self.settings.model:
            return _offline(question, facts, "no assistant.model is configured")
        return await self._ask_model(question, facts)

    async def facts(self, question: str, now: dt.datetime) -> Facts:
        h = horizon_of(question, now)
        before = h.previous

        def report(since: dt.datetime, until: dt.datetime) -> Any:
            query = ReportQuery(group_by=("component", "model", "tier"), since=to_us(since), until=to_us(until))
            return self.reader.ask(lambda reply: RunReport(query=query, reply=reply), self.timeout)

        rows, totals = await report(h.since, h.until)
        previous_rows, previous = await report(*before)
        top, max_prompt = await self.reader.ask(
            lambda reply: CallExtremes(since=to_us(h.since), until=to_us(h.until), limit=5, reply=reply), self.timeout)
        forecasts = await self.allocator.ask(lambda reply: ForecastsMsg(reply=reply), self.timeout)
        book = await self.prices.ask(lambda reply: GetBook(reply=reply), self.timeout)
        return build(Inputs(h, rows, previous_rows, totals, previous, top, max_prompt, forecasts, book))

    async def _ask_model(self, question: str, facts: Facts) -> AskResult:
        s = self.settings
        facts_json = msgspec.json.encode(facts).decode()[:FACTS_CHARS]
        messages = [{"role": "system", "content": PROMPT},
                    {"role": "user", "content": f"Question: {question}\n\nFacts:\n{facts_json}"}]
        prompt_chars = sum(len(m["content"]) for m in messages)
        estimate = Estimate(component=COMPONENT, model=s.model, input_tokens=prompt_chars // 3 + 16,
                            max_output_tokens=s.max_output_tokens, task_type="ask")
        try:
            hold = await self.allocator.ask(lambda reply: ReserveMsg(
                estimate=estimate, ttl_s=s.timeout_s * 3, idempotency_key=None, payload_hash=None, reply=reply),
                self.timeout)
        except OpError as exc:
            return _offline(question, facts, f"the assistant's call could not be reserved: {exc.message}")
        if not hold.allowed or hold.action == "downgrade":
            if hold.reservation_id:
                await self._release(hold.reservation_id)
            return _offline(question, facts, "the assistant's budget does not allow the call: "
                                             + "; ".join(hold.reasons))
        try:
            response = await _complete(s, messages)
            text = response.choices[0].message.content or ""
            usage = normalise_response(response, provider="litellm") or {}  # none reported: an empty commit
        except Exception as exc:  # any failure of the model call falls back to the facts
            log.warning("assistant model %s failed: %s", s.model, exc)
            await self._release(hold.reservation_id)
            return _offline(question, facts, f"the model call failed: {type(exc).__name__}: {exc}"[:500])
        patch = UsagePatch(model=s.model, task_type="ask", **usage)
        key = commit_key(hold.reservation_id)
        try:
            recorded = await self.allocator.ask(lambda reply: CommitMsg(
                reservation_id=hold.reservation_id, usage=patch, idempotency_key=key,
                payload_hash=payload_hash("commit", (hold.reservation_id, patch)), reply=reply), self.timeout)
            cost = recorded.cost_usd
        except OpError as exc:  # the answer is paid for either way: say so in the log, still answer
            log.error("the assistant's usage could not be recorded: %s", exc.message)
            cost = 0.0
        if not text.strip():
            return _offline(question, facts, "the model returned an empty answer")
        return AskResult(answer=text.strip(), facts=facts, model=s.model, cost_usd=cost, offline=False)

    async def _release(self, reservation_id: str | None) -> None:
        if reservation_id:
            try:
                await self.allocator.ask(lambda reply: ReleaseMsg(reservation_ids=[reservation_id], reply=reply),
                                         self.timeout)
            except OpError:
                pass  # the hold expires by itself


def _offline(question: str, facts: Facts, why: str) -> AskResult:
    return AskResult(answer=offline_answer(question, facts), facts=facts, offline=True, why_offline=why)


async def _complete(s: AssistantSettings, messages: list[dict[str, str]]) -> Any:
    # litellm is slow to import and fetches its price map unless told not to: only here, only when asked.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return await litellm.acompletion(
        model=s.model, messages=messages, api_base=s.api_base or None,
        api_key=os.environ.get(s.api_key_env) if s.api_key_env else None,
        timeout=s.timeout_s, num_retries=1, stream=False, max_tokens=s.max_output_tokens,
    )
