"""budgetd with two faults of its own code injected, standing in for any bug that crashes an actor:
`python -m tests.faults daemon ...` runs the daemon as `python -m budgetd daemon ...` does, except that

- a record of component "crash-allocator" makes the allocator raise (its supervisor restarts it);
- a batch holding a write of component "crash-ledger" makes the ledger's database fail as a broken disk
  would (the supervisor reopens it).

Nothing else changes: what the tests then check is the real code's recovery.
"""

import runpy
import sqlite3
import sys

from actors.allocator import actor as allocator
from actors.ledger.sqlite import writes

_record = allocator.Allocator._record
_append = writes.SqliteStore._append


def _crashing_record(self, message):
    if message.usage.component == "crash-allocator":
        raise RuntimeError("injected allocator fault")
    return _record(self, message)


def _broken_append(self, db, batch, *args):
    if any(getattr(getattr(w, "row", None), "component", None) == "crash-ledger" for w in batch):
        raise sqlite3.DatabaseError("injected disk fault")
    return _append(self, db, batch, *args)


if __name__ == "__main__":
    allocator.Allocator._record = _crashing_record
    writes.SqliteStore._append = _broken_append
    sys.argv = ["budgetd", *sys.argv[1:]]
    runpy.run_module("budgetd", run_name="__main__")
