"""What each op answers: the result Structs (the shared domain types live in `budgetd.model`)."""

import datetime as dt

import msgspec

from budgetd.model import (
    Answer,
    Alert,
    Alternative,
    BudgetSpec,
    BudgetState,
    Decision,
    Facts,
    Forecast,
    PriceDiff,
    PriceEntry,
    ReportRow,
    SourceReport,
    SourceStatus,
    Totals,
    UsageRecord,
)


class HelloResult(Answer, kw_only=True):
    server: str
    version: str
    protocol: int
    ops: list[str]


class Empty(Answer, kw_only=True):
    pass


class Released(Answer, kw_only=True):
    released: bool  # whether any of the holds named was open
    count: int = 0  # how many were


class BudgetResult(Answer, kw_only=True):
    budget: BudgetSpec


class BudgetGetResult(Answer, kw_only=True):
    budget: BudgetSpec
    states: list[BudgetState]
    next: str | None = None  # more keys: ask again with `after` set to this


class BudgetListResult(Answer, kw_only=True):
    budgets: list[BudgetSpec]


class Deleted(Answer, kw_only=True):
    deleted: bool


class ActorStatus(Answer, kw_only=True):
    name: str
    restarts: int
    mailbox_depth: int
    running: bool


class DaemonStatus(Answer, kw_only=True):
    version: str
    pid: int
    started_at: dt.datetime
    now: dt.datetime  # the daemon's clock, which windows and relative times are measured by
    uptime_s: float
    socket: str | None
    data_dir: str
    durability: str
    actors: list[ActorStatus]
    fleet_database: str | None = None  # the PostgreSQL database the ledger is in (without its password)
    subscriptions: int = 0  # event feeds open (socket subscriptions and HTTP event streams)


class PricesStatus(Answer, kw_only=True):
    version: int
    models: int
    updated_at: dt.datetime | None
    sources: list[SourceStatus]


class FleetNode(msgspec.Struct, kw_only=True):
    node: str
    version: str  # of budgetd
    started_at: dt.datetime
    heartbeat_at: dt.datetime  # by the node's clock
    serving: bool  # it holds its node lock in the database now
    open_holds: int  # unexpired reservations it opened
    held_usd: float  # what they hold on hard budgets
    spooled: int  # batches of records in its spool, acknowledged while the database was away (-1: unknown)
    this: bool  # the node that answers


class FleetStatusResult(Answer, kw_only=True):
    database: str  # without its password
    node: str  # the node that answers
    now: dt.datetime
    nodes: list[FleetNode]


class StatusResult(Answer, kw_only=True):
    budgets: list[BudgetState]
    totals: Totals
    daemon: DaemonStatus
    prices: PricesStatus
    forecasts: list[Forecast] = msgspec.field(default_factory=list)  # budgets with a limit
    states_omitted: int = 0  # keys of "*" budgets past `states_per_budget` (the least used); see budget.get


class ReportResult(Answer, kw_only=True):
    rows: list[ReportRow]
    totals: Totals
    forecasts: list[Forecast] = msgspec.field(default_factory=list)


class UsageListResult(Answer, kw_only=True):
    records: list[UsageRecord]
    next: str | None = None


class PriceResult(Answer, kw_only=True):
    price: PriceEntry
    resolved_from: str | None = None


class PriceListResult(Answer, kw_only=True):
    prices: list[PriceEntry]
    version: int
    total: int


class RefreshReport(Answer, kw_only=True):
    version: int
    sources: list[SourceReport]
    changes: list[PriceDiff] = msgspec.field(default_factory=list)  # at most MAX_DIFFS, new models last
    more_changes: int = 0


class PriceHistoryResult(Answer, kw_only=True):
    model: str
    versions: list[PriceEntry]


class PriceUnsetResult(Answer, kw_only=True):
    removed: bool


class RouteResult(Answer, kw_only=True):
    choice: str | None
    decision: Decision | None
    alternatives: list[Alternative]
    priced: bool = True  # False: the requested model has no price
    did_you_mean: list[str] = msgspec.field(default_factory=list)  # priced names close to the requested one


class AlertListResult(Answer, kw_only=True):
    alerts: list[Alert]


class BackupResult(Answer, kw_only=True):
    path: str
    bytes: int
    records: int
    duration_s: float


class Acked(Answer, kw_only=True):
    acked: bool


class Subscribed(Answer, kw_only=True):
    subscribed: list[str]


class AskResult(Answer, kw_only=True):
    answer: str
    facts: Facts
    model: str | None = None  # the LLM that wrote the answer; None when offline
    cost_usd: float = 0.0  # what that LLM call cost (recorded as component budgetd.assistant)
    offline: bool = True
    why_offline: str | None = None
