"""In-process tests of the SQLite store's group commit (`SqliteStore`) on a real ledger file: batches larger
than one statement holds, their keys, holds and closes, and what a repeat of them answers; and of the writer
actor (`Ledger`) when the database breaks under a batch."""

import sqlite3

import anyio
import msgspec
import pytest

from actors.ledger.messages import CloseHold, HoldRow, LoadHolds, Settled, UsageRow, WriteHold, WriteUsage
from actors.ledger.sqlite.writes import SqliteStore
from actors.ledger.writer import Ledger
from actors.runtime import Reply, Supervisor
from budgetd.model import BudgetState, Decision
from budgetd.protocol import OpError

pytestmark = pytest.mark.anyio
NOW = 1_780_000_000_000_000


def usage(i: int, key: str | None, component: str = "c") -> WriteUsage:
    row = UsageRow(ts=NOW + i, component=component, model="gpt-4o", provider="openai", tier=None, context_id=None,
                   task_type=None, input_tokens=i, output_tokens=1, cache_read_tokens=0, cache_write_tokens=0,
                   cost_nanos=10 * i, priced=True, price_version=1, reservation_id=None, request_id=None,
                   metadata=None, idempotency_key=key)
    return WriteUsage(row=row, payload_hash=b"h%d" % i, reply=None)


def hold(i: int) -> HoldRow:
    return HoldRow(id=f"r-{i}", created_at=NOW, expires_at=NOW + 10**9, component="c", estimate=b"{}",
                   attrs=b"{}", cost_nanos=5, tokens=7)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request, tmp_path):
    """An open store of either backend, on a new ledger."""
    if request.param == "sqlite":
        opened = SqliteStore(tmp_path / "ledger.db")
    else:
        import secrets

        from actors.ledger.postgres import PostgresStore

        opened = PostgresStore(request.getfixturevalue("postgres").create_database(f"unit_{secrets.token_hex(6)}"))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_batch_of_thousands_is_one_transaction_with_every_key_hold_and_close(store):
    n = 2_500  # more rows than one INSERT statement carries, for every table
    decision = Decision(allowed=True, action="allow", estimated_cost_usd=0.0, estimated_tokens=7)
    writes = [usage(i, f"k{i}") for i in range(n)]
    writes += [WriteHold(holds=[hold(i) for i in range(n)], decision=decision, idempotency_key="hold-key",
                         payload_hash=b"hh", reply=None)]
    answers = await store.append(writes, NOW)
    assert [a.record_id for a in answers[:n]] == list(range(1, n + 1))
    assert not any(a.duplicate for a in answers)
    # The same again: every record and the holds are repeats, nothing is written twice.
    again = await store.append(writes, NOW)
    assert all(a.duplicate for a in again) and [a.record_id for a in again[:n]] == list(range(1, n + 1))
    assert store.totals().requests == n and store.totals().input_tokens == n * (n - 1) // 2
    assert len(await store.load_holds(NOW)) == n
    # Closing more holds than one DELETE names.
    await store.append([CloseHold(ids=[f"r-{i}" for i in range(0, n, 2)])], NOW)
    assert sorted(h.id for h in await store.load_holds(NOW)) == sorted(f"r-{i}" for i in range(1, n, 2))


async def test_a_hold_opened_and_closed_in_one_batch_is_gone_and_the_others_stay(store):
    decision = Decision(allowed=True, action="allow", estimated_cost_usd=0.0, estimated_tokens=7)
    await store.append([WriteHold(holds=[hold(1)], decision=decision, idempotency_key=None, payload_hash=None,
                                  reply=None)], NOW)
    spent = usage(5, "commit-of-r-3")
    spent = msgspec.structs.replace(spent, row=msgspec.structs.replace(spent.row, reservation_id="r-3"))
    answers = await store.append([
        WriteHold(holds=[hold(2), hold(3), hold(4)], decision=decision, idempotency_key=None, payload_hash=None,
                  reply=None),
        CloseHold(ids=["r-1", "r-2"]),  # one from an earlier batch, one from this one
        spent,  # a commit: its record closes r-3, opened in this same batch
    ], NOW)
    assert answers[2].record_id >= 1
    assert [h.id for h in await store.load_holds(NOW)] == ["r-4"]


async def test_records_with_a_key_are_kept_without_their_budgets(tmp_path):
    """A record's answer is kept without its budget states (the allocator tells a repeat the current ones)."""
    store = SqliteStore(tmp_path / "ledger.db")
    await store.open()
    try:
        state = BudgetState(budget="b", window_start=None, window_end=None, spent_usd=0.0, spent_tokens=2,
                            reserved_usd=0.0, reserved_tokens=0, limit_usd=None, limit_tokens=10, used_fraction=0.2,
                            status="ok", policy="hard")
        first = msgspec.structs.replace(usage(1, "k"), budgets=[state])
        answer, = await store.append([first], NOW)
        assert answer.budgets == [state] and not answer.duplicate
        repeat, = await store.append([first], NOW)
        assert repeat.duplicate and repeat.budgets == [] and repeat.record_id == answer.record_id
    finally:
        await store.close()


class BreaksOnce(SqliteStore):
    """A disk that fails once, under the first batch holding a record of component "breaks"."""

    broke = False

    def _append(self, db, writes, *args):
        if not self.broke and any(getattr(w, "row", None) and w.row.component == "breaks" for w in writes):
            self.broke = True
            raise sqlite3.DatabaseError("disk I/O error")
        return super()._append(db, writes, *args)


async def test_a_batch_that_breaks_the_database_answers_all_it_took(tmp_path):
    """The writes the failed transaction held, a read queued behind them and a write after that: all were
    taken from the mailbox in one batch, so all are refused `unavailable` (not left to time out), the writes
    are settled as failed, and the reopened ledger serves the next batch."""
    sup = Supervisor(max_backoff=0.05)
    ledger, settler = sup.ref("ledger", 100), sup.ref("settler", 100)  # nobody runs the settler: it collects
    replies = [Reply() for _ in range(4)]
    ledger.tell(msgspec.structs.replace(usage(1, None, "breaks"), reply=replies[0], write_id=1, settle=settler))
    ledger.tell(LoadHolds(now=NOW, reply=replies[1]))
    ledger.tell(msgspec.structs.replace(usage(2, None), reply=replies[2], write_id=2, settle=settler))

    async def outcome(reply: Reply) -> str:
        try:
            await reply.wait(2)
            return "ok"
        except OpError as error:
            return error.code

    async with anyio.create_task_group() as tg:
        await tg.start(sup.supervise, ledger, lambda: Ledger(BreaksOnce(tmp_path / "ledger.db")))
        first = [await outcome(r) for r in replies[:3]]
        ledger.tell(msgspec.structs.replace(usage(3, None), reply=replies[3]))
        after = await outcome(replies[3])
        ledger.close()
    assert first == ["unavailable"] * 3 and after == "ok" and ledger.restarts == 1
    settled = [settler.mailbox.receive_nowait() for _ in range(len(settler.mailbox))]
    assert all(isinstance(s, Settled) and not s.applied for s in settled)
    assert sorted(i for s in settled for i in s.failed) == [1, 2]
