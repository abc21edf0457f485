"""The fleet's backend of the ledger: one PostgreSQL database that every node of the fleet shares."""

from actors.ledger.postgres.reads import PostgresReadStore  # noqa: F401
from actors.ledger.postgres.schema import ONE_NODE_LOCK, SCHEMA_VERSION, FleetDatabaseError, migrate  # noqa: F401
from actors.ledger.postgres.writes import PostgresStore, Serving, connect  # noqa: F401
