"""`budget import rhetor|apollo PATH`: bring Rhetor's SQLite ledger and Apollo's policies into budgetd.

Importing twice changes nothing: every Rhetor row is recorded with an idempotency key made from its
content, and budgets are only written when they differ. `dry_run` reads and checks everything and says
what would happen without writing. Rows that cannot be imported are reported with the reason.
"""

import datetime as dt
import hashlib
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from budgetd.client import BudgetClient, SyncBudgetClient
from budgetd.integrations.apollo import BudgetPolicy, policy_to_spec
from budgetd.integrations.rhetor import setting_to_spec
from budgetd.model import BudgetSpec
from budgetd.periods import zone as find_zone
from budgetd.protocol import OpError


class SourceError(Exception):
    """The source cannot be read; the message says what to do."""


@dataclass
class ImportReport:
    dry_run: bool
    records_imported: int = 0
    records_already: int = 0
    records_to_import: int = 0  # dry run
    budgets_created: list[str] = field(default_factory=list)
    budgets_updated: list[str] = field(default_factory=list)
    budgets_unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (where, why)

    def text(self) -> str:
        verb = "would" if self.dry_run else ""
        lines = []
        if self.dry_run:
            lines.append(f"dry run: {self.records_to_import} records would be imported "
                         "(rows imported before are recognised by their keys and not counted twice)")
        elif self.records_imported or self.records_already:
            lines.append(f"records: {self.records_imported} imported, {self.records_already} already there")
        for label, names in (("created", self.budgets_created), ("updated", self.budgets_updated),
                             ("unchanged", self.budgets_unchanged)):
            if names:
                lines.append(f"budgets {verb + ' be ' if verb and label != 'unchanged' else ''}{label}: "
                             + ", ".join(names))
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}:")
            lines += [f"  {where}: {why}" for where, why in self.skipped[:50]]
            if len(self.skipped) > 50:
                lines.append(f"  ... and {len(self.skipped) - 50} more")
        return "\n".join(lines) or "nothing to import"


def _apply_budgets(client: SyncBudgetClient, specs: list[BudgetSpec], report: ImportReport) -> None:
    for spec in specs:
        try:
            existing = client.budget_get(spec.name).budget
        except OpError as exc:
            if exc.code != "not_found":
                raise
            existing = None
        if existing == spec:
            report.budgets_unchanged.append(spec.name)
            continue
        (report.budgets_created if existing is None else report.budgets_updated).append(spec.name)
        if not report.dry_run:
            client.budget_set(spec)


# -- Rhetor ------------------------------------------------------------------------------------------


def _open_sqlite(path: Path, tables: tuple[str, ...]) -> sqlite3.Connection:
    if not path.is_file():
        raise SourceError(f"{path} does not exist")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        have = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise SourceError(f"{path} is not an SQLite database ({exc})") from None
    missing = [t for t in tables if t not in have]
    if missing:
        db.close()
        raise SourceError(f"{path} has no {', '.join(missing)} table: is it Rhetor's rhetor.db?")
    db.row_factory = sqlite3.Row
    return db


def rhetor_usage(row: sqlite3.Row, zone_name: str) -> dict[str, Any]:
    """One row of Rhetor's `usage` as a budgetd Usage (ValueError says why it cannot be)."""
    try:
        ts = dt.datetime.fromisoformat(str(row["timestamp"]))
    except (TypeError, ValueError):
        raise ValueError(f"timestamp {row['timestamp']!r} is not an ISO time") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=find_zone(zone_name))  # Rhetor wrote local wall time
    if not row["model"]:
        raise ValueError("no model")
    tokens = []
    for name in ("input_tokens", "output_tokens"):
        value = row[name] if row[name] is not None else 0
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} {value!r} is not a count")
        tokens.append(value)
    cost = row["cost"]
    if cost is not None and (not isinstance(cost, (int, float)) or cost < 0 or cost != cost):
        raise ValueError(f"cost {cost!r} is not an amount")
    usage: dict[str, Any] = {
        "component": str(row["component"] or "rhetor")[:128], "model": str(row["model"])[:128],
        "input_tokens": tokens[0], "output_tokens": tokens[1], "ts": ts,
        # What Rhetor charged at the time is the record: imported as the call's known cost.
        "cost_usd": float(cost or 0.0),
        "metadata": {"imported_from": "rhetor", "rhetor_id": int(row["id"])},
    }
    if row["provider"] and row["provider"] != "simulated":
        usage["provider"] = str(row["provider"])[:128]
    if row["task_type"]:
        usage["task_type"] = str(row["task_type"])[:128]
    extra = {}
    if row["metadata"]:
        try:
            extra = json.loads(row["metadata"])
        except ValueError:
            extra = {}
    if isinstance(extra, dict):
        for key, value in list(extra.items())[:20]:
            if isinstance(value, (str, int, float, bool)):
                usage["metadata"][str(key)[:64]] = value if not isinstance(value, str) else value[:1024]
    return usage


def rhetor_key(row: sqlite3.Row) -> str:
    """The same row always gets the same key, wherever the file lives."""
    content = "|".join(str(row[k]) for k in ("id", "timestamp", "provider", "model", "component", "input_tokens",
                                             "output_tokens", "cost"))
    return "rhetor:" + hashlib.blake2b(content.encode(), digest_size=12).hexdigest()


def import_rhetor(socket: str | None, path: Path, dry_run: bool = False, zone_name: str = "UTC") -> ImportReport:
    report = ImportReport(dry_run=dry_run)
    db = _open_sqlite(path, ("usage", "budget_settings"))
    try:
        rows = db.execute("SELECT * FROM usage ORDER BY id").fetchall()
        settings = db.execute("SELECT * FROM budget_settings ORDER BY id").fetchall()
    finally:
        db.close()
    records: list[tuple[str, dict[str, Any]]] = []
    for row in rows:
        try:
            records.append((rhetor_key(row), rhetor_usage(row, zone_name)))
        except ValueError as exc:
            report.skipped.append((f"usage row {row['id']}", str(exc)))
    latest: dict[tuple[str, str], BudgetSpec] = {}
    for s in settings:
        where = f"budget_settings row {s['id']}"
        if not s["active"]:
            report.skipped.append((where, "inactive (replaced by a later setting)"))
            continue
        if not s["limit_amount"] or s["limit_amount"] <= 0:
            report.skipped.append((where, "a limit of 0 means no limit in Rhetor"))
            continue
        try:
            spec = setting_to_spec(str(s["period"]), str(s["provider"] or "all"), float(s["limit_amount"]),
                                   str(s["enforcement"] or "warn"))
        except ValueError as exc:
            report.skipped.append((where, str(exc)))
            continue
        latest[(s["period"], s["provider"])] = spec  # the last active one wins, as in Rhetor's queries
    with SyncBudgetClient(socket, timeout=30.0) as client:
        _apply_budgets(client, list(latest.values()), report)
    if dry_run:
        report.records_to_import = len(records)
        return report
    anyio.run(_record_all, socket, records, report)
    return report


async def _record_all(socket: str | None, records: list[tuple[str, dict[str, Any]]], report: ImportReport) -> None:
    limiter = anyio.CapacityLimiter(64)
    async with BudgetClient(socket, timeout=30.0) as client:
        async def one(key: str, usage: dict[str, Any]) -> None:
            async with limiter:
                try:
                    recorded = await client.record(idempotency_key=key, **usage)
                except OpError as exc:
                    report.skipped.append((f"usage row {usage['metadata']['rhetor_id']}", f"{exc.code}: {exc.message}"))
                    return
                if recorded.duplicate:
                    report.records_already += 1
                else:
                    report.records_imported += 1

        async with anyio.create_task_group() as tg:
            for key, usage in records:
                tg.start_soon(one, key, usage)


# -- Apollo ------------------------------------------------------------------------------------------


def import_apollo(socket: str | None, path: Path, dry_run: bool = False) -> ImportReport:
    report = ImportReport(dry_run=dry_run)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SourceError(f"{path} is not Apollo's budget_policies.json (not JSON: {exc})") from None
    if not isinstance(data, list):
        raise SourceError(f"{path} is not Apollo's budget_policies.json (expected a list of policies)")
    specs = []
    now = dt.datetime.now()
    for i, entry in enumerate(data):
        where = f"policy {i}" + (f" ({entry.get('policy_id')})" if isinstance(entry, dict) and entry.get("policy_id")
                                 else "")
        if not isinstance(entry, dict):
            report.skipped.append((where, "not an object"))
            continue
        try:
            policy = BudgetPolicy.from_dict(entry)
        except (TypeError, ValueError) as exc:
            report.skipped.append((where, str(exc)))
            continue
        end = policy.end_date
        if end is not None and (end.replace(tzinfo=None) if end.tzinfo else end) < now:
            report.skipped.append((where, f"expired on {end:%Y-%m-%d}"))
            continue
        specs.append(policy_to_spec(policy))
    with SyncBudgetClient(socket, timeout=30.0) as client:
        _apply_budgets(client, specs, report)
    return report
