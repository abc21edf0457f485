"""Write transactions on the ledger's own sqlite3 connection (autocommit mode: we say where they begin)."""

import contextlib
import sqlite3
from typing import Iterator


@contextlib.contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taken at once: committed when the block ends, rolled back if anything in it
    (or the commit itself) fails."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
