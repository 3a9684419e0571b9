"""The central store's schema migrations (an adapter over Alembic; ``central/migrations``).

A new, empty database is made at the newest revision (the head) when the store
opens. A database at an older revision is refused until ``unioncard central
migrate`` brings it forward, so that two releases never write one schema. A
database made before migrations existed (by ``metadata.create_all``, with no
``alembic_version`` table) is brought to the first revision's schema (the nullable
columns that releases added since), stamped at it, and migrated forward.

Only one process migrates at a time: on PostgreSQL under an advisory lock, on
SQLite under a lock file beside the database; the others wait and then find the
work done (gunicorn's workers open the store together).
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

SCRIPTS = "central:migrations"
FIRST = "0001"  # the schema as it stood before migrations
PRE_MIGRATIONS = "before migrations"  # the revision of a database made by create_all
LOCK_KEY = 0x756E696F6E63  # PostgreSQL advisory lock: "unionc"


class UnknownRevision(Exception):
    """The database is at a revision this release does not know (a newer release's)."""


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPTS)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this release knows."""
    found = ScriptDirectory.from_config(_config()).get_current_head()
    assert found is not None, "central/migrations has no revisions"
    return found


def current(connection: Connection) -> str | None:
    """The database's revision; None when it has none (new, or from before migrations)."""
    return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _one_at_a_time(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction, held by one migrating process at a time."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            yield conn
        return
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        with open(f"{database}.migrate-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with engine.begin() as conn:
                yield conn
        return
    with engine.begin() as conn:
        yield conn


def first_schema() -> sa.MetaData:
    """The tables of the first revision, as the revision makes them (made in a scratch
    in-memory database and read back)."""
    scratch = sa.create_engine("sqlite://")
    try:
        with scratch.begin() as conn:
            command.upgrade(_config(conn), FIRST)
            schema = sa.MetaData()
            schema.reflect(conn)
            schema.remove(schema.tables["alembic_version"])
        return schema
    finally:
        scratch.dispose()


def add_missing_columns(conn: Connection, schema: sa.MetaData) -> None:
    """Add the nullable columns, and their indexes, of ``schema`` (the first revision's)
    that a table made by an earlier release lacks: before migrations, ``create_all``
    made missing tables but never altered one, and each release added its new
    nullable columns so."""
    inspector = sa.inspect(conn)
    for table in schema.sorted_tables:
        if not inspector.has_table(table.name):
            table.create(conn)
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present and column.nullable:
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(
                    sa.text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}')
                )
        indexed = {i["name"] for i in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexed:
                index.create(conn)


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the database to the head: make a new one, bring one made before
    migrations to the first revision's schema and stamp it, then run what is newer.
    Returns (the revision before: None for a new database, :data:`PRE_MIGRATIONS` for
    one made before migrations; the head)."""
    with _one_at_a_time(engine) as conn:
        names = set(sa.inspect(conn).get_table_names())
        before = current(conn)
        config = _config(conn)
        scripts = ScriptDirectory.from_config(config)
        if before is not None and before not in {s.revision for s in scripts.walk_revisions()}:
            raise UnknownRevision(before)
        if before is None and names - {"alembic_version"}:
            add_missing_columns(conn, first_schema())
            command.stamp(config, FIRST)
            before = PRE_MIGRATIONS
        command.upgrade(config, "head")
        return before, head()


def ready(engine: Engine) -> str | None:
    """Make a new, empty database at the head. For one that exists, None when it is at
    the head, else its revision ("from before migrations" when it has none): the
    caller refuses it until ``unioncard central migrate``."""
    with _one_at_a_time(engine) as conn:
        names = set(sa.inspect(conn).get_table_names()) - {"alembic_version"}
        found = current(conn)
        if not names:
            command.upgrade(_config(conn), "head")
            return None
    if found == head():
        return None
    return found or PRE_MIGRATIONS
