"""Build real terminals and rosters for the benchmarks (on disk, in the bench folder)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from central.keys import UnionKeys, create_keys
from pact.cards import DEFAULT_SCHEME, TokenScheme, token_for_pan
from pact.policy import build_policy
from pact.roster import RECORD, STATUS_ACTIVE, sign_packed
from pact.timefmt import Clock
from terminal.journal import Journal
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


def signed_roster(
    keys: UnionKeys,
    members: int,
    include: list[bytes],
    *,
    now: datetime,
    version: int = 1,
    scheme: TokenScheme = DEFAULT_SCHEME,
) -> bytes:
    return sign_packed(
        random_packed(members - len(include), include),
        version=version,
        issued_at=now,
        expires_at=now + timedelta(days=3),
        token_key_id=keys.token_key_id,
        keys=[keys.roster],
        token_scheme=scheme,
    )


def snapshot_for(
    keys: UnionKeys, roster: bytes, policy: bytes, version: int, *, now: datetime
) -> bytes:
    from pact.roster import split_roster

    return snapshot_for_header(keys, split_roster(roster)[0]["signed"], policy, version, now=now)


def snapshot_for_header(
    keys: UnionKeys, signed: dict[str, Any], policy: bytes, version: int, *, now: datetime
) -> bytes:
    """A snapshot naming the roster whose signed header is ``signed`` (a large roster's
    header can be read without its body) and ``policy``."""
    from pact.snapshot import build_snapshot

    return build_snapshot(
        merchant_id="M0001",
        version=version,
        issued_at=now,
        expires_at=now + timedelta(days=3),
        roster_version=signed["version"],
        roster_body_sha256=signed["body_sha256"],
        policy_file=policy,
        policy_version=json.loads(policy)["signed"]["version"],
        keys=[keys.snapshot],
    )


def bundle(keys: UnionKeys) -> bytes:
    """The enrolment bundle of the bench terminal T-BENCH of merchant M0001."""
    return json.dumps(
        {
            "terminal_id": "T-BENCH",
            "merchant_id": "M0001",
            "central_url": "http://127.0.0.1:9",
            "api_secret": "x",
            "token_key": keys.token_key.hex(),
            "root": keys.root_data.decode(),
        }
    ).encode()


def policy(keys: UnionKeys, *, now: datetime, terms: dict[str, Any] | None = None) -> bytes:
    """M0001's policy v1: ``terms``, by default 5 % off for members."""
    return build_policy(
        merchant_id="M0001",
        merchant_name="Bench",
        status="active",
        version=1,
        issued_at=now,
        expires_at=now + timedelta(days=30),
        terms=terms or {"rules": [{"id": "member", "kind": "percent_off", "basis_points": 500}]},
        keys=[keys.policy],
    )


def terminal_with_roster(
    folder: Path,
    members: int,
    clock: Clock,
    *,
    pans: tuple[str, ...] = (MEMBER_PAN,),
    terms: dict[str, Any] | None = None,
    scheme: TokenScheme = DEFAULT_SCHEME,
) -> BenchTerminal:
    """An enrolled terminal serving a roster of ``members`` in which ``pans`` are members,
    their tokens made by ``scheme`` (a new union's by default), under a policy of
    ``terms`` (read ``clock`` as it goes)."""
    keys = create_keys(folder / "keys", now=clock())
    state = TerminalState(folder / "terminal")
    state.enrol(bundle(keys))
    tokens = [token_for_pan(pan, keys.token_key, scheme) for pan in pans]
    roster = signed_roster(keys, members, tokens, now=clock(), scheme=scheme)
    signed_policy = policy(keys, now=clock(), terms=terms)
    snapshot = snapshot_for(keys, roster, signed_policy, 1, now=clock())
    state.install(snapshot, clock(), roster, signed_policy)
    return BenchTerminal(
        keys, state, Journal(state.journal_path, state.signer()), MEMBER_PAN, roster
    )
