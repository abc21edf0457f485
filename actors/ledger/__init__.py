"""The ledger: the durable record of every call, budget, price and alert.

`Ledger` is its only writer (group commit) and `LedgerReader` serves long
reads; both talk to a `Store` (the storage seam): SQLite by default, the fleet's
PostgreSQL database when one is configured. Callers
use the messages in `actors.ledger.messages`.
"""

from actors.ledger.messages import (  # noqa: F401 - the inbox is the public face
    ALL_TIME,
    AckAlert,
    ApplyPrices,
    BackupTo,
    CallExtremes,
    CloseHold,
    Compact,
    Counted,
    DeleteBudget,
    ExpireKeys,
    FollowTotals,
    GetTotals,
    HardCharge,
    HoldRow,
    ListAlerts,
    ListUsage,
    LoadBudgets,
    LoadHolds,
    LoadPrices,
    PriceChange,
    PriceHistory,
    PriceState,
    PriceVersion,
    ReleaseElsewhere,
    ReplaySpool,
    RunReport,
    SaveAlert,
    SaveBudget,
    Settled,
    SourcePrice,
    SourceState,
    StoredBudget,
    SumWindows,
    Tally,
    UsageRow,
    WindowSum,
    WindowTotal,
    Write,
    WriteHold,
    WriteUsage,
    counter_key,
    payload_hash,
    window_start,
)
from actors.ledger.postgres import FleetDatabaseError, PostgresReadStore, PostgresStore  # noqa: F401
from actors.ledger.reader import LedgerReader  # noqa: F401
from actors.ledger.report_plan import ReportQuery  # noqa: F401
from actors.ledger.sqlite import (  # noqa: F401
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    LedgerError,
    install_file,
    SqliteReadStore,
    SqliteStore,
    open_writer,
    verify_ledger,
)
from actors.ledger.store import ReadStore, Store, StoreBroken, StoreFull, StoreUnreachable  # noqa: F401
from actors.ledger.writer import Ledger  # noqa: F401
