"""Put a backup in place of a stopped daemon's ledger, losing nothing (what `budget restore` does).

The backup is verified before anything is touched; the data directory's lock keeps a daemon from
starting meanwhile; the current ledger is kept aside with its journal, never overwritten.
"""

import datetime as dt
import shutil
from pathlib import Path
from typing import NamedTuple

from actors.ledger import LedgerError, install_file, verify_ledger
from budgetd.daemon import StartupError, lock_data_dir


class RestoreError(Exception):
    """Nothing was restored; the message says why."""


class Restored(NamedTuple):
    ledger: Path
    version: int  # the backup's schema version
    records: int
    kept: Path | None  # where the previous ledger went, if there was one


def restore(backup: Path, data_dir: Path) -> Restored:
    try:
        version, records = verify_ledger(backup)
    except LedgerError as exc:
        advice = "upgrade budgetd to restore it" if "newer" in str(exc) else "name a file made by `budget backup`"
        raise RestoreError(f"cannot restore: {exc}; {advice} (nothing was changed)") from None
    try:
        lock = lock_data_dir(data_dir)
    except StartupError as exc:
        raise RestoreError(f"{exc}: stop the daemon before a restore; nothing was changed") from None
    try:
        ledger = data_dir / "ledger.db"
        kept = None
        if ledger.exists():
            kept = data_dir / f"ledger.db.before-restore-{dt.datetime.now():%Y%m%d-%H%M%S}"
            ledger.rename(kept)
            for suffix in ("-wal", "-shm"):  # the old file's journal goes with it
                side = Path(str(ledger) + suffix)
                if side.exists():
                    side.rename(Path(str(kept) + suffix))
        # Copied beside, then renamed: a failed copy never leaves a partial ledger.db.
        partial = data_dir / "ledger.db.restoring"
        shutil.copyfile(backup, partial)
        install_file(partial, ledger)
    finally:
        lock.close()
    return Restored(ledger, version, records, kept)
