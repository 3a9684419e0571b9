"""The central store and the union's operations, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pytest

from central.errors import ConflictError, InputError
from central.service import Union
from pact.cards import token_for_pan
from pact.chain import GENESIS, entry_hash
from pact.roster import verify_roster
from pact.sale import Sale
from tests.helpers import MEMBER_PAN, OTHER_PAN, enrol_signing_terminal, signed, trusted

CSV = f"member_id,pan,status,tier\nU1,{MEMBER_PAN},active,2\nU2,{OTHER_PAN},suspended,0\n"


def make_sales(
    terminal_id: str, n: int, start: int = 1, prev: str = GENESIS, merchant_id: str = "M0001"
) -> list[Sale]:
    out = []
    for seq in range(start, start + n):
        s = Sale(
            seq=seq,
            sale_id=f"{terminal_id}-{seq}",
            at=f"2026-11-28T10:{seq % 60:02d}:00Z",
            terminal_id=terminal_id,
            merchant_id=merchant_id,
            token=None,
            pan_last4="0000",
            member=seq % 2 == 1,
            gross=1000 * seq,
            discount=50 * seq,
            net=950 * seq,
            rules=(),
            roster_version=1,
            policy_version=1,
            basket=None,
            atc=seq,
            kind=None,
            ref_seq=None,
            note=None,
            prev_hash=prev,
            hash="",
        )
        s = signed(replace(s, hash=entry_hash(prev, s)))
        prev = s.hash
        out.append(s)
    return out


def test_members_become_a_signed_roster_without_pans(union: Union, clock) -> None:
    assert union.import_members(CSV).added == 2
    version, count = union.publish_roster()
    assert (version, count) == (1, 2)
    latest = union.store.latest_signed("roster")
    assert latest is not None and latest[0] == 1
    roster = verify_roster(latest[1], trusted(union.keys, "roster"), now=clock())
    member = roster.lookup(token_for_pan(MEMBER_PAN, union.keys.token_key))
    other = roster.lookup(token_for_pan(OTHER_PAN, union.keys.token_key))
    assert member is not None and member.tier == 2 and member.status == "active"
    assert other is not None and other.status == "suspended"
    assert MEMBER_PAN.encode() not in latest[1]
    assert union.publish_roster()[0] == 2  # versions only go up


@pytest.mark.parametrize(
    "csv_text, message",
    [
        ("member_id\nU1\n", "no 'pan' column"),
        ("member_id,pan\nU1,4111111111111112\n", "line 2: the card number"),
        (f"member_id,pan\nU1,{MEMBER_PAN}\nU1,{OTHER_PAN}\n", "listed twice"),
        (f"member_id,pan,status\nU1,{MEMBER_PAN},gone\n", "status must be"),
        (f"member_id,pan,colour\nU1,{MEMBER_PAN},red\n", "unknown columns: colour"),
        (f"member_id,pan\nU1,{MEMBER_PAN}\nU2,{MEMBER_PAN}\n", "same card"),
    ],
)
def test_bad_members_file(union: Union, csv_text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        union.import_members(csv_text)
    assert union.store.member_count() == 0  # nothing half-imported


@pytest.mark.parametrize(
    "csv_text", [f"U1,{MEMBER_PAN}\n", f"member_id,pan,{OTHER_PAN}\nU1,{MEMBER_PAN},x\n"]
)
def test_a_card_number_in_a_members_files_header_is_not_echoed(union: Union, csv_text: str) -> None:
    """A file without its header line (or a number where a column name goes): the
    refusal named the header, card number and all, on the page and on stderr."""
    with pytest.raises(InputError) as refused:
        union.import_members(csv_text)
    line = str(refused.value)
    assert MEMBER_PAN not in line and OTHER_PAN not in line and "••••" in line, line


def test_ingest_is_idempotent_and_chain_checked(union: Union) -> None:
    union.add_merchant("M0001", "Shop", 500)
    terminal = enrol_signing_terminal(union)
    batch = make_sales("T1", 5)
    first = union.ingest(terminal, batch[:3])
    assert (first.acked_through, first.accepted, first.duplicates) == (3, 3, 0)
    again = union.ingest(terminal, batch)  # ack was lost: the terminal resends everything
    assert (again.acked_through, again.accepted, again.duplicates) == (5, 2, 3)
    assert [s.seq for s in union.store.sales_for("T1")] == [1, 2, 3, 4, 5]
    assert union.store.sales_for("T1") == batch  # stored and read back as uploaded

    forged = replace(batch[1], gross=1, net=1 - batch[1].discount)
    with pytest.raises(ConflictError, match="differs"):
        union.ingest(terminal, [forged])
    # a batch that starts after the union's copy ends (its database restored from an
    # older backup): nothing stored, and the ack says where to send from again
    ahead = make_sales("T1", 1, start=7, prev=batch[-1].hash)
    asked = union.ingest(terminal, ahead)
    assert (asked.acked_through, asked.accepted, asked.behind) == (5, 0, True)
    sixth = make_sales("T1", 1, start=6, prev=batch[-1].hash)
    gap = [*sixth, *make_sales("T1", 1, start=8, prev=sixth[0].hash)]
    with pytest.raises(ConflictError, match="does not follow"):
        union.ingest(terminal, gap)
    broken = make_sales("T1", 1, start=6, prev="ab" * 32)
    with pytest.raises(ConflictError, match="link"):
        union.ingest(terminal, broken)
    assert len(union.store.sales_for("T1")) == 5  # refused batches stored nothing


def test_an_entry_whose_id_is_held_under_another_number_is_refused(union: Union) -> None:
    """Not a race with another ingest (the store's tail did not move): a conflict, and
    nothing of the batch is stored."""
    union.add_merchant("M0001", "Shop", 500)
    terminal = enrol_signing_terminal(union)
    batch = make_sales("T1", 2)
    union.ingest(terminal, batch[:1])
    reused = replace(batch[1], sale_id=batch[0].sale_id)
    reused = signed(replace(reused, hash=entry_hash(reused.prev_hash, reused)))
    with pytest.raises(ConflictError, match="already held under another number"):
        union.ingest(terminal, [reused])
    assert union.store.sales_for("T1") == batch[:1]
    assert [r["first_seq"] for r in union.store.refusals("T1")] == [2]


def test_settlement_per_merchant(union: Union, clock) -> None:
    union.add_merchant("M0001", "Shop", 500)
    union.add_merchant("M0002", "Salon", 1000)
    union.ingest(enrol_signing_terminal(union), make_sales("T1", 4))
    rows = {r.merchant_id: r for r in union.settlement()}
    assert (rows["M0001"].sales, rows["M0001"].member_sales) == (4, 2)
    assert (rows["M0001"].gross, rows["M0001"].discount, rows["M0001"].net) == (10000, 500, 9500)
    assert rows["M0002"].sales == 0 and rows["M0002"].gross == 0
    none = {r.merchant_id: r for r in union.settlement(date(2026, 11, 29), None)}
    assert none["M0001"].sales == 0


@pytest.mark.parametrize(
    ("merchant_id", "name", "refusal"),
    [
        ("M" * 33, "Long", "is not a merchant id"),
        ("", "Empty", "is not a merchant id"),
        ("M0001\nX", "Newline", "is not a merchant id"),
        ("M0009", "N" * 129, "give the merchant's name"),
        ("M0009", "two\nlines", "give the merchant's name"),
        ("M0009", "  ", "give the merchant's name"),
    ],
)
def test_a_merchant_refused_is_not_kept(union: Union, merchant_id, name, refusal) -> None:
    """Checked before anything is written: a merchant kept with an id or a name its
    signed policy cannot carry made the daily publish-roster fail at it every night."""
    with pytest.raises(InputError, match=refusal):
        union.add_merchant(merchant_id, name, 500)
    assert union.store.merchants() == []
    union.add_merchant("M0001", "Shop", 500)
    assert union.publish_roster()[0] >= 1  # and renews the policies of those there are


def test_an_upload_authenticated_before_a_revocation_is_refused(union: Union) -> None:
    """The terminal was authenticated, then revoked while its upload was on its way to
    the store: the upload was stored, after the revocation, whose recorded last seq
    was then wrong. The ingest looks again, in its transaction (the terminal's row
    locked on PostgreSQL, so the two take turns)."""
    union.add_merchant("M0001", "Shop", 500)
    terminal = enrol_signing_terminal(union)
    union.ingest(terminal, make_sales("T1", 2))
    authenticated = union.store.terminal("T1")
    assert union.revoke_terminal("T1", "stolen") == 2
    later = make_sales("T1", 2, start=3, prev=union.store.sales_for("T1")[-1].hash)
    with pytest.raises(ConflictError, match="was revoked"):
        union.ingest(authenticated, later)
    assert [s.seq for s in union.store.sales_for("T1")] == [1, 2]
    assert union.store.terminal("T1")["revoked_last_seq"] == 2  # type: ignore[index]
    assert [r["first_seq"] for r in union.store.refusals("T1")] == [3]  # kept for the audit


def test_exit_merchant_publishes_a_new_policy(union: Union) -> None:
    assert union.add_merchant("M0001", "Shop", 500) == 1
    assert union.set_merchant_status("M0001", "exited") == 2
    assert union.store.merchant("M0001")["status"] == "exited"


def test_sale_from_another_merchant_refused(union: Union) -> None:
    union.add_merchant("M0001", "Shop", 500)
    union.add_merchant("M0002", "Other", 500)
    terminal = enrol_signing_terminal(union)
    with pytest.raises(ConflictError, match="another merchant"):
        union.ingest(terminal, make_sales("T1", 1, merchant_id="M0002"))


def test_authentication(union: Union) -> None:
    import json

    union.add_merchant("M0001", "Shop", 500)
    bundle = json.loads(union.enrol_terminal("T1", "M0001", "http://127.0.0.1:9"))
    assert union.authenticate(f"Bearer T1.{bundle['api_secret']}")["merchant_id"] == "M0001"
    from central.errors import AuthError

    for header in (None, "Bearer T1.wrong", "Basic abc", f"Bearer T2.{bundle['api_secret']}"):
        with pytest.raises(AuthError):
            union.authenticate(header)


def test_clock_is_used_for_roster_lifetime(union: Union, clock) -> None:
    union.import_members(CSV)
    union.publish_roster(timedelta(hours=1))
    data = union.store.latest_signed("roster")[1]
    clock.advance(timedelta(hours=2))
    from pact.errors import RosterError

    with pytest.raises(RosterError, match="expired"):
        verify_roster(data, trusted(union.keys, "roster"), now=clock())


# The central sales table as releases before the typed Sale made it: existing
# databases (SQLite and PostgreSQL) must keep working unchanged.
SALES_COLUMNS = [
    ("terminal_id", "VARCHAR(32)", False),
    ("seq", "BIGINT", False),
    ("sale_id", "VARCHAR(36)", False),
    ("at", "VARCHAR(32)", False),
    ("merchant_id", "VARCHAR(32)", False),
    ("token", "VARCHAR(32)", True),
    ("pan_last4", "VARCHAR(4)", False),
    ("member", "BOOLEAN", False),
    ("gross", "BIGINT", False),
    ("discount", "BIGINT", False),
    ("net", "BIGINT", False),
    ("rules", "TEXT", False),
    ("roster_version", "BIGINT", False),
    ("policy_version", "BIGINT", False),
    ("basket", "TEXT", True),
    ("atc", "BIGINT", True),
    ("kind", "VARCHAR(16)", True),
    ("ref_seq", "BIGINT", True),
    ("note", "VARCHAR(800)", True),
    ("prev_hash", "VARCHAR(64)", False),
    ("hash", "VARCHAR(64)", False),
    ("sig", "VARCHAR(128)", True),
    ("received_at", "VARCHAR(32)", False),
    ("receipt_code", "VARCHAR(11)", True),
]


def test_the_sales_table_keeps_its_schema(store) -> None:
    import sqlalchemy as sa

    inspector = sa.inspect(store.engine)
    columns = [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns("sales")]
    assert columns == SALES_COLUMNS
    assert inspector.get_pk_constraint("sales")["constrained_columns"] == ["terminal_id", "seq"]
    assert [u["column_names"] for u in inspector.get_unique_constraints("sales")] == [["sale_id"]]
    indexes = [
        (i["name"], i["column_names"], bool(i["unique"]))
        for i in inspector.get_indexes("sales")
        if not i.get("duplicates_constraint")
    ]
    assert sorted(indexes) == [
        ("ix_sales_merchant_at", ["merchant_id", "at"], False),  # by merchant too (0014)
        ("ix_sales_receipt_code", ["receipt_code"], False),
    ]


def test_the_sales_columns_derive_from_the_sale() -> None:
    from dataclasses import field, make_dataclass

    import sqlalchemy as sa

    from central.store import sale_columns, sales
    from pact.sale import FIELDS

    assert [c.name for c in sales.columns] == [
        "terminal_id",
        *(name for name in FIELDS if name != "terminal_id"),
        "received_at",
        "receipt_code",
    ]
    extra = make_dataclass(
        "Extra",
        [("points", int, field(default=0)), ("memo", str | None, field(default=None))],
        bases=(Sale,),
        frozen=True,
        slots=True,
    )
    with pytest.raises(TypeError, match="give sales.memo a length"):
        sale_columns(extra)
    points = make_dataclass(
        "Points", [("points", int, field(default=0))], bases=(Sale,), frozen=True, slots=True
    )
    [column] = [c for c in sale_columns(points) if c.name == "points"]
    assert isinstance(column.type, sa.BigInteger) and column.nullable is False


def test_writers_side_by_side_on_sqlite_wait_for_each_other(tmp_path, clock) -> None:
    """Two union processes writing the same SQLite store (imports and roster
    publications beside policy approvals, as the soak's union did beside uploads):
    each waits for the other's write lock; none fails "database is locked"."""
    import threading

    from central.keys import create_keys
    from central.service import CentralPaths
    from tests.helpers import with_luhn

    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=clock())
    first = Union.open(paths, None, clock)
    first.add_merchant("M0001", "Shop", 500)
    first.add_user("admin.one", "admin", None, "side-by-side-1")
    first.add_user("admin.two", "admin", None, "side-by-side-2")
    first.close()
    errors: list[str] = []

    def members(base: int) -> None:
        union = Union.open(paths, None, clock)
        try:
            for n in range(base, base + 60):
                union.import_members(f"member_id,pan\nU{n},{with_luhn(f'6214{n:011d}')}\n")
                while True:  # two publications at once: one is refused, to be run again
                    try:
                        union.publish_roster()
                        break
                    except ConflictError as exc:
                        assert "at the same time" in str(exc)
        except Exception as exc:  # what the test is for: any failure of a writer
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
        finally:
            union.close()

    def policies() -> None:
        union = Union.open(paths, None, clock)
        try:
            for i in range(60):
                rule = {"id": "member", "kind": "percent_off", "basis_points": 300 + i}
                draft = union.draft_policy(
                    "M0001", {"rounding": "half-up", "rules": [rule]}, "admin.one"
                )
                union.approve_policy(draft, "admin.two")
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
        finally:
            union.close()

    threads = [
        threading.Thread(target=members, args=(1000,)),
        threading.Thread(target=members, args=(5000,)),
        threading.Thread(target=policies),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
