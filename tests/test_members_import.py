"""Member imports with history (issue 14, item 5): each change of status, tier,
validity, district or workplace kept with its date; --full marks the missing as left;
one transaction, a chunk at a time; a bad row rejects the file with its line number.
On SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from central.errors import InputError
from central.service import Union
from central.store import IMPORT_CHUNK
from pact.cards import HMAC_SHA256, luhn_complete
from pact.timefmt import iso
from tests.test_commands import run


def pan(n: int) -> str:
    return luhn_complete(f"622202{n:09d}")


def members(rows: list[tuple[str, int, str]], extra: str = "") -> str:
    """member_id, card number n, district -> MEMBERS.csv."""
    head = "member_id,pan,tier,district\n"
    return head + "".join(f"{m},{pan(n)},{t},{d}\n" for m, n, t, d in rows) + extra


def test_changes_are_kept_with_their_date(union: Union, clock) -> None:
    first = union.import_members(
        members([("U1", 1, 0, "Huangpu"), ("U2", 2, 0, "Xuhui"), ("U3", 3, 1, "Jing'an")])
    )
    assert (first.read, first.added, first.changed, first.left) == (3, 3, 0, 0)
    started = iso(clock())
    again = union.import_members(
        members([("U1", 1, 0, "Huangpu"), ("U2", 2, 0, "Xuhui"), ("U3", 3, 1, "Jing'an")])
    )
    assert (again.added, again.changed) == (0, 0)
    clock.advance(timedelta(days=30))
    moved = union.import_members(
        members([("U1", 1, 2, "Huangpu"), ("U2", 2, 0, "Minhang"), ("U3", 3, 1, "Jing'an")])
    )
    assert (moved.added, moved.changed) == (0, 2)
    history = union.store.member_history("U2")
    assert [(h["at"], h["district"]) for h in history] == [
        (started, "Xuhui"),
        (iso(clock()), "Minhang"),
    ]
    assert [h["tier"] for h in union.store.member_history("U1")] == [0, 2]
    assert len(union.store.member_history("U3")) == 1  # never changed
    # a full import: U3 is not in it, so U3 has left the union, and the roster
    clock.advance(timedelta(days=1))
    full = union.import_members(
        members([("U1", 1, 2, "Huangpu"), ("U2", 2, 0, "Minhang")]), full=True
    )
    assert full.left == 1 and full.describe().endswith("1 left the union")
    assert union.store.member_history("U3")[-1]["status"] == "left"
    assert union.publish_roster()[1] == 2
    assert union.import_members(members([("U1", 1, 2, "Huangpu")]), full=True).left == 1
    assert union.import_members(members([("U1", 1, 2, "Huangpu")]), full=True).left == 0
    # a full file with no members (only its header: an export cut short) is refused
    # whole; it marked every member as left
    with pytest.raises(InputError, match="lists no members"):
        union.import_members("member_id,pan\n", full=True)
    assert union.store.member_history("U1")[-1]["status"] == "active"
    assert union.import_members("member_id,pan\n").read == 0  # without --full: nothing to do


def _big(count: int) -> list[tuple[str, int, int, str]]:
    return [(f"M{n}", 1000 + n, 0, "Huangpu") for n in range(count)]


def test_a_bad_line_rejects_the_whole_file(union: Union) -> None:
    # tokens of the fast scheme: 7,500 rows are tokenised here, and the scheme is not
    # what this tests (tests/test_token_scheme.py is)
    union = Union(union.store, replace(union.keys, token_scheme=HMAC_SHA256), union.clock)
    union.import_members(members([("U1", 1, 0, "Huangpu")]))
    rows = _big(IMPORT_CHUNK + 500)  # two chunks: the first is written before the error
    bad = members(rows, extra="X9,4111111111111112,0,Huangpu\n")
    with pytest.raises(InputError, match=f"line {len(rows) + 2}: the card number of member X9"):
        union.import_members(bad)
    assert union.store.member_count() == 1  # nothing of it was kept
    assert union.store.member_history("M0") == []
    twice = members(rows + [("M3", 9999, 0, "Xuhui")])
    with pytest.raises(
        InputError, match=f"line {len(rows) + 2}: member M3 is listed twice \\(first on line 5\\)"
    ):
        union.import_members(twice)
    assert union.store.member_count() == 1
    same_card = members([("A1", 7, 0, "x"), ("A2", 7, 0, "y")])
    with pytest.raises(InputError, match="two members have the same card"):
        union.import_members(same_card)
    assert union.import_members(members(rows)).added == len(rows)


def test_the_import_command(union: Union, tmp_path: Path, capsys) -> None:
    # the command on the store under test is the service's; here its own data folder
    data = tmp_path / "central"
    assert run(capsys, "central", "init", "--data", str(data))[0] == 0
    file = tmp_path / "members.csv"
    file.write_text(members([("U1", 1, 0, "Huangpu"), ("U2", 2, 0, "Xuhui")]), encoding="utf-8")
    code, out, err = run(capsys, "central", "import-members", str(file), "--data", str(data))
    assert (code, err) == (0, "")
    assert out.startswith("read 2 members: 2 new, 0 changed; run `unioncard central")
    file.write_text(members([("U1", 1, 0, "Huangpu")]), encoding="utf-8")
    code, out, _ = run(
        capsys, "central", "import-members", str(file), "--full", "--data", str(data)
    )
    assert code == 0 and out.startswith("read 1 members: 0 new, 0 changed, 1 left the union")
    file.write_text("member_id,pan\nU1,123\n", encoding="utf-8")
    code, _, err = run(capsys, "central", "import-members", str(file), "--data", str(data))
    assert code == 1 and "members file line 2: the card number of member U1" in err


def test_a_file_with_its_columns_shifted_shows_no_card_number_in_its_error(union: Union) -> None:
    """A members file whose card numbers landed in the member_id column: the error
    names the line and shows the card's last four digits only."""
    card = pan(99)
    with pytest.raises(InputError) as refused:
        union.import_members(f"member_id,pan\n{card},U1\n")
    message = str(refused.value)
    assert "line 2" in message and f"••••{card[-4:]}" in message and card not in message
    twice = f"member_id,pan\n{card},{pan(1)}\n{card},{pan(2)}\n"
    with pytest.raises(InputError, match="line [23]: member ••••") as listed:
        union.import_members(twice)
    assert card not in str(listed.value)


@pytest.mark.parametrize(
    "first_line",
    ["U7\t{card}\tactive", "U7;{card};active", "U7,{spaced},active", "{nbsp},U7"],
)
def test_a_file_with_no_header_shows_no_card_number_in_its_error(
    union: Union, first_line: str
) -> None:
    """A members file with no header line: its first line, a member's, is read as the
    header and named in the error. Its card number showed whole when the line was one
    cell (tab- or ';'-separated) or the number held a space or a non-breaking space."""
    card = pan(7)
    spaced = " ".join(card[i : i + 4] for i in range(0, len(card), 4))
    line = first_line.format(card=card, spaced=spaced, nbsp=card[:4] + "\u00a0" + card[4:])
    with pytest.raises(InputError) as refused:
        union.import_members(f"{line}\nU8,{pan(8)}\n")
    message = str(refused.value)
    assert "column" in message and f"••••{card[-4:]}" in message
    assert card not in message.replace(" ", "").replace("\u00a0", "")
    assert card[:6] not in message


def test_a_full_import_that_drops_many_members_asks_first(union: Union, capsys, tmp_path) -> None:
    """A --full import of a file cut short (or another district's) marked every member
    it did not list as left: 1,000 of 1,200 here, each losing the discount at the next
    roster. More than a tenth leaving is refused, naming how many, until --allow-left
    says as many; more than that is refused too; nothing is written by a refusal."""
    union = Union(union.store, replace(union.keys, token_scheme=HMAC_SHA256), union.clock)
    everyone = _big(1_200)
    union.import_members(members(everyone))
    short = members(everyone[:200])
    with pytest.raises(InputError) as refused:
        union.import_members(short, full=True)
    assert str(refused.value) == (
        "the members file would mark 1,000 of the 1,200 members as left (83%): check the "
        "file (an export cut short, or another district's?); if they did leave, import it "
        "again with --allow-left 1000"
    )
    with pytest.raises(InputError, match="more than the 999 allowed"):
        union.import_members(short, full=True, allow_left=999)
    assert union.store.member("M1199")["status"] == "active"  # type: ignore[index]
    # a tenth leave unasked (a small union: 100)
    assert union.import_members(members(everyone[:1_080]), full=True).left == 120
    assert union.import_members(short, full=True, allow_left=880).left == 880

    path = tmp_path / "members.csv"
    path.write_text(members(everyone[:200]))
    code, out, err = run(capsys, "central", "import-members", str(path), "--allow-left", "5")
    assert code == 2 and "--allow-left goes with --full" in err


def test_another_districts_file_is_not_counted_among_the_members_held(union: Union) -> None:
    """The tenth that may leave unasked was counted after the file's own new members
    went in: another district's 400 members, imported --full, marked all 150 members
    held as left without a word."""
    union = Union(union.store, replace(union.keys, token_scheme=HMAC_SHA256), union.clock)
    union.import_members(members(_big(150)))
    other = [(f"X{n}", 5000 + n, 0, "Xuhui") for n in range(400)]
    with pytest.raises(InputError, match="would mark 150 of the 150 members as left \\(100%\\)"):
        union.import_members(members(other), full=True)
    assert union.store.member("M0")["status"] == "active"  # type: ignore[index]
