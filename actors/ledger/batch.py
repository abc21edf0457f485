"""A batch of writes, decided before any backend writes it: which are repeats of a known idempotency key,
which records would overflow the ledger's sums, what each answer is, and the rows to insert. Pure: a
backend looks up the batch's keys, calls `plan`, and writes what it returns in one transaction."""

from typing import Any, Iterator

import msgspec

from actors.ledger.messages import CloseHold, Tally, UsageRow, Write, WriteHold, WriteUsage, row_tokens
from budgetd.model import Decision, Recorded, usd
from budgetd.protocol import OpError

INT64 = 2**63 - 1
TOO_MUCH = ("this record would take one of the ledger's totals past what a 64-bit sum holds "
            f"({INT64:,} nano-dollars or tokens); nothing was recorded")


class Batch(msgspec.Struct):
    """What one transaction writes, and the answer of each write, in order."""

    answers: list[Any]
    usage: list[tuple]  # rows in the order of USAGE_COLUMNS
    inserted: list[UsageRow]  # the records of `usage`, for the rollups and the totals
    holds: list[tuple]  # (id, created_at, expires_at, component, estimate, attrs, cost_nanos, tokens)
    closed: list[str]  # ids of holds to delete
    keys: list[tuple]  # (key, payload_hash, result, created_at)


def key_of(w: Write) -> str | None:
    if type(w) is WriteUsage:
        return w.row.idempotency_key
    if type(w) is WriteHold:
        return w.idempotency_key
    return None


def keys_of(writes: list[Write]) -> list[str]:
    return [k for w in writes if (k := key_of(w)) is not None]


def records_in(writes: list[Write]) -> int:
    """How many record ids the batch may take at most."""
    return sum(type(w) is WriteUsage for w in writes)


def plan(writes: list[Write], known: dict[str, tuple[bytes, bytes]], now: int, ids: Iterator[int],
         totals: Tally) -> Batch:
    """The batch as one transaction writes it. `known`: the first (payload hash, answer) of each of the batch's
    keys the ledger has seen (filled with the batch's own new keys as it goes); `ids`: the record ids to give,
    in order."""
    b = Batch(answers=[], usage=[], inserted=[], holds=[], closed=[], keys=[])
    # What this batch adds to the totals, checked record by record: while the totals fit in 64 bits, so does
    # every sum over a part of the records a database or a report computes.
    room_tokens, room_nanos = INT64 - totals.tokens, INT64 - totals.cost_nanos
    for w in writes:
        if type(w) is CloseHold:
            b.closed.extend(w.ids)
            b.answers.append(w.answer)
            continue
        key = key_of(w)
        if key is not None and key in known:
            b.answers.append(repeat(key, known[key], w))
            continue
        if type(w) is WriteHold:
            b.holds.extend((h.id, h.created_at, h.expires_at, h.component, h.estimate, h.attrs, h.cost_nanos,
                            h.tokens) for h in w.holds)
            answer: Any = w.decision
        else:
            r = w.row
            tokens = row_tokens(r)
            if tokens > room_tokens or r.cost_nanos > room_nanos:
                b.answers.append(OpError("invalid", TOO_MUCH, "$.usage"))
                continue
            room_tokens -= tokens
            room_nanos -= r.cost_nanos
            record_id = next(ids)
            b.usage.append((
                record_id, r.ts, now, r.component, r.model, r.provider, r.tier, r.context_id, r.task_type,
                r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens, r.cost_nanos,
                int(r.priced), r.price_version, r.reservation_id, r.request_id, r.metadata, key,
                r.cache_write_1h_tokens, r.reasoning_tokens, r.audio_input_tokens, r.audio_output_tokens,
                r.service_tier, r.web_search_requests,
            ))
            b.inserted.append(r)
            if r.reservation_id is not None:
                b.closed.append(r.reservation_id)  # the commit closes its hold in the same transaction
            answer = Recorded(
                record_id=record_id, cost_usd=usd(r.cost_nanos), priced=r.priced,
                price_version=r.price_version, model=r.model, provider=r.provider, tier=r.tier,
                budgets=w.budgets, did_you_mean=w.did_you_mean,
            )
        if key is not None and (type(w) is not WriteHold or w.holds):  # a denial is not kept
            # A record is kept without its budgets (a repeat is told them as they are then): the states of
            # ten budgets would make the row 30 times longer.
            encoded = msgspec.json.encode(answer if type(w) is WriteHold else
                                          msgspec.structs.replace(answer, budgets=[]))
            b.keys.append((key, w.payload_hash, encoded, now))
            known[key] = (w.payload_hash, encoded)  # type: ignore[assignment]
        b.answers.append(answer)
    return b


def repeat(key: str, first: tuple[bytes, bytes], w: Write) -> Any:
    """The answer to a write whose key is known: the first answer again, or a conflict."""
    digest, result = first
    if bytes(digest) != w.payload_hash:  # type: ignore[union-attr]
        return OpError("idempotency_conflict", f"idempotency key {key!r} was used before for a different request; "
                       "use a new key for a new request", "$.idempotency_key")
    kind = Recorded if type(w) is WriteUsage else Decision
    return msgspec.structs.replace(msgspec.json.decode(result, type=kind), duplicate=True)
