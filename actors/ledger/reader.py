"""The ledger's reader: long queries on a store connection of their own, so they never stall the writer."""

from actors.ledger.messages import BackupTo, CallExtremes, ListAlerts, ListUsage, RunReport
from actors.ledger.store import ReadStore
from actors.runtime import Actor, answering


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

    async def started(self) -> None:
        await self.store.open()

    async def stopped(self) -> None:
        await self.store.close()
