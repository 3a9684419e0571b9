"""Shared fixtures: a controllable clock, union keys, the central store on SQLite and
on a real PostgreSQL, and (from tests.fixtures_pcsc) pcscd with the virtual reader.

Under CI=true a missing PostgreSQL, pcscd or virtual reader fails the test
instead of skipping it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from central import create_app, migrate
from central.keys import UnionKeys, create_keys
from central.serve import ThreadedServer
from central.service import CentralPaths, Union
from central.store import Store, make_engine
from pact.cards import PanTokenizer
from reader.identity import identity_from_pan
from sync.client import CentralClient, RetryPolicy
from sync.run import run_sync
from terminal.checkout import checkout
from terminal.journal import Journal
from terminal.state import TerminalState
from tests.helpers import MEMBER_PAN

# secretscan: no PAN or secret logged; privacyscan: no PAN in a file the product wrote
pytest_plugins = ["tests.fixtures_pcsc", "tests.secretscan", "tests.privacyscan"]

PG_URL = os.environ.get("UNIONCARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def missing(component: str, hint: str) -> None:
    """Fail under CI, skip on a developer's machine."""
    message = f"{component} is not available: {hint}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 28, 9, 30, tzinfo=UTC))


def wall_clock() -> Clock:
    """A test clock that starts at the wall clock's now: for the union of a real
    terminal daemon, which reads the wall clock (a union on the fixed date above would
    have its roster expire, and the terminal count days offline, as real days pass).
    A test module running a daemon overrides the ``clock`` fixture with it."""
    return Clock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def union_keys(tmp_path: Path, clock: Clock) -> UnionKeys:
    return create_keys(tmp_path / "keys", now=clock())


@contextmanager
def pg_schema() -> Iterator[str]:
    """A new, empty schema of the test PostgreSQL (dropped after): its URL, which puts
    it first on the search path. A missing server fails in CI (tests.conftest.missing)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        admin = make_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        missing("PostgreSQL", f"{PG_URL}: {str(exc).splitlines()[0]}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None: the SQLite database of the data folder; else a new schema of the test
    PostgreSQL (a missing server fails in CI, as :func:`pg_schema` says)."""
    if request.param == "sqlite":
        yield None
    else:
        with pg_schema() as url:
            yield url


def _pg_store() -> Iterator[Store]:
    with pg_schema() as url:
        engine = make_engine(url)
        migrate.upgrade(engine)  # the schema as the migrations make it
        store = Store(engine)
        try:
            yield store
        finally:
            store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store.open(f"sqlite:///{tmp_path / 'central.db'}")
        yield s
        s.close()
    else:
        yield from _pg_store()


@pytest.fixture
def union(store: Store, union_keys: UnionKeys, clock: Clock) -> Union:
    return Union(store, union_keys, clock)


FAST = RetryPolicy(attempts=2, backoff=0.01, jitter=0, connect_timeout=5, read_timeout=5)


@dataclass
class Site:
    union: Union
    url: str
    state: TerminalState
    journal: Journal
    client: CentralClient

    def sell(self, pan: str, gross: int, clock) -> dict:
        identity = identity_from_pan(
            "unionpay", b"\xa0", pan, "2030-12", PanTokenizer(self.state.enrolment.token_key)
        )
        generation, enrolment = self.state.current, self.state.enrolment
        return checkout(generation, enrolment, self.journal, identity, gross, clock()).as_json()

    def sync(self, clock):
        return run_sync("T1", self.state, self.journal, self.client, clock)


@pytest.fixture
def site(tmp_path: Path, clock) -> Iterator[Site]:
    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=clock())
    union = Union.open(paths, None, clock)
    union.import_members(f"member_id,pan\nU1,{MEMBER_PAN}\n")
    union.add_merchant("M0001", "Shop", 500)
    union.publish_roster()
    with ThreadedServer(create_app({"DATA_DIR": str(paths.data_dir), "CLOCK": clock})) as server:
        state = TerminalState(tmp_path / "terminal")
        state.enrol(union.enrol_terminal("T1", "M0001", server.url))
        journal = Journal(state.journal_path, state.signer())
        client = CentralClient(server.url, "T1", state.enrolment.api_secret, FAST)
        yield Site(union, server.url, state, journal, client)
        client.close()
        journal.close()
        union.close()
