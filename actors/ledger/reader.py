"""The ledger's reader: long queries on a store connection of their own, so they never stall the writer."""

from typing import Any

from actors.ledger.messages import BackupTo, CallExtremes, ListAlerts, ListUsage, RunReport
from actors.ledger.store import ReadStore, StoreBroken, StoreUnreachable
from actors.runtime import Actor, answering, fail_reply
from budgetd.protocol import OpError


class LedgerReader(Actor):
    name = "ledger-reader"

    def __init__(self, store: ReadStore) -> None:
        super().__init__()
        self.store = store
        self.handlers = {
            ListUsage: answering(store.list_usage),
            ListAlerts: answering(store.list_alerts),
            CallExtremes: answering(store.call_extremes),
            BackupTo: answering(lambda m: store.backup(m.path)),
            RunReport: answering(lambda m: store.report(m.query)),
        }

    async def handle(self, message: Any) -> None:
        try:
            await super().handle(message)
        except StoreUnreachable as exc:  # the store reconnects at its next call
            fail_reply(message, OpError("unavailable", f"the ledger could not answer ({exc})"
                                        + ("" if exc.lasting else "; retry shortly")))
        except StoreBroken as exc:
            fail_reply(message, OpError("unavailable", f"the ledger could not answer ({exc}); retry shortly"))
            raise  # the supervisor reopens the store

    async def started(self) -> None:
        await self.store.open()

    async def stopped(self) -> None:
        await self.store.close()
