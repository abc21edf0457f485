"""The embedded backend of the ledger: one SQLite file (WAL), its rollups and migrations."""

from actors.ledger.sqlite.reads import SqliteReadStore  # noqa: F401
from actors.ledger.sqlite.schema import (  # noqa: F401
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    LedgerError,
    install_file,
    open_writer,
    verify_ledger,
)
from actors.ledger.sqlite.writes import SqliteStore  # noqa: F401
