"""One generation per sale: the terminal serves from a frozen generation that an
install or a reload replaces in one step.

The race this guards against: a reload that first empties the roster and policy
and then fills them in, and a checkout that reads the policy several times, could
let a cashier's status call see no roster, or let one sale mix two installs.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from central.keys import UnionKeys, create_keys
from pact.cards import PanTokenizer
from pact.errors import RosterError, SnapshotError
from pact.generation import Generation, decide_install
from reader.identity import identity_from_pan
from terminal.service import TerminalService
from terminal.state import TerminalState
from tests.helpers import MEMBER_PAN, bundle, policy_bytes, roster_bytes, snapshot_bytes

CHECKOUTS = 5_000
STATUS_CALLS = 5_000


@pytest.fixture
def keys(tmp_path: Path, clock) -> UnionKeys:
    return create_keys(tmp_path / "keys", now=clock())


def files(keys: UnionKeys, clock, version: int) -> tuple[bytes, bytes, bytes]:
    """Snapshot, roster and policy, all of version ``version``: a sale journaled from
    one generation names the same roster and policy version."""
    roster = roster_bytes(keys, [MEMBER_PAN], clock(), version=version)
    policy = policy_bytes(keys, clock(), version=version, basis_points=10 * version)
    return snapshot_bytes(keys, clock(), roster, policy, version=version), roster, policy


def test_decide_install_is_pure_and_leaves_the_current_generation(
    tmp_path: Path, keys: UnionKeys, clock
) -> None:
    """The decision takes bytes and a generation and returns a new one; a refusal
    changes nothing, since there is nothing to change."""
    state = TerminalState(tmp_path / "t")
    state.enrol(bundle(keys))
    empty = state.current
    snap, roster, policy = files(keys, clock, 1)
    decision = decide_install(empty, "M0001", snap, clock(), roster, policy)
    assert decision.roster_file == "full"
    new = decision.generation
    assert isinstance(new, Generation) and (new.roster_version, new.policy_version) == (1, 1)
    assert empty.roster is None and state.current is empty  # nothing was installed
    assert not (tmp_path / "t" / "current").exists()
    with pytest.raises(SnapshotError, match="needs roster"):
        decide_install(empty, "M0001", snap, clock(), None, policy)
    bad = bytearray(roster)
    bad[-1] ^= 1
    with pytest.raises(RosterError):
        decide_install(empty, "M0001", snap, clock(), bytes(bad), policy)
    snap2, roster2, policy2 = files(keys, clock, 2)
    newer = decide_install(new, "M0001", snap2, clock(), roster2, policy2).generation
    assert (newer.roster_version, new.roster_version) == (2, 1)  # ``new`` is unchanged
    with pytest.raises(SnapshotError, match="rollback|older|not newer"):
        decide_install(newer, "M0001", snap, clock(), roster, policy)


@pytest.mark.slow
def test_a_refresh_never_shows_a_half_loaded_generation(
    tmp_path: Path, keys: UnionKeys, clock
) -> None:
    """A thread installs (as the nightly sync, in its own TerminalState) and refreshes
    the daemon's state in a loop, while another does 10,000 checkouts and status
    calls: none sees a missing roster or policy, and every sale's roster and policy
    versions come from one generation."""
    data = tmp_path / "terminal"
    installer = TerminalState(data)
    installer.enrol(bundle(keys))
    generations = [files(keys, clock, version) for version in range(1, 400)]
    snap, roster, policy = generations[0]
    installer.install(snap, clock(), roster, policy)

    identity = identity_from_pan(
        "unionpay", b"\xa0", MEMBER_PAN, "2030-12", PanTokenizer(keys.token_key)
    )
    service = TerminalService(data, lambda *, timeout, tokenize: identity, clock, card_timeout=1)
    service.journal.db.execute("PRAGMA synchronous=OFF")  # speed: durability is not tested here
    stop = threading.Event()
    installed: list[int] = []
    problems: list[str] = []

    def install_and_refresh() -> None:
        try:
            for snap, roster, policy in generations[1:]:
                if stop.is_set():
                    break
                installed.append(installer.install(snap, clock(), roster, policy).version)
                service.state.refresh()
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            problems.append(repr(exc))
        finally:
            stop.set()

    seen_versions: set[int] = set()
    thread = threading.Thread(target=install_and_refresh)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: more chances to meet a half-load
    thread.start()
    try:
        for i in range(CHECKOUTS + STATUS_CALLS):
            for _ in range(5):
                current = service.state.current  # as any other reader of the state would
                assert current.roster is not None and current.policy is not None
                assert current.roster_version == current.policy_version
            if i % 2:
                status = service.status()
                assert status["roster_version"] is not None, status
                assert status["policy_version"] is not None, status
                assert status["roster_version"] == status["policy_version"], status
                assert not [w for w in status["warnings"] if "no member roster" in w], status
                assert not [w for w in status["warnings"] if "no discount policy" in w], status
            else:
                result = service.checkout(100_000, confirm=True)
                sale = result.sale
                assert sale.roster_version == sale.policy_version, sale
                assert result.member, result.as_json()
                # the discount is the one of the policy the sale names (0.1 % per version)
                assert sale.discount == 100 * sale.policy_version, sale
                seen_versions.add(sale.policy_version)
    finally:
        stop.set()
        thread.join(60)
        sys.setswitchinterval(switch)
        service.close()
    assert not problems, problems
    assert len(installed) >= 2, "the installer barely ran: the test proved nothing"
    assert len(seen_versions) >= 2, "every sale saw one generation: the test proved nothing"
