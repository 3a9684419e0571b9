"""The token scheme (issue 16 item 5, "the stolen terminal"): a new union's tokens are
memory-hard (Argon2id keyed by the HMAC), the roster's signed header names the scheme
and the terminal tokenises a tap as its roster says; a union of the first scheme
switches over with one full import, and publishes no roster half-way."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from argon2.low_level import Type, hash_secret_raw
from click.testing import CliRunner

from central.errors import InputError
from central.keys import create_keys, load_keys
from central.service import Union
from central.store import Store, make_engine, members
from pact.basket import Basket
from pact.cards import (
    ARGON2ID,
    DEFAULT_SCHEME,
    HMAC_SHA256,
    PanTokenizer,
    TokenScheme,
    token_for_pan,
)
from pact.errors import RosterError
from pact.roster import MemberRecord, apply_delta, build_delta, build_roster, verify_roster
from pact.timefmt import iso
from reader.identity import identity_from_pan
from terminal.service import TerminalService
from terminal.state import TerminalState
from terminal.syncrecord import keep_sync
from tests.helpers import MEMBER_PAN, OTHER_PAN, bundle, policy_bytes, snapshot_bytes, trusted
from unioncard.cli import cli

KEY = bytes(range(32))
CSV = f"member_id,pan,tier\nU1,{MEMBER_PAN},2\nU2,{OTHER_PAN},1\n"


def test_a_new_union_makes_memory_hard_tokens_as_docs_protocol_says() -> None:
    assert DEFAULT_SCHEME == ARGON2ID
    assert ARGON2ID.label == "argon2id-hmac-128;m=8192,t=1,p=1"
    keyed = hmac.new(KEY, MEMBER_PAN.encode(), hashlib.sha256).digest()
    salt = hashlib.sha256(b"unioncard-token-2" + KEY).digest()[:16]
    expected = hash_secret_raw(
        keyed, salt, time_cost=1, memory_cost=8192, parallelism=1, hash_len=16, type=Type.ID
    )
    assert token_for_pan(MEMBER_PAN, KEY) == expected
    assert token_for_pan(MEMBER_PAN, KEY, HMAC_SHA256) == keyed[:16]
    assert token_for_pan(MEMBER_PAN, bytes(32)) != expected  # keyed
    assert token_for_pan(OTHER_PAN, KEY) != expected
    assert "8192" in repr(PanTokenizer(KEY)) and KEY.hex() not in repr(PanTokenizer(KEY))


@pytest.mark.parametrize(
    "label",
    [
        "hmac-sha256",
        "argon2id-hmac-128",
        "argon2id-hmac-128;m=1048576,t=1,p=1",  # 1 GiB a tap: no Pi bears it
        "argon2id-hmac-128;m=8192,t=11,p=1",
        "argon2id-hmac-128;m=8192,t=1,p=5",
        "argon2id-hmac-128;m=8,t=1,p=4",  # fewer than 8 KiB a lane
        "argon2id-hmac-128;m=08192,t=1,p=1",
        "scrypt;m=8192,t=1,p=1",
    ],
)
def test_a_scheme_this_release_does_not_know_or_cannot_bear_is_refused(label: str) -> None:
    with pytest.raises(ValueError, match="token scheme"):
        TokenScheme.parse(label)


def test_a_scheme_is_read_back_from_its_label() -> None:
    for scheme in (HMAC_SHA256, ARGON2ID, TokenScheme("argon2id-hmac-128", 65536, 10, 4)):
        assert TokenScheme.parse(scheme.label) == scheme


def _roster(
    keys, scheme: TokenScheme, now, version: int = 1, pans=(MEMBER_PAN,), made_by=None
) -> bytes:
    made_by = made_by or scheme
    return build_roster(
        [MemberRecord(token_for_pan(p, keys.token_key, made_by), "active", 1) for p in pans],
        version=version,
        issued_at=now,
        expires_at=now + timedelta(days=3),
        token_key_id=keys.token_key_id,
        keys=[keys.roster],
        token_scheme=scheme,
    )


def test_the_roster_names_its_scheme_and_one_unknown_is_refused_saying_what_to_do(
    union_keys, clock
) -> None:
    now = clock()
    for scheme in (HMAC_SHA256, ARGON2ID):
        roster = verify_roster(
            _roster(union_keys, scheme, now), trusted(union_keys, "roster"), now=now
        )
        assert roster.header.token_scheme == scheme
        assert roster.lookup(token_for_pan(MEMBER_PAN, union_keys.token_key, scheme)) is not None
    newer = _roster(union_keys, TokenScheme("balloon-hmac-128", 1, 1, 1), now, made_by=ARGON2ID)
    with pytest.raises(RosterError, match="unknown token scheme.*update the terminal's software"):
        verify_roster(newer, trusted(union_keys, "roster"), now=now)


def test_a_delta_cannot_change_the_scheme(union_keys, clock) -> None:
    now, keys = clock(), trusted(union_keys, "roster")
    old = verify_roster(_roster(union_keys, HMAC_SHA256, now), keys, now=now)
    # the union's base had the new scheme; the terminal's has the old: refused
    fake_base = verify_roster(
        build_roster(
            [MemberRecord(r[:16], "active", 1) for r in old.records()],
            version=1,
            issued_at=now,
            expires_at=now + timedelta(days=3),
            token_key_id=union_keys.token_key_id,
            keys=[union_keys.roster],
            token_scheme=ARGON2ID,
        ),
        keys,
        now=now,
    )
    delta, _ = build_delta(
        fake_base,
        sorted([*fake_base.records(), MemberRecord(bytes(16), "active", 1).pack()]),
        issued_at=now,
        expires_at=now + timedelta(days=3),
        keys=[union_keys.roster],
        max_overlay=None,
    )
    with pytest.raises(RosterError, match="cannot change the token scheme"):
        apply_delta(old, delta, keys, now=now)
    assert apply_delta(fake_base, delta, keys, now=now).header.token_scheme == ARGON2ID


def _token_of(store: Store, member_id: str) -> str:
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(members.c.token).where(members.c.member_id == member_id)
        ).scalar_one()


def test_a_union_of_the_first_scheme_switches_in_one_full_import(
    store: Store, tmp_path: Path, clock
) -> None:
    keys_dir = tmp_path / "keys"
    create_keys(keys_dir, now=clock(), token_scheme=HMAC_SHA256)
    union = Union(store, load_keys(keys_dir), clock)
    union.import_members(CSV)
    union.publish_roster()
    assert store.token_scheme() == HMAC_SHA256.label
    old = _token_of(store, "U1")
    assert old == token_for_pan(MEMBER_PAN, union.keys.token_key, HMAC_SHA256).hex()

    result = CliRunner().invoke(cli, ["keys", "token-scheme", "argon2id", "--keys", str(keys_dir)])
    assert result.exit_code == 0 and "import-members --full" in result.output
    union = Union(store, load_keys(keys_dir), clock)
    assert union.keys.token_scheme == ARGON2ID
    with pytest.raises(InputError, match="finish the switch"):
        union.publish_roster()  # the members still hold HMAC tokens
    with pytest.raises(InputError, match="with --full"):
        union.import_members(CSV)
    assert _token_of(store, "U1") == old and store.token_scheme() == HMAC_SHA256.label

    clock.advance(timedelta(days=1))
    result = union.import_members(CSV, full=True)
    assert (result.changed, result.added, result.left) == (2, 0, 0)  # re-tokenised only
    assert store.token_scheme() == ARGON2ID.label
    assert _token_of(store, "U1") == token_for_pan(MEMBER_PAN, union.keys.token_key).hex()
    version, count = union.publish_roster()
    latest = store.latest_signed("roster")
    assert latest is not None and (version, count) == (2, 2)
    roster = verify_roster(latest[1], trusted(union.keys, "roster"), now=clock())
    assert roster.header.token_scheme == ARGON2ID and roster.header.kind == "full"
    assert roster.lookup(token_for_pan(MEMBER_PAN, union.keys.token_key)) is not None
    assert roster.lookup(bytes.fromhex(old)) is None
    again = union.import_members(CSV)  # the same file again: nothing changes
    assert (again.changed, again.added) == (0, 0)
    # a sale made with the old token before the switch is still the member's (the audit)
    switched_at = store.member_history("U1")[-1]["at"]
    earlier = store.token_history(old)
    assert [h["status"] for h in earlier] == ["active", "left"] and earlier[-1]["at"] > earlier[0][
        "at"
    ]
    assert store.token_history(_token_of(store, "U1")) == store.member_history("U1")
    assert store.token_history("00" * 16) == []
    assert switched_at == earlier[0]["at"]  # the switch changed no standing
    # the audit reads them all at once: the same histories, a token asked twice once
    now_token, nobody = _token_of(store, "U1"), "00" * 16
    assert store.token_histories([old, now_token, nobody, old]) == {
        old: earlier,
        now_token: store.member_history("U1"),
        nobody: [],
    }


def test_a_database_holding_members_before_the_scheme_was_recorded_holds_hmac_tokens(
    tmp_path: Path, clock
) -> None:
    from tests.test_migrations import _upgrade

    url = f"sqlite:///{tmp_path / 'central.db'}"
    engine = make_engine(url)
    _upgrade(engine, "0012")
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO members (member_id, token, pan_last4) VALUES ('U1', :t, '0000')"),
            {"t": "ab" * 16},
        )
    _upgrade(engine, "head")  # 0013 records the scheme; Store.open needs the newest schema
    engine.dispose()
    store = Store.open(url)
    try:
        assert store.token_scheme() == HMAC_SHA256.label
    finally:
        store.close()


def test_the_terminal_tokenises_a_tap_as_its_roster_was_made(tmp_path: Path, clock) -> None:
    """A terminal installs the first scheme's roster, then the switched union's: the
    same card is a member under each, and the journal keeps each scheme's token."""
    keys_dir = tmp_path / "keys"
    create_keys(keys_dir, now=clock(), token_scheme=HMAC_SHA256)
    keys = load_keys(keys_dir)
    state = TerminalState(tmp_path / "terminal")
    state.enrol(bundle(keys))
    keep_sync(state.dir, last_success_at=iso(clock()))  # in service: it synced just now
    taps: list[bytes | None] = []

    def read_card(*, timeout: float, tokenize: PanTokenizer):
        identity = identity_from_pan("unionpay", b"\xa0", MEMBER_PAN, "2030-12", tokenize)
        taps.append(identity.token)
        return identity

    def install(scheme: TokenScheme, version: int) -> None:
        roster = _roster(keys, scheme, clock(), version)
        policy = policy_bytes(keys, clock(), version=version)
        snapshot = snapshot_bytes(keys, clock(), roster, policy, version=version)
        state.install(snapshot, clock(), roster, policy)

    install(HMAC_SHA256, 1)
    service = TerminalService(state.dir, read_card, clock, card_timeout=1)
    try:
        first = service.checkout(Basket.of_amount(10000), confirm=True).sale
        install(ARGON2ID, 2)
        second = service.checkout(Basket.of_amount(10000), confirm=True).sale
    finally:
        service.close()
    assert first.member and second.member and first.discount > 0 and second.discount > 0
    assert taps == [
        token_for_pan(MEMBER_PAN, keys.token_key, HMAC_SHA256),
        token_for_pan(MEMBER_PAN, keys.token_key, ARGON2ID),
    ]
    assert (first.token, second.token) == (taps[0].hex(), taps[1].hex())  # type: ignore[union-attr]
