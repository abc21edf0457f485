"""The fleet's backend of the ledger: one PostgreSQL database that every node of the fleet shares."""

from actors.ledger.postgres.reads import PostgresReadStore  # noqa: F401
from actors.ledger.postgres.schema import SCHEMA_VERSION, FleetDatabaseError, migrate  # noqa: F401
from actors.ledger.postgres.writes import PostgresStore, connect  # noqa: F401
from actors.ledger.postgres.fleet import NODES_LOCK  # noqa: F401
