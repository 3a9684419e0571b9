"""The signed roster: round trip, lookups, and every refusal (the old roster keeps serving)."""

from __future__ import annotations

import json
import struct
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from central.keys import UnionKeys, create_keys
from pact.cards import token_for_pan
from pact.errors import RosterError
from pact.roster import (
    MAX_ROSTER_BYTES,
    RECORD_SIZE,
    MemberRecord,
    build_roster,
    verify_roster,
)
from pact.signing import canonical_json
from tests.helpers import MEMBER_PAN, OTHER_PAN, roster_bytes, trusted


def test_round_trip_and_lookup(union_keys: UnionKeys, clock) -> None:
    data = roster_bytes(union_keys, [MEMBER_PAN], clock())
    roster = verify_roster(data, trusted(union_keys, "roster"), now=clock())
    assert roster.version == 1 and len(roster) == 1
    found = roster.lookup(token_for_pan(MEMBER_PAN, union_keys.token_key))
    assert found is not None and found.status == "active" and found.tier == 1
    assert roster.lookup(token_for_pan(OTHER_PAN, union_keys.token_key)) is None


def test_roster_never_contains_the_pan(union_keys: UnionKeys, clock) -> None:
    data = roster_bytes(union_keys, [MEMBER_PAN, OTHER_PAN], clock())
    for pan in (MEMBER_PAN, OTHER_PAN):
        assert pan.encode() not in data
        assert bytes.fromhex(pan + ("F" if len(pan) % 2 else "")) not in data  # BCD, as on chip


def _reframe(data: bytes, envelope: dict) -> bytes:
    (hlen,) = struct.unpack_from(">I", data, 4)
    header = canonical_json(envelope)
    return data[:4] + struct.pack(">I", len(header)) + header + data[8 + hlen :]


def _envelope(data: bytes) -> dict:
    (hlen,) = struct.unpack_from(">I", data, 4)
    return json.loads(data[8 : 8 + hlen])


def test_refuses_tampered_header(union_keys: UnionKeys, clock) -> None:
    data = roster_bytes(union_keys, [MEMBER_PAN], clock())
    env = _envelope(data)
    env["signed"]["expires_at"] = "2099-01-01T00:00:00Z"  # extend the lifetime
    with pytest.raises(RosterError, match="bad signature"):
        verify_roster(_reframe(data, env), trusted(union_keys, "roster"), now=clock())


def test_refuses_tampered_body(union_keys: UnionKeys, clock) -> None:
    data = bytearray(roster_bytes(union_keys, [MEMBER_PAN, OTHER_PAN], clock()))
    data[-RECORD_SIZE + 16] ^= 0x03  # flip a member's status byte
    with pytest.raises(RosterError, match="digest mismatch"):
        verify_roster(bytes(data), trusted(union_keys, "roster"), now=clock())


def test_refuses_unknown_key(tmp_path, union_keys: UnionKeys, clock) -> None:
    other = create_keys(tmp_path / "attacker", now=clock())
    data = roster_bytes(other, [MEMBER_PAN], clock())
    with pytest.raises(RosterError, match="not signed by any trusted key"):
        verify_roster(data, trusted(union_keys, "roster"), now=clock())


def test_duplicate_signature_counts_once(union_keys: UnionKeys, clock) -> None:
    data = roster_bytes(union_keys, [MEMBER_PAN], clock())
    env = _envelope(data)
    env["signatures"] = env["signatures"] * 2
    with pytest.raises(RosterError, match="1 of 2 required signatures"):
        verify_roster(_reframe(data, env), trusted(union_keys, "roster"), now=clock(), threshold=2)


def test_refuses_rollback_and_same_version(union_keys: UnionKeys, clock) -> None:
    data = roster_bytes(union_keys, [MEMBER_PAN], clock(), version=5)
    with pytest.raises(RosterError, match="rollback"):
        verify_roster(data, trusted(union_keys, "roster"), now=clock(), installed_version=5)
    with pytest.raises(RosterError, match="rollback"):
        verify_roster(data, trusted(union_keys, "roster"), now=clock(), installed_version=6)


def test_refuses_expired(union_keys: UnionKeys, clock) -> None:
    data = roster_bytes(union_keys, [MEMBER_PAN], clock(), lifetime=timedelta(hours=1))
    clock.advance(timedelta(hours=1))
    with pytest.raises(RosterError, match="expired"):
        verify_roster(data, trusted(union_keys, "roster"), now=clock())


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "malformed"),
        (b"XXXX\x00\x00\x00\x02{}", "malformed"),
        (b"UCR1\xff\xff\xff\xff", "bad header length"),
        (b"UCR1\x00\x00\x00\x03abc", "not JSON"),
        (b"UCR1\x00\x00\x00\x02{}", "no signed part"),
    ],
)
def test_refuses_malformed(union_keys: UnionKeys, clock, data: bytes, message: str) -> None:
    with pytest.raises(RosterError, match=message):
        verify_roster(data, trusted(union_keys, "roster"), now=clock())


def test_refuses_oversized_before_parsing(union_keys: UnionKeys, clock) -> None:
    class Huge(bytes):
        def __len__(self) -> int:
            return MAX_ROSTER_BYTES + 1

    with pytest.raises(RosterError, match="oversized"):
        verify_roster(Huge(b"UCR1"), trusted(union_keys, "roster"), now=clock())


def test_build_refuses_duplicate_cards(union_keys: UnionKeys, clock) -> None:
    token = token_for_pan(MEMBER_PAN, union_keys.token_key)
    with pytest.raises(ValueError, match="duplicate"):
        build_roster(
            [MemberRecord(token), MemberRecord(token, "suspended")],
            version=1,
            issued_at=clock(),
            expires_at=clock() + timedelta(days=1),
            token_key_id="x",
            keys=[union_keys.roster],
        )


@settings(max_examples=30, deadline=None)
@given(
    present=st.sets(st.binary(min_size=16, max_size=16), max_size=60),
    absent=st.sets(st.binary(min_size=16, max_size=16), max_size=20),
)
def test_lookup_finds_exactly_the_members(present: set[bytes], absent: set[bytes]) -> None:
    import tempfile
    from datetime import UTC, datetime
    from pathlib import Path

    now = datetime(2026, 1, 1, tzinfo=UTC)
    keys = create_keys(Path(tempfile.mkdtemp()) / "k", now=now)
    data = build_roster(
        [MemberRecord(t) for t in present],
        version=1,
        issued_at=now,
        expires_at=now + timedelta(days=1),
        token_key_id="k",
        keys=[keys.roster],
    )
    roster = verify_roster(data, trusted(keys, "roster"), now=now)
    for token in present:
        assert roster.lookup(token) is not None
    for token in absent - present:
        assert roster.lookup(token) is None


# -- layers and deltas -----------------------------------------------------------------------
def _layered(keys: UnionKeys, now, states: list[dict[bytes, int]]):
    """Version 1 from states[0], then one delta (a layer) per later state."""
    from pact.roster import apply_delta, build_delta

    roster = verify_roster(
        build_roster(
            [MemberRecord(t, tier=tier) for t, tier in states[0].items()],
            version=1,
            issued_at=now,
            expires_at=now + timedelta(days=1),
            token_key_id="k",
            keys=[keys.roster],
        ),
        trusted(keys, "roster"),
        now=now,
    )
    full = bytes(roster.data)
    for state in states[1:]:
        packed = sorted(MemberRecord(t, tier=tier).pack() for t, tier in state.items())
        delta, full = build_delta(
            roster,
            packed,
            issued_at=now,
            expires_at=now + timedelta(days=1),
            keys=[keys.roster],
            max_overlay=None,
        )
        roster = apply_delta(roster, delta, trusted(keys, "roster"), now=now)
    return roster, full


@settings(max_examples=40, deadline=None)
@given(
    states=st.lists(
        st.dictionaries(
            st.binary(min_size=16, max_size=16),
            st.integers(0, 3),
            max_size=25,
        ),
        min_size=1,
        max_size=6,
    ),
    common=st.dictionaries(st.binary(min_size=16, max_size=16), st.integers(0, 3), max_size=25),
)
def test_layers_answer_like_the_newest_member_list(states, common) -> None:
    """However members come, go and change tier over several deltas, every lookup and
    the merged records give exactly the newest list; the full file of the last
    version (all its layers) verifies and names the same body digest."""
    import tempfile
    from datetime import UTC, datetime
    from pathlib import Path

    now = datetime(2026, 1, 1, tzinfo=UTC)
    keys = create_keys(Path(tempfile.mkdtemp()) / "k", now=now)
    states = [{**common, **s} for s in states]  # some cards stay throughout
    roster, full = _layered(keys, now, states)
    newest = states[-1]
    assert len(roster.layers) == len(states) and len(roster) == len(newest)
    for token in set().union(*states):
        found = roster.lookup(token)
        if token in newest:
            assert found is not None and found.tier == newest[token]
        else:
            assert found is None
    expected = sorted(MemberRecord(t, tier=tier).pack() for t, tier in newest.items())
    assert list(roster.records()) == expected
    fetched = verify_roster(full, trusted(keys, "roster"), now=now)
    assert fetched.header.body_sha256 == roster.header.body_sha256
    assert list(fetched.records()) == expected


def test_refuses_a_tampered_middle_layer(union_keys: UnionKeys, clock) -> None:
    tokens = [bytes([i]) * 16 for i in range(1, 40)]
    _, full = _layered(
        union_keys,
        clock(),
        [dict.fromkeys(tokens, 1), dict.fromkeys(tokens[:-3], 1), dict.fromkeys(tokens[2:], 2)],
    )
    envelope = _envelope(full)
    first, second, _ = envelope["signed"]["layers"]
    assert second["records"] == 3  # three cards removed
    (hlen,) = struct.unpack_from(">I", full, 4)
    spot = 8 + hlen + first["records"] * RECORD_SIZE + RECORD_SIZE + 16  # a status byte
    tampered = bytearray(full)
    tampered[spot] ^= 0x03  # "removed" becomes "suspended"
    with pytest.raises(RosterError, match="body digest mismatch"):
        verify_roster(bytes(tampered), trusted(union_keys, "roster"), now=clock())


def test_refuses_layers_that_do_not_give_the_body_digest(union_keys: UnionKeys, clock) -> None:
    from pact.signing import sign

    data = roster_bytes(union_keys, [MEMBER_PAN, OTHER_PAN], clock())
    signed = dict(_envelope(data)["signed"])
    signed["body_sha256"] = "00" * 32  # signed by the union's key, but inconsistent
    with pytest.raises(RosterError, match="layers do not give the body digest"):
        verify_roster(
            _reframe(data, sign(signed, [union_keys.roster])),
            trusted(union_keys, "roster"),
            now=clock(),
        )
