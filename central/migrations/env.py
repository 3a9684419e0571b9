"""Alembic's environment: always given a live connection by ``central.migrate`` (no
``alembic.ini``, no URL here); the target is ``central.store.metadata``."""

from __future__ import annotations

from alembic import context

from central.store import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by copying
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
