"""The audit bundle (issue 15, item 3): the union exports a merchant's period as one
signed file (`unioncard central audit export`); an outside auditor verifies it offline
with the root public key (`unioncard audit verify FILE --trust root.pub`) and looks up
receipts in it. The histories are real: sales through the terminal's checkout and
journal, synced to the central service (on SQLite and on PostgreSQL), exported from
its store.

Editing any single byte of an exported bundle is refused: every byte position of a
small bundle (one sale; about 12 KB) is changed, in process through the pure
`pact.bundle.verify_bundle` and audit, each in two ways (the byte XOR 0x01, and a
seeded random other byte), and each must fail with a `BundleError` naming where (the
part and item, the manifest, or the file) or give a finding; a few positions are
also changed through the real command line (exit 2, the part named).
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import create_app
from central.keys import create_keys, load_keys
from central.serve import ThreadedServer
from central.service import CentralPaths, Union
from pact.bundle import JOURNAL_EXPORT, PARTS, audit_bundle, digest, verify_bundle
from pact.errors import BundleError
from pact.event import UPDATE_INSTALLED
from pact.money import fen
from pact.receipt import verification_code
from pact.signing import canonical_json, public_bytes, sign
from pact.timefmt import iso, parse_iso
from pact.trust import build_root, load_pinned_root, update_root
from pact.wire import ENTRY_YEARS
from sync.client import CentralClient
from terminal.journal import Journal
from terminal.state import TerminalState
from tests.conftest import FAST, Clock, Site
from tests.helpers import MEMBER_PAN
from tests.test_commands import one_line_error, run
from tests.test_evidence import FORGED_EXTRA, forge


@pytest.fixture
def site(tmp_path: Path, clock, database_url: str | None) -> Iterator[Site]:
    """tests.conftest's site (terminal T1 of merchant M0001 with member U1), on the
    store of ``database_url``."""
    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=clock())
    union = Union.open(paths, database_url, clock)
    union.import_members(f"member_id,pan\nU1,{MEMBER_PAN}\n")
    union.add_merchant("M0001", "Shop", 500)
    union.publish_roster()
    config = {"DATA_DIR": str(paths.data_dir), "CLOCK": clock, "DATABASE_URL": database_url}
    app = create_app(config)
    with ThreadedServer(app) as server:
        state = TerminalState(tmp_path / "terminal")
        state.enrol(union.enrol_terminal("T1", "M0001", server.url))
        site = Site(union, server.url, state, Journal(state.journal_path, state.signer()), None)
        site.client = CentralClient(server.url, "T1", state.enrolment.api_secret, FAST)
        yield site
        site.client.close()
        site.journal.close()
    union.close()
    app.extensions["unioncard"].close()  # the served app's store (its connection pool)


def _central(site: Site, tmp_path: Path) -> list[str]:
    url = ["--database-url", site.union.store.engine.url.render_as_string(hide_password=False)]
    return ["--data", str(tmp_path / "central"), *url]


def _export(site: Site, clock, capsys, tmp_path: Path, name: str = "bundle.json") -> Path:
    day = clock().date().isoformat()
    out = tmp_path / name
    code, stdout, err = run(
        capsys, "central", "audit", "export", "--merchant", "M0001", "--from", day,
        "--to", day, "--out", str(out), *_central(site, tmp_path),
    )  # fmt: skip
    assert (code, err) == (0, ""), err
    assert stdout.startswith(f"audit bundle of M0001 written to {out} (")
    return out


def _root_pub(tmp_path: Path) -> Path:
    """The root public key as an auditor holds it: a file of its own, no roots/ beside."""
    auditor = tmp_path / "auditor"
    auditor.mkdir(exist_ok=True)
    shutil.copy(tmp_path / "central" / "keys" / "root.pub", auditor / "root.pub")
    return auditor / "root.pub"


def _history(site: Site, clock) -> None:
    site.sync(clock)
    site.sell(MEMBER_PAN, 12800, clock)
    clock.advance(timedelta(minutes=5))
    site.sell(MEMBER_PAN, 4550, clock)
    site.sync(clock)


def test_an_exported_bundle_verifies_offline(site: Site, clock, capsys, tmp_path) -> None:
    _history(site, clock)
    bundle = _export(site, clock, capsys, tmp_path)
    data = bundle.read_bytes()
    assert MEMBER_PAN.encode() not in data and b"member_id" not in data  # tokens only
    trust = ["--trust", str(_root_pub(tmp_path))]
    code, out, err = run(capsys, "audit", "verify", str(bundle), *trust)
    assert (code, err) == (0, "")
    day = clock().date()
    assert re.fullmatch(
        rf"clean: audit bundle of M0001, {day} to {day} \(exported [0-9T:Z-]+\): 2 entries "
        r"in the period \(2 with context\) from 1 terminal\(s\), 1 policy version\(s\), "
        r"root v1: every signature and digest verified; no findings\n",
        out,
    ), out
    # the same bundle, pure: what it holds
    verified = verify_bundle(data, (tmp_path / "central" / "keys" / "root.pub").read_bytes())
    assert [(e.terminal_id, e.seq) for e in verified.entries] == [("T1", 1), ("T1", 2)]
    assert sorted(verified.policies) == [1] and sorted(verified.rosters) == [1]
    assert list(verified.device_keys) == ["T1"] and audit_bundle(verified) == []


def test_a_forged_discount_is_found_in_the_bundle(site: Site, clock, capsys, tmp_path) -> None:
    site.sync(clock)
    site.sell(MEMBER_PAN, 12800, clock)
    site.sell(MEMBER_PAN, 10000, clock)
    # the shop's owner, root on the Pi, forges sale 2 and signs it with the device key
    forge(site.state.journal_path, seq=2, signer=site.state.signer())
    site.journal.close()
    site.journal = Journal(site.state.journal_path, site.state.signer())
    assert site.sync(clock).uploaded == 2  # the union took it: chain and signature fine
    bundle = _export(site, clock, capsys, tmp_path)
    trust = ["--trust", str(_root_pub(tmp_path))]
    code, out, err = run(capsys, "audit", "verify", str(bundle), *trust)
    assert code == 1
    assert out.splitlines() == [
        f"terminal=T1 seq=2 finding=over_discount detail=a discount of "
        f"{fen(500 + FORGED_EXTRA)} where the policy gives 5.00"
    ]
    assert err.startswith("1 findings; audit bundle of M0001")
    # the same engine over the union's store gives the same lines
    day = clock().date().isoformat()
    code, union_out, _ = run(
        capsys, "central", "audit", "run", "--merchant", "M0001", "--from", day, "--to", day,
        *_central(site, tmp_path),
    )  # fmt: skip
    assert (code, union_out) == (1, out)


def test_a_receipt_code_is_found_in_the_bundle(site: Site, clock, capsys, tmp_path) -> None:
    _history(site, clock)
    bundle = _export(site, clock, capsys, tmp_path)
    second = site.journal.sales()[1]
    code_text = verification_code(second)
    assert code_text is not None
    trust = ["--trust", str(_root_pub(tmp_path))]
    code, out, err = run(
        capsys, "audit", "receipt", code_text.lower().replace("-", ""), "--bundle", str(bundle),
        *trust,
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out.startswith(f"{code_text}: terminal T1 sale #2 of merchant M0001 at {second.at}")
    assert out.rstrip().endswith(f"net {fen(second.net)}; device signature verified")
    code, out, err = run(capsys, "audit", "receipt", "00000-00000", "--bundle", str(bundle), *trust)
    assert code == 1 and out == "" and "no entry in" in err and "00000-00000" in err
    # without --bundle it is still the union's store that is asked
    code, out, err = run(capsys, "audit", "receipt", code_text, *_central(site, tmp_path))
    assert (code, err) == (0, "") and "device signature verified" in out
    code, _, err = run(capsys, "audit", "receipt", code_text, "--bundle", str(bundle))
    assert code == 2 and "--trust" in err


def test_an_events_code_is_no_receipt_and_a_voided_sale_shows_its_void(
    site: Site, clock, capsys, tmp_path
) -> None:
    """An event has no receipt (the terminal prints none), but its code was found as
    "event of sale None"; a sale's receipt did not say the sale was voided."""
    from terminal.service import TerminalService
    from terminal.supervisor import set_pin

    _history(site, clock)  # sales 1 and 2
    set_pin(site.state.dir, "2468")
    site.journal.close()
    service = TerminalService(site.state.dir, lambda **_: None, clock)  # type: ignore[arg-type,return-value]
    try:
        void = service.void(2, "wrong amount", "2468")  # 3
        service.record_event(UPDATE_INSTALLED, "policy v1")  # 4
    finally:
        service.close()
    site.journal = Journal(site.state.journal_path, site.state.signer())
    site.sync(clock)
    bundle = _export(site, clock, capsys, tmp_path)
    _, sale, _, event = site.journal.sales()
    assert event.kind == "event" and sale.is_sale
    trust = ["--trust", str(_root_pub(tmp_path))]
    event_code = verification_code(event)
    assert event_code is not None  # signed like every entry
    code, out, err = run(capsys, "audit", "receipt", event_code, "--bundle", str(bundle), *trust)
    assert code == 1 and out == "" and "no entry in" in err
    code, out, err = run(capsys, "audit", "receipt", event_code, *_central(site, tmp_path))
    assert code == 1 and out == "" and "no entry the union holds" in err  # nor in its store
    sale_code = verification_code(sale)
    assert sale_code is not None
    code, out, err = run(capsys, "audit", "receipt", sale_code, "--bundle", str(bundle), *trust)
    assert (code, err) == (0, "")
    assert out.rstrip().endswith(
        f"device signature verified; void #{void.seq} at {void.at} (net {fen(void.net)})"
    )


def test_another_root_key_is_refused(site: Site, clock, capsys, tmp_path) -> None:
    _history(site, clock)
    bundle = _export(site, clock, capsys, tmp_path)
    other = tmp_path / "other.pub"
    other.write_text(public_bytes(Ed25519PrivateKey.generate().public_key()).hex() + "\n")
    code, out, err = run(capsys, "audit", "verify", str(bundle), "--trust", str(other))
    assert code == 2 and out == ""
    one_line_error(err, str(bundle), "part roots", "no root metadata is signed by the trusted")


def test_an_export_that_fails_writes_nothing(site: Site, clock, capsys, tmp_path) -> None:
    day = clock().date().isoformat()
    out = tmp_path / "never.json"
    code, _, err = run(
        capsys, "central", "audit", "export", "--merchant", "M0404", "--from", day, "--to", day,
        "--out", str(out), *_central(site, tmp_path),
    )  # fmt: skip
    assert code != 0 and "M0404" in err
    assert not out.exists() and not list(tmp_path.glob(".never.json.*"))


# ---------------------------------------------------------------------------- byte edits
WHERE = (
    *(f"audit bundle refused: {part}[" for part in PARTS),
    *(f"audit bundle refused: part {part}" for part in PARTS),
    "audit bundle refused: the manifest: ",
    "audit bundle refused: the file: ",
    "audit bundle refused: the parts: ",
)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_single_byte_edit_is_refused(site: Site, clock, capsys, tmp_path) -> None:
    site.sync(clock)
    site.sell(MEMBER_PAN, 12800, clock)
    site.sync(clock)
    bundle = _export(site, clock, capsys, tmp_path)
    data = bundle.read_bytes()
    anchor = (tmp_path / "central" / "keys" / "root.pub").read_bytes()
    assert audit_bundle(verify_bundle(data, anchor)) == []
    rng = random.Random(15)
    named: dict[str, int] = {}
    for pos in range(len(data)):
        for other in (data[pos] ^ 0x01, (data[pos] + rng.randrange(1, 256)) % 256):
            edited = data[:pos] + bytes([other]) + data[pos + 1 :]
            try:
                findings = audit_bundle(verify_bundle(edited, anchor))
            except BundleError as exc:
                message = str(exc)
                assert message.startswith(WHERE), (pos, other, message)
                where = message.split(": ")[1].split(" (")[0].split("[")[0]
                named[where] = named.get(where, 0) + 1
            else:
                assert findings, f"byte {pos} changed to {other:#x} went unnoticed"
    # every part was hit, and each edit was named in its own part (at least once)
    assert {"roots", "policies", "rosters", "enrolments", "members", "entries"} <= set(named)
    assert "the manifest" in named and "the file" in named


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_edits_through_the_command_line_exit_2_naming_where(
    site: Site, clock, capsys, tmp_path
) -> None:
    _history(site, clock)
    bundle = _export(site, clock, capsys, tmp_path)
    data = bundle.read_bytes()
    trust = ["--trust", str(_root_pub(tmp_path))]
    text = data.decode()
    # the discount of entry 2 (canonical JSON: `"discount":227` once per entry)
    at_entries = text.index('"entries":[', text.index('"parts":{'))
    second = text.index('"seq":2', at_entries)
    discount = text.rindex('"discount":', at_entries, second) + len('"discount":')
    cases = {
        discount: "entries[1] (entry terminal=T1 seq=2): its digest is not the one",
        text.index('"merchant_name":"Shop"') + 17: "policies[0] (policy v1)",
        text.index('"signatures":[{"keyid":"') + 30: "the manifest",
        len(data) - 3: "the file: format version 3: this unioncard reads version 2",
        len(data) - 1: "the file: not in canonical form",  # the last newline, a space
        text.index('"enrolled_at":"', text.index('"enrolments":[', text.index('"parts":{'))) + 1: (
            "enrolments[0] (enrolment record terminal=T1)"
        ),
    }
    for pos, where in cases.items():
        edited = tmp_path / f"edited-{pos}.json"
        new = b" " if data[pos:] == b"\n" else bytes([data[pos] ^ 0x01])
        edited.write_bytes(data[:pos] + new + data[pos + 1 :])
        code, out, err = run(capsys, "audit", "verify", str(edited), *trust)
        assert code == 2 and out == "", (pos, err)
        one_line_error(err, str(edited), where)


# ---------------------------------------------------------------------------- the audit role
def _old_install(keys_dir: Path, clock) -> None:
    """Keys as made before the audit role: no audit.pem, a root v1 without the role."""
    create_keys(keys_dir, now=clock())
    keys = load_keys(keys_dir)
    assert keys.root is not None and keys.audit is not None
    (keys_dir / "audit.pem").unlink()
    old = build_root(
        version=1,
        issued_at=clock(),
        expires_at=clock() + timedelta(days=365),
        role_keys={
            role: [keys.role_key(role).public_key()]
            for role in ("root", "roster", "policy", "snapshot")
        },
        signers=[keys.root],
    )
    assert b'"audit"' not in old
    (keys_dir / "roots" / "1.json").write_bytes(old)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_install_before_the_audit_role_adds_its_key_by_rotation(
    clock, capsys, tmp_path, database_url
) -> None:
    paths = CentralPaths(tmp_path / "central")
    _old_install(paths.keys, clock)
    old_root = load_pinned_root((paths.keys / "roots" / "1.json").read_bytes())
    assert not old_root.has_role("audit") and old_root.trusted("audit") == {}
    keys = load_keys(paths.keys)  # the service loads without an audit key
    assert keys.audit is None
    union = Union.open(paths, database_url, clock)
    union.add_merchant("M0001", "Shop", 500)
    union.close()
    day = clock().date().isoformat()
    export = ["central", "audit", "export", "--merchant", "M0001", "--from", day, "--to", day]
    out = tmp_path / "b.json"
    code, _, err = run(capsys, *export, "--out", str(out), "--data", str(paths.data_dir))
    assert code != 0 and not out.exists()
    one_line_error(err, "no audit key yet", "keys rotate audit")
    code, stdout, err = run(
        capsys, "keys", "rotate", "audit", "--keys", str(paths.keys),
        "--root-key", str(paths.keys / "root.pem"),
    )  # fmt: skip
    assert (code, err) == (0, "") and "root metadata v2" in stdout
    assert (paths.keys / "audit.pem").stat().st_mode & 0o077 == 0
    new_root = update_root(old_root, (paths.keys / "roots" / "2.json").read_bytes())
    assert new_root.has_role("audit")  # as a terminal walks to it
    code, _, err = run(capsys, *export, "--out", str(out), "--data", str(paths.data_dir))
    assert (code, err) == (0, "")
    trust = ["--trust", str(_root_pub(tmp_path))]
    code, stdout, err = run(capsys, "audit", "verify", str(out), *trust)
    assert (code, err) == (0, "") and "0 entries in the period" in stdout
    assert "root v2" in stdout
    # rotating it again keeps the old key beside, for what it signed
    code, _, _ = run(
        capsys, "keys", "rotate", "audit", "--keys", str(paths.keys),
        "--root-key", str(paths.keys / "root.pem"),
    )  # fmt: skip
    assert code == 0 and (paths.keys / "audit.pem.v2").exists()


def test_entries_dated_after_their_receipt_are_found_in_the_bundle_too(
    site: Site, clock, capsys, tmp_path
) -> None:
    """The bundle carries when the union received each terminal's newest entry, so
    `audit verify` finds a clock put ahead as the union's audit does."""
    site.sync(clock)
    ahead = Clock(clock() + timedelta(hours=2))
    site.sell(MEMBER_PAN, 12800, ahead)
    site.sync(clock)
    bundle = _export(site, clock, capsys, tmp_path)
    code, out, _ = run(capsys, "audit", "verify", str(bundle), "--trust", str(_root_pub(tmp_path)))
    assert code == 1 and out.startswith("terminal=T1 seq=1 finding=dated_after_receipt detail=")
    day = clock().date().isoformat()
    code, union_out, _ = run(
        capsys, "central", "audit", "run", "--merchant", "M0001", "--from", day, "--to", day,
        *_central(site, tmp_path),
    )  # fmt: skip
    assert (code, union_out) == (1, out)


def _resigned(path: Path, doc: dict, keys_dir: Path) -> None:
    """``doc`` written to ``path`` with its manifest signed again by the union's audit
    key: what the union itself (or whoever holds that key) could hand an auditor."""
    audit_key = load_keys(keys_dir).audit
    assert audit_key is not None
    manifest = dict(doc["manifest"]["signed"])
    manifest["parts"] = {name: [digest(i) for i in items] for name, items in doc["parts"].items()}
    doc["manifest"] = sign(manifest, [audit_key])
    path.write_bytes(canonical_json(doc) + b"\n")


def test_entries_stripped_of_their_device_signatures_are_found(
    site: Site, clock, capsys, tmp_path
) -> None:
    """The device signature is what vouches for an entry against the union: a bundle
    whose entries carry none, though the terminal has a registered key, is not clean
    even with the manifest signed again by the union's audit key (it was: a missing
    signature was not looked at)."""
    _history(site, clock)
    bundle = _export(site, clock, capsys, tmp_path)
    doc = json.loads(bundle.read_bytes())
    for entry in doc["parts"]["entries"]:
        del entry["sig"]
    _resigned(bundle, doc, tmp_path / "central" / "keys")
    code, out, err = run(
        capsys, "audit", "verify", str(bundle), "--trust", str(_root_pub(tmp_path))
    )
    assert code == 1, (out, err)
    assert [line.split(" detail=")[0] for line in out.splitlines()] == [
        "terminal=T1 seq=1 finding=bad_signature",
        "terminal=T1 seq=2 finding=bad_signature",
    ]
    assert "no device signature" in out


def test_an_entry_dated_past_any_calendar_is_a_malformed_bundle(
    site: Site, clock, capsys, tmp_path
) -> None:
    """An entry dated 9999-12-31T20:00Z (the year 10000 in Shanghai) stopped the audit
    with a traceback; the bundle is malformed there, exit 2 naming the entry."""
    _history(site, clock)
    bundle = _export(site, clock, capsys, tmp_path)
    doc = json.loads(bundle.read_bytes())
    doc["parts"]["entries"][1]["at"] = "9999-12-31T20:00:00Z"
    _resigned(bundle, doc, tmp_path / "central" / "keys")
    code, out, err = run(
        capsys, "audit", "verify", str(bundle), "--trust", str(_root_pub(tmp_path))
    )
    assert (code, out) == (2, ""), err
    years = f"years {ENTRY_YEARS.start} to {ENTRY_YEARS.stop - 1}"
    assert "entries" in err and "T1" in err and years in err
    assert len(err.splitlines()) == 1


def test_a_bundle_no_key_could_make_is_refused_in_one_line(
    site: Site, clock, capsys, tmp_path
) -> None:
    """Edits that need no key: the format version true (equal to 1 in Python, and not
    signed) verified clean; an item nested just deep enough to parse but not to be
    written again stopped verify with a RecursionError."""
    _history(site, clock)
    data = _export(site, clock, capsys, tmp_path).read_bytes()
    anchor = (tmp_path / "central" / "keys" / "root.pub").read_bytes()
    verify_bundle(data, anchor)  # the export itself verifies
    assert data.endswith(b',"version":2}\n')
    with pytest.raises(BundleError, match="format version True"):  # (1, as Python reads it)
        verify_bundle(data[: -len(b"2}\n")] + b"true}\n", anchor)
    text = data.decode()
    at = text.index('"members":[') + len('"members":[')
    refused = set()
    for depth in range(600, 1100):  # where json.loads stops depends on the stack's depth
        nested = "[" * depth + "]" * depth + ("," if text[at] != "]" else "")
        try:
            verify_bundle((text[:at] + nested + text[at:]).encode(), anchor)
        except BundleError as exc:
            refused.add(str(exc).split(": ", 2)[-1][:40])
    assert refused  # each refused as a BundleError, none escaped as another exception


def test_entries_left_off_the_end_are_found(site: Site, clock, capsys, tmp_path) -> None:
    """The chain shows entries missing between two, not after the last: a bundle whose
    newest entries were left off (and its manifest signed again with the audit key)
    verified clean. The union's signed record says which entry it had received by
    when; those received before the period's end must be there."""
    _history(site, clock)
    bundle = _export(site, clock, capsys, tmp_path)
    doc = json.loads(bundle.read_bytes())
    assert [e["seq"] for e in doc["parts"]["entries"]] == [1, 2]
    del doc["parts"]["entries"][-1]
    _resigned(bundle, doc, tmp_path / "central" / "keys")
    code, out, err = run(
        capsys, "audit", "verify", str(bundle), "--trust", str(_root_pub(tmp_path))
    )
    assert code == 1, (out, err)
    assert out.startswith("terminal=T1 seq=1,2 finding=gap detail=entries 2 to 2, which the ")
    assert len(out.splitlines()) == 1


def test_a_bundle_exported_after_its_newest_root_expired_is_refused(
    site: Site, clock, capsys, tmp_path
) -> None:
    """A manifest dated after the newest root the bundle carries expired: the audit key
    it names may have been replaced (a later root leaves it out). It verified clean."""
    _history(site, clock)
    bundle = _export(site, clock, capsys, tmp_path)
    doc = json.loads(bundle.read_bytes())
    expires = doc["parts"]["roots"][-1]["signed"]["expires_at"]
    doc["manifest"]["signed"]["exported_at"] = "2099-01-01T00:00:00Z"
    _resigned(bundle, doc, tmp_path / "central" / "keys")
    code, out, err = run(
        capsys, "audit", "verify", str(bundle), "--trust", str(_root_pub(tmp_path))
    )
    assert (code, out) == (2, ""), err
    assert f"after the bundle's newest root (v1) expired at {expires}" in err


def _older_history(site: Site, clock) -> None:
    """A sale more than the audit's context (32 days) before today, then today's."""
    site.sync(clock)
    site.sell(MEMBER_PAN, 3000, clock)
    site.sell(MEMBER_PAN, 2000, clock)
    site.sync(clock)
    clock.advance(timedelta(days=40))
    site.union.publish_roster()
    _history(site, clock)


def _seqs(doc: dict) -> list[int]:
    return [e["seq"] for e in doc["parts"]["entries"]]


def test_each_chain_in_a_bundle_starts_at_its_anchor(site: Site, clock, capsys, tmp_path) -> None:
    """The chain shows entries missing between two, not before the first: a bundle whose
    first entries of the period were left off (and its manifest signed again with the
    audit key) verified clean. Each terminal's chain now starts at its seq 1 or at its
    anchor, the entry before the context (journaled before it, device-signed), and
    a first entry that is neither is a gap."""
    _older_history(site, clock)
    bundle = _export(site, clock, capsys, tmp_path)
    doc = json.loads(bundle.read_bytes())
    assert doc["version"] == 2
    day = clock().date().isoformat()
    before = [e for e in doc["parts"]["entries"] if e["at"] < day]
    assert len(before) == 1  # the anchor: the newest entry journaled before the context
    anchor = before[0]["seq"]
    assert anchor > 1 and _seqs(doc)[0] == anchor
    trust = ["--trust", str(_root_pub(tmp_path))]
    assert run(capsys, "audit", "verify", str(bundle), *trust)[0] == 0

    left_off = json.loads(bundle.read_bytes())
    del left_off["parts"]["entries"][0]  # the anchor and everything before the first kept
    _resigned(bundle, left_off, tmp_path / "central" / "keys")
    code, out, err = run(capsys, "audit", "verify", str(bundle), *trust)
    assert code == 1, (out, err)
    first = anchor + 1
    assert out.startswith(
        f"terminal=T1 seq={first} finding=gap detail=the entries before {first} are missing"
    ), out
    assert len(out.splitlines()) == 1


def test_a_version_1_bundle_is_refused(site: Site, clock, capsys, tmp_path) -> None:
    """A bundle of the format before chains carried anchors (version 1) cannot show that
    no entry was left off a chain's start: relabelled as one, a bundle missing the
    period's first entries verified clean. It is refused, saying to export it again."""
    _history(site, clock)
    bundle = _export(site, clock, capsys, tmp_path)
    doc = json.loads(bundle.read_bytes())
    for version in (1, 3):
        doc["version"] = doc["manifest"]["signed"]["version"] = version
        _resigned(bundle, doc, tmp_path / "central" / "keys")
        code, out, err = run(
            capsys, "audit", "verify", str(bundle), "--trust", str(_root_pub(tmp_path))
        )
        assert (code, out) == (2, ""), out
        line = one_line_error(err, f"format version {version}: this unioncard reads version 2")
        assert ("export it again" in line) == (version == 1), line


def test_entries_deleted_from_the_head_of_the_store_are_found(site: Site, clock) -> None:
    """The union's own audit reads each chain from its anchor too: the period's first
    entries deleted from the store (with the anchor, so no gap shows between two) are a
    gap."""
    import sqlalchemy as sa

    from central.store import sales

    _older_history(site, clock)
    day = clock().date()
    assert site.union.audit("M0001", day, day) == []
    held = site.union.store.sales_for("T1")
    anchor = max(s.seq for s in held if s.at < day.isoformat())
    with site.union.store.engine.begin() as conn:
        conn.execute(sa.delete(sales).where(sales.c.terminal_id == "T1", sales.c.seq <= anchor + 1))
    found = site.union.audit("M0001", day, day)
    assert [(f.kind, f.seqs) for f in found] == [("gap", (anchor + 2,))], found


def test_a_terminals_whole_chain_left_out_is_found(site: Site, clock, capsys, tmp_path) -> None:
    """Every check of entries looks at the entries there: a bundle with all of a
    terminal's entries left out (and the manifest signed again) verified clean. The
    union's signed record of each terminal says which it holds in the audit's time."""
    _history(site, clock)
    bundle = _export(site, clock, capsys, tmp_path)
    doc = json.loads(bundle.read_bytes())
    (record,) = doc["parts"]["enrolments"]
    held = record["signed"]["held_in_period"]
    assert held == max(e["seq"] for e in doc["parts"]["entries"]) > 0
    doc["parts"]["entries"] = []
    _resigned(bundle, doc, tmp_path / "central" / "keys")
    code, out, err = run(
        capsys, "audit", "verify", str(bundle), "--trust", str(_root_pub(tmp_path))
    )
    assert code == 1, (out, err)
    assert out.startswith(f"terminal=T1 seq={held} finding=missing_chain detail=the union holds")


def test_an_upload_during_the_export_is_no_missing_chain(tmp_path, monkeypatch) -> None:
    """A terminal's first upload, stored while the bundle was being exported (after its
    entries were read), made its record say entries it did not hold: a false HIGH
    missing_chain against an honest union. The record counts what had arrived by the
    export's moment."""
    from dataclasses import replace as changed
    from datetime import UTC, date, datetime

    from central.auditexport import export_bundle
    from pact.chain import GENESIS, entry_hash
    from pact.sale import Sale
    from tests.helpers import enrol_signing_terminal, signed

    now = [datetime(2026, 11, 28, 12, 0, tzinfo=UTC)]

    def sale(terminal_id: str, seq: int, at: str, prev: str) -> Sale:
        entry = Sale(
            seq=seq, sale_id=f"{terminal_id}-{seq}", at=at, terminal_id=terminal_id,
            merchant_id="M0001", token=None, pan_last4="0000", member=False, gross=1000,
            discount=0, net=1000, rules=(), roster_version=1, policy_version=1, basket=None,
            atc=None, kind=None, ref_seq=None, note=None, prev_hash=prev, hash="",
        )  # fmt: skip
        return signed(changed(entry, hash=entry_hash(prev, entry)))

    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=now[0])
    union = Union.open(paths, None, lambda: now[0])
    union.add_merchant("M0001", "Shop", 500)
    union.ingest(
        enrol_signing_terminal(union, "T1"), [sale("T1", 1, "2026-11-28T03:00:00Z", GENESIS)]
    )
    enrol_signing_terminal(union, "T2")
    read = union.store.merchant_chains_between

    def then_an_upload(*args: str) -> list[Sale]:
        got = read(*args)
        now[0] = now[0].replace(second=2)  # T2's sync lands just after the entries were read
        union.ingest(union.store.terminal("T2"), [sale("T2", 1, "2026-11-28T11:59:00Z", GENESIS)])
        return got

    monkeypatch.setattr(union.store, "merchant_chains_between", then_an_upload)
    data = export_bundle(union, "M0001", date(2026, 11, 28), date(2026, 11, 28))
    bundle = verify_bundle(data, (paths.keys / "root.pub").read_bytes())
    assert [(f.terminal_id, f.kind) for f in audit_bundle(bundle)] == []
    union.close()


@pytest.mark.parametrize(
    "change",
    [
        {"start": "later"},  # the entries before it were context: their findings hidden
        {"to": "2030-12-31"},  # the summary named days the instants did not cover
        {"context_start": "start"},  # no quota context: an over-discount looked owed
        {"timezone": "Mars/Olympus"},
        {"timezone": 5},
    ],
)
def test_a_period_whose_instants_are_not_its_days_is_refused(
    site: Site, clock, capsys, tmp_path, change: dict
) -> None:
    """A bundle re-signed with the audit key whose period's start was moved past a
    forged sale verified clean: the instants judged are now those of its days."""
    _history(site, clock)
    bundle = _export(site, clock, capsys, tmp_path)
    doc = json.loads(bundle.read_bytes())
    period = doc["manifest"]["signed"]["period"]
    for name, value in change.items():
        if value == "later":
            value = iso(parse_iso(period["end"]) - timedelta(seconds=1))
        elif value == "start":
            value = period["start"]
        period[name] = value
    _resigned(bundle, doc, tmp_path / "central" / "keys")
    code, out, err = run(
        capsys, "audit", "verify", str(bundle), "--trust", str(_root_pub(tmp_path))
    )
    assert (code, out) == (2, ""), err
    assert "the manifest" in err and "period" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("where", "value"),
    [(("discounts",), []), (("discounts",), {"member": None}), (("tier",), "1"),
     (("lines", 0, "by_rule"), "x"), (("lines", 0, "qty"), "2"), (("lines", 0), {})],
)  # fmt: skip
def test_an_entry_whose_basket_is_not_of_the_wires_shape_is_malformed(
    site: Site, clock, capsys, tmp_path, where: tuple, value: object
) -> None:
    """An entry whose basket's discounts were a list stopped verify with a traceback
    (exit 1): the bundle is malformed there, exit 2 naming the entry."""
    _history(site, clock)
    bundle = _export(site, clock, capsys, tmp_path)
    doc = json.loads(bundle.read_bytes())
    [sale] = [e for e in doc["parts"]["entries"] if e.get("basket") and e["seq"] == 2]
    held = sale["basket"]
    for key in where[:-1]:
        held = held[key]
    held[where[-1]] = value
    _resigned(bundle, doc, tmp_path / "central" / "keys")
    code, out, err = run(
        capsys, "audit", "verify", str(bundle), "--trust", str(_root_pub(tmp_path))
    )
    assert (code, out) == (2, ""), err
    assert "entries[" in err and "seq=2" in err and "basket" in err
    assert len(err.splitlines()) == 1


def test_a_device_key_the_shop_gave_catches_a_union_that_signed_entries_anew(
    site: Site, clock, capsys, tmp_path
) -> None:
    """The bundle's device keys are the union's word: a union that rewrote a sale,
    signed every entry with a key of its own and named that key in the enrolment record
    handed over a bundle that verified as the genuine one did. The key the shop gives
    the auditor (its device.pub, or its journal export) catches it."""
    from pact.chain import entry_hash as rehash
    from pact.device import sign_entry
    from pact.sale import Sale

    _history(site, clock)
    bundle = _export(site, clock, capsys, tmp_path)
    shop = f"T1={site.state.dir / 'device.pub'}"
    trust = ["--trust", str(_root_pub(tmp_path))]
    code, out, err = run(capsys, "audit", "verify", str(bundle), *trust, "--device-key", shop)
    assert (code, out.startswith("clean: ")) == (0, True), err
    # the union's forgery: sale 2's time moved, every entry signed with its own key
    doc = json.loads(bundle.read_bytes())
    union_key = Ed25519PrivateKey.generate()
    signer = type("Signer", (), {"sign": lambda self, data: union_key.sign(data),
                                 "public_key": lambda self: union_key.public_key()})()  # fmt: skip
    prev = "0" * 64
    for i, item in enumerate(doc["parts"]["entries"]):
        entry = Sale.from_json(item)
        if entry.seq == 2:  # a minute earlier: the union says it was sold then
            moved = parse_iso(entry.at) - timedelta(minutes=1)
            entry = dataclasses.replace(entry, at=iso(moved))
        entry = dataclasses.replace(entry, prev_hash=prev)
        entry = sign_entry(signer, dataclasses.replace(entry, hash=rehash(prev, entry)))
        doc["parts"]["entries"][i] = entry.as_json()
        prev = entry.hash
    audit_key = load_keys(tmp_path / "central" / "keys").audit
    [record] = doc["parts"]["enrolments"]
    named = {**record["signed"], "device_key": public_bytes(union_key.public_key()).hex()}
    doc["parts"]["enrolments"] = [sign(named, [audit_key])]
    _resigned(bundle, doc, tmp_path / "central" / "keys")
    code, out, err = run(capsys, "audit", "verify", str(bundle), *trust)
    assert code == 0, (out, err)  # the union's word alone: what no auditor should rest on
    code, out, err = run(capsys, "audit", "verify", str(bundle), *trust, "--device-key", shop)
    assert (code, out) == (2, "")
    assert "T1's device key in the bundle" in err and "not the one the shop gave" in err
    assert len(err.splitlines()) == 1
    # the same key from the shop's journal export (terminal decommission writes it)
    export = tmp_path / "journal-export.json"
    key = (site.state.dir / "device.pub").read_text().strip()
    export.write_text(
        json.dumps({"format": JOURNAL_EXPORT, "terminal_id": "T1", "device_key": key})
    )
    code, out, err = run(
        capsys, "audit", "verify", str(bundle), *trust, "--device-key", str(export)
    )
    assert (code, out) == (2, "") and "not the one the shop gave" in err


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [("seq", 2**70, "a seq must be at most"), ("gross", 10**9, "gross is above"),
     ("pan_last4", "123456", "pan_last4"), ("sale_id", "x" * 40, "sale_id")],
)  # fmt: skip
def test_an_entry_beyond_what_the_union_stores_is_malformed(
    site: Site, clock, capsys, tmp_path, field: str, value: object, said: str
) -> None:
    """Entries the upload refuses (a seq of 2**70, a gross above a sale's limit, ...)
    were judged as findings in a bundle the union re-signed: malformed, exit 2."""
    _history(site, clock)
    bundle = _export(site, clock, capsys, tmp_path)
    doc = json.loads(bundle.read_bytes())
    doc["parts"]["entries"][-1][field] = value
    _resigned(bundle, doc, tmp_path / "central" / "keys")
    code, out, err = run(
        capsys, "audit", "verify", str(bundle), "--trust", str(_root_pub(tmp_path))
    )
    assert (code, out) == (2, ""), err
    assert "entries[" in err and said in err and len(err.splitlines()) == 1
