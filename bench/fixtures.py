"""Build real terminals and rosters for the benchmarks (on disk, in the bench folder)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from central.keys import UnionKeys, create_keys
from reader.identity import token_for_pan
from terminal.journal import Journal
from terminal.policy import Rule, build_policy
from terminal.roster import RECORD, STATUS_ACTIVE, sign_packed
from terminal.state import TerminalState

MEMBER_PAN = "6214830000123454"


@dataclass
class BenchTerminal:
    keys: UnionKeys
    state: TerminalState
    journal: Journal
    member_pan: str
    roster_bytes: bytes


def random_packed(count: int, include: list[bytes]) -> list[bytes]:
    """``count`` packed active records with random tokens (plus ``include``), sorted."""
    blob = os.urandom(16 * count)
    tokens = {blob[i : i + 16] for i in range(0, len(blob), 16)} | set(include)
    return sorted(RECORD.pack(t, STATUS_ACTIVE, 0, 0xFFFFFFFF) for t in tokens)


def signed_roster(keys: UnionKeys, members: int, include: list[bytes], version: int = 1) -> bytes:
    now = datetime.now(UTC)
    return sign_packed(
        random_packed(members - len(include), include),
        version=version,
        issued_at=now,
        expires_at=now + timedelta(days=3),
        token_key_id=keys.token_key_id,
        keys=[keys.signing],
    )


def terminal_with_roster(folder: Path, members: int) -> BenchTerminal:
    import json

    keys = create_keys(folder / "keys")
    state = TerminalState(folder / "terminal")
    bundle = {
        "terminal_id": "T-BENCH",
        "merchant_id": "M0001",
        "central_url": "http://127.0.0.1:9",
        "api_secret": "x",
        "token_key": keys.token_key.hex(),
        "trusted_keys": keys.trusted_keys_json(),
    }
    state.enrol(json.dumps(bundle).encode())
    token = token_for_pan(MEMBER_PAN, keys.token_key)
    roster = signed_roster(keys, members, [token])
    now = datetime.now(UTC)
    state.install_roster(roster, now)
    state.install_policy(
        build_policy(
            merchant_id="M0001",
            merchant_name="Bench",
            status="active",
            version=1,
            issued_at=now,
            expires_at=now + timedelta(days=30),
            rules=[Rule("member", "percent_off", 500)],
            keys=[keys.signing],
        )
    )
    return BenchTerminal(keys, state, Journal(state.journal_path), MEMBER_PAN, roster)
