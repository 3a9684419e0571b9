"""The central store's schema migrations (issue 14, item 1): Alembic, on SQLite and
PostgreSQL, with the schema as it stood before migrations as the first revision, and
`unioncard central migrate`."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from central import migrate
from central.errors import StoreError
from central.store import Store, make_engine, metadata
from tests.conftest import pg_schema
from tests.test_commands import one_line_error, run

HEAD = migrate.head()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """The URL of a new, empty database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'central.db'}"
        return
    with pg_schema() as url:
        yield url


def _differences(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()


def _upgrade(engine: sa.Engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", migrate.SCRIPTS)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def _revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return migrate.current(conn)
    finally:
        engine.dispose()


def test_a_new_database_is_made_at_the_head_with_the_declared_schema(url: str) -> None:
    store = Store.open(url)
    store.close()
    assert _revision(url) == migrate.head()
    # the revisions make exactly the tables, columns, keys and indexes the code declares:
    # a column added to the code without its revision fails here
    assert _differences(url) == []


def test_a_database_from_before_migrations_is_refused_then_migrated(url: str, capsys) -> None:
    engine = make_engine(url)
    _upgrade(engine, "0001")
    with engine.begin() as conn:  # as create_all made it, a release before receipt codes
        conn.execute(sa.text("DROP TABLE alembic_version"))
        conn.execute(sa.text("DROP INDEX ix_sales_receipt_code"))
        conn.execute(sa.text("ALTER TABLE sales DROP COLUMN receipt_code"))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO merchants (merchant_id, name, status, basis_points, "
                "status_changed_at) VALUES ('M0001', 'Shop', 'active', 500, 'x')"
            )
        )
    engine.dispose()
    with pytest.raises(StoreError, match="revision before migrations.*`unioncard central migrate`"):
        Store.open(url)
    code, out, err = run(capsys, "central", "migrate", "--database-url", url)
    assert (code, err) == (0, "")
    assert (
        out.strip()
        == f"migrated the database from a database made before migrations to revision {HEAD}"
    )
    assert _differences(url) == []
    store = Store.open(url)
    try:
        assert [m["merchant_id"] for m in store.merchants()] == ["M0001"]  # kept
    finally:
        store.close()
    code, out, _ = run(capsys, "central", "migrate", "--database-url", url)
    assert (code, out.strip()) == (0, f"the database is at revision {HEAD}: nothing to do")


def test_an_older_revision_is_refused_until_migrated(url: str, capsys) -> None:
    engine = make_engine(url)
    _upgrade(engine, "0001")
    engine.dispose()
    with pytest.raises(StoreError, match=f"revision 0001; this release needs {HEAD}"):
        Store.open(url)
    code, out, _ = run(capsys, "central", "migrate", "--database-url", url)
    assert (code, out.strip()) == (
        0,
        f"migrated the database from revision 0001 to revision {HEAD}",
    )
    assert _differences(url) == []


def test_a_newer_releases_database_is_refused_in_one_line(url: str, capsys) -> None:
    Store.open(url).close()
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(StoreError, match=f"revision 0099; this release needs {HEAD}"):
        Store.open(url)
    code, _, err = run(capsys, "central", "migrate", "--database-url", url)
    assert code != 0
    one_line_error(err, "revision 0099", "newer release")


def test_workers_opening_a_new_database_together_make_it_once(url: str) -> None:
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            Store.open(url).close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=open_it) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert errors == []
    assert _revision(url) == migrate.head() and _differences(url) == []
