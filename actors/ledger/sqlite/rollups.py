"""Rollups: usage summed by hour (UTC), and by local day, week and month (one set per configured zone).

The ledger keeps them in the same transaction as the records they sum, so a
report read from them never disagrees with `usage.list`. Their keys are the
low-cardinality dims; `context_id` is left out (a rollup by it would be as big
as the table), so reports by context read the records.
"""

import sqlite3
from typing import Iterable

from actors.ledger.messages import Tally, UsageRow
from actors.ledger.report_plan import SUMS, accumulate
from actors.ledger.sqlite.transactions import immediate
from budgetd.periods import HOUR_US, from_us, window

#: The dims a rollup row is keyed by. Absent values are stored as '' (names are never empty).
ROLLUP_DIMS = ("component", "model", "provider", "tier", "task_type")

_SLOT_US = 900_000_000  # every zone's midnight falls on a quarter hour (since 1980 or so)
_MAX_CACHED = 100_000

_DIM_COLUMNS = ", ".join(f"{d} TEXT NOT NULL" for d in ROLLUP_DIMS)
# The sums as schema version 2 made them (a migration is history: later sums are added by later ones).
_V2_SUMS = ("requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_nanos")
_SUM_COLUMNS = ", ".join(f"{s} INTEGER NOT NULL" for s in _V2_SUMS)


def _local_table(name: str, unit: str) -> str:
    return f"""
CREATE TABLE {name} (
    zone TEXT NOT NULL,
    {unit} INTEGER NOT NULL,  -- microseconds since the epoch of the local {unit}'s first midnight
    {_DIM_COLUMNS},
    {_SUM_COLUMNS},
    PRIMARY KEY (zone, {unit}, {", ".join(ROLLUP_DIMS)})
) WITHOUT ROWID;
"""


SCHEMA = f"""
CREATE TABLE rollup_hour (
    hour INTEGER NOT NULL,  -- microseconds since the epoch of the UTC hour's start
    {_DIM_COLUMNS},
    {_SUM_COLUMNS},
    PRIMARY KEY (hour, {", ".join(ROLLUP_DIMS)})
) WITHOUT ROWID;
{_local_table("rollup_day", "day")}
{_local_table("rollup_week", "week")}
{_local_table("rollup_month", "month")}
-- The zones whose local rollups are complete (backfilled, then kept by every write).
CREATE TABLE rollup_zones (zone TEXT PRIMARY KEY) WITHOUT ROWID;

INSERT INTO rollup_hour
SELECT ts / {HOUR_US} * {HOUR_US}, component, model, coalesce(provider, ''), coalesce(tier, ''),
       coalesce(task_type, ''), count(*), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens),
       sum(cache_write_tokens), sum(cost_nanos)
FROM usage GROUP BY 1, 2, 3, 4, 5, 6;
"""

#: Schema version 4: the token kinds a provider bills apart (and web searches), in records and rollups.
NEW_IN_V4 = ("cache_write_1h_tokens", "reasoning_tokens", "audio_input_tokens", "audio_output_tokens",
             "web_search_requests")
SCHEMA_V4 = "\n".join(
    [f"ALTER TABLE usage ADD COLUMN {c} INTEGER NOT NULL DEFAULT 0;" for c in NEW_IN_V4]
    + ["ALTER TABLE usage ADD COLUMN service_tier TEXT NOT NULL DEFAULT 'standard';"]
    + [f"ALTER TABLE {t} ADD COLUMN {c} INTEGER NOT NULL DEFAULT 0;"
       for t in ("rollup_hour", "rollup_day", "rollup_week", "rollup_month") for c in NEW_IN_V4])

_ADD = ", ".join(f"{s} = {s} + excluded.{s}" for s in SUMS)
UPSERT_HOUR = (
    f"INSERT INTO rollup_hour (hour, {', '.join(ROLLUP_DIMS)}, {', '.join(SUMS)}) "
    f"VALUES ({', '.join('?' * (1 + len(ROLLUP_DIMS) + len(SUMS)))}) "
    f"ON CONFLICT DO UPDATE SET {_ADD}"
)
#: The local units, each with a table `rollup_<unit>`, in the order `LocalCalendar.start` gives them.
LOCAL_UNITS = ("day", "week", "month")
UPSERT_LOCAL = [
    f"INSERT INTO rollup_{unit} (zone, {unit}, {', '.join(ROLLUP_DIMS)}, {', '.join(SUMS)}) "
    f"VALUES ({', '.join('?' * (2 + len(ROLLUP_DIMS) + len(SUMS)))}) "
    f"ON CONFLICT DO UPDATE SET {_ADD}"
    for unit in LOCAL_UNITS
]


class LocalCalendar:
    """The local day, week and month an instant falls in, in one zone, cached per quarter hour."""

    def __init__(self, zone: str) -> None:
        self.zone = zone
        self._cache: dict[int, tuple[int, int, int]] = {}

    def start(self, ts_us: int) -> tuple[int, int, int]:
        """The first local midnight of the day, the week and the month of `ts_us`."""
        starts = self._cache.get(ts_us // _SLOT_US)
        return starts if starts is not None else self._starts(ts_us)[0]

    def slot_start(self, slot: int) -> tuple[int, int, int] | None:
        """`start` of every instant in the quarter hour `slot`, or None if a local midnight cuts it."""
        starts = self._cache.get(slot)
        if starts is not None:
            return starts
        starts, whole = self._starts(slot * _SLOT_US)
        return starts if whole else None

    def _starts(self, ts_us: int) -> tuple[tuple[int, int, int], bool]:
        slot = ts_us // _SLOT_US
        day = window("daily", self.zone, from_us(ts_us))
        starts = (day.start_us, window("weekly", self.zone, day.start).start_us,
                  window("monthly", self.zone, day.start).start_us)
        # Cache only slots that lie within one local day (a historic zone offset may not be on a quarter).
        whole = day.start_us <= slot * _SLOT_US and (slot + 1) * _SLOT_US <= day.end_us  # type: ignore[operator]
        if whole:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[slot] = starts  # type: ignore[assignment]
        return starts, whole  # type: ignore[return-value]


class Rollups:
    """Adds records to the rollups inside the writer's transaction."""

    def __init__(self, zones: Iterable[str]) -> None:
        self.calendars = [LocalCalendar(z) for z in dict.fromkeys(zones)]

    @property
    def zones(self) -> list[str]:
        return [c.zone for c in self.calendars]

    def add(self, db: sqlite3.Connection, rows: list[UsageRow]) -> None:
        """Add the records just inserted to every rollup."""
        hours, local = self.sums(rows)
        db.executemany(UPSERT_HOUR, [(*k, *v) for k, v in hours.items()])
        if self.calendars:
            for upsert, sums_by_key in zip(UPSERT_LOCAL, local):
                db.executemany(upsert, [(*k, *v) for k, v in sums_by_key.items()])

    def sums(self, rows: list[UsageRow]) -> tuple[dict[tuple, list[int]], list[dict[tuple, list[int]]]]:
        """What `rows` add to the hour rollup (by hour and dims) and to each local one (by zone, start and
        dims, in the order of `LOCAL_UNITS`). Pure: every backend writes these sums its own way."""
        # Records of one quarter hour and dims are summed first: each rollup then takes one sum per group
        # (a quarter hour lies in one UTC hour, and mostly in one local day).
        groups: dict[tuple, list[UsageRow]] = {}
        for r in rows:
            key = (r.ts // _SLOT_US, r.component, r.model, r.provider or "", r.tier or "", r.task_type or "")
            group = groups.get(key)
            if group is None:
                groups[key] = [r]
            else:
                group.append(r)
        hours: dict[tuple, list[int]] = {}
        local: list[dict[tuple, list[int]]] = [{} for _ in LOCAL_UNITS]
        for (slot, *dims), group in groups.items():
            sums = Tally.of_rows(group).values()
            accumulate(hours, (slot * _SLOT_US // HOUR_US * HOUR_US, *dims), sums)
            for calendar in self.calendars:
                starts = calendar.slot_start(slot)
                if starts is not None:
                    for into, start in zip(local, starts):
                        accumulate(into, (calendar.zone, start, *dims), sums)
                    continue
                for r in group:  # a local midnight falls inside this quarter hour
                    one = Tally.of_rows([r]).values()
                    for into, start in zip(local, calendar.start(r.ts)):
                        accumulate(into, (calendar.zone, start, *dims), one)
        return hours, local

    def backfill(self, db: sqlite3.Connection) -> list[str]:
        """Build the local rollups of every zone that does not have them yet, and drop those no longer
        configured. Runs in one transaction at start; returns the zones built."""
        have = {r[0] for r in db.execute("SELECT zone FROM rollup_zones")}
        wanted = self.zones
        built = [z for z in wanted if z not in have]
        dropped = [z for z in have if z not in wanted]
        if not built and not dropped:
            return []
        with immediate(db):
            for zone in dropped:
                for unit in LOCAL_UNITS:
                    db.execute(f"DELETE FROM rollup_{unit} WHERE zone = ?", (zone,))
                db.execute("DELETE FROM rollup_zones WHERE zone = ?", (zone,))
            for calendar in self.calendars:
                if calendar.zone in built:
                    days = _days_from_hours(db, calendar)
                    if days is None:
                        days = _days_from_records(db, calendar)
                    for i, upsert in enumerate(UPSERT_LOCAL):  # weeks and months from the days
                        sums: dict[tuple, list[int]] = {}
                        for (zone, day, *dims), values in days.items():
                            accumulate(sums, (zone, calendar.start(day)[i], *dims), values)
                        db.executemany(upsert, [(*k, *v) for k, v in sums.items()])
                    db.execute("INSERT INTO rollup_zones (zone) VALUES (?)", (calendar.zone,))
        return built


def _days_from_hours(db: sqlite3.Connection, local: LocalCalendar) -> dict[tuple, list[int]] | None:
    """Day sums from the hour rollup, or None when the zone's days do not start on UTC hours."""
    sums: dict[tuple, list[int]] = {}
    for hour, *rest in db.execute(f"SELECT hour, {', '.join(ROLLUP_DIMS)}, {', '.join(SUMS)} FROM rollup_hour"):
        day = local.start(hour)[0]
        if local.start(hour + HOUR_US - 1)[0] != day:
            return None
        accumulate(sums, (local.zone, day, *rest[:len(ROLLUP_DIMS)]), rest[len(ROLLUP_DIMS):])
    return sums


def _days_from_records(db: sqlite3.Connection, local: LocalCalendar) -> dict[tuple, list[int]]:
    sums: dict[tuple, list[int]] = {}
    for row in db.execute(
        "SELECT ts, component, model, coalesce(provider, ''), coalesce(tier, ''), coalesce(task_type, ''), 1, "
        f"{', '.join(SUMS[1:])} FROM usage"
    ):
        accumulate(sums, (local.zone, local.start(row[0])[0], *row[1:6]), row[6:])
    return sums
