"""The merchant lifecycle (issue 15 item 4): suspend, reinstate and exit with a reason
and an effective time signed ahead; on exit the terminal stops discounting, uploads its
last sales and is decommissioned; the union revokes the terminals, writes the final
statement and closes the merchant."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from central.closing import FINAL_UPLOAD_DEADLINE, close_exits
from central.errors import ConflictError, InputError
from central.keys import root_versions
from central.service import Union
from pact.device import check_signature, device_key
from pact.policy import parse_policy_document
from pact.sale import Sale
from sync.errors import CentralForgotError
from terminal.decommission import data_folder_lock, journal_held, wipe
from terminal.service import TerminalService
from tests.conftest import Clock, Site, wall_clock
from tests.helpers import MEMBER_PAN, enrol_signing_terminal, signed
from tests.test_central import make_sales
from tests.test_commands import run


def _policy(union: Union, merchant_id: str = "M0001"):
    latest = union.store.latest_signed(f"policy:{merchant_id}")
    assert latest is not None
    return latest[0], parse_policy_document(json.loads(latest[1])["signed"])


# ------------------------------------------------------------------ the union's side
@pytest.fixture
def union(union: Union, tmp_path: Path) -> Union:
    """The union with its root metadata published (the audit bundle walks it)."""
    union.publish_roots(root_versions(tmp_path / "keys"))
    return union


def test_an_exit_decided_ahead_is_signed_into_the_policy_with_its_reason(
    union: Union, clock: Clock, tmp_path: Path
) -> None:
    union.add_merchant("M0001", "Shop", 500)
    union.add_user("ada", "admin", None, "a long password")  # who decides, by name
    at = clock() + timedelta(days=2)
    version = union.set_merchant_status("M0001", "exited", "sold expired food", at, "ada")
    signed_version, policy = _policy(union)
    assert version == signed_version == 2
    assert policy.status == "active" and policy.status_at(clock()) == "active"
    assert [(c.status, c.at) for c in policy.status_changes] == [("exited", at)]
    assert policy.status_at(at) == "exited"
    assert union.store.merchant("M0001")["status"] == "active"  # not yet in force
    last = union.store.status_history("M0001")[-1]
    assert (last["status"], last["reason"], last["decided_by"]) == (
        "exited",
        "sold expired food",
        "ada",
    )
    assert last["effective_at"] == "2026-11-30T09:30:00Z" and last["at"] == "2026-11-28T09:30:00Z"
    # an exit is final, decided or in force
    with pytest.raises(ConflictError, match="an exit is final"):
        union.set_merchant_status("M0001", "active", "changed our mind")
    # the daily job keeps the status in force current
    clock.advance(timedelta(days=2))
    close_exits(union, tmp_path / "final")
    assert union.store.merchant("M0001")["status"] == "exited"


def test_a_change_cannot_be_backdated_nor_repeat_the_status(union: Union, clock: Clock) -> None:
    union.add_merchant("M0001", "Shop", 500)
    with pytest.raises(InputError, match="has passed: a change takes effect now or later"):
        union.set_merchant_status("M0001", "suspended", "late", clock() - timedelta(hours=1))
    with pytest.raises(InputError, match="is already active"):
        union.set_merchant_status("M0001", "active", "again")
    union.set_merchant_status("M0001", "suspended", "inspection")
    assert union.store.merchant("M0001")["status"] == "suspended"
    assert union.set_merchant_status("M0001", "active", "inspection passed") == 3
    assert _policy(union)[1].status == "active"
    assert [h["status"] for h in union.store.status_history("M0001")] == [
        "active",
        "suspended",
        "active",
    ]


def test_set_status_on_the_command_line_needs_a_reason(tmp_path: Path, capsys) -> None:
    data = ("--data", str(tmp_path / "c"))
    assert run(capsys, "central", "init", *data)[0] == 0
    add = ("add-merchant", "M0001", "--name", "Shop", "--discount", "5")
    assert run(capsys, "central", *add, *data)[0] == 0
    assert run(capsys, "central", "add-user", "ada", "--role", "admin", *data)[0] == 0
    code, _, err = run(capsys, "central", "set-status", "M0001", "suspended", *data)
    assert code == 2 and "--reason" in err
    code, out, err = run(
        capsys, "central", "set-status", "M0001", "exited", "--reason", "fraud",
        "--at", "2099-01-01T08:00:00", "--by", "ada", *data,
    )  # fmt: skip
    assert code == 0, err
    # a time without a zone is the union's (Asia/Shanghai): 08:00 there is 00:00 UTC
    assert out.strip() == "merchant M0001 is exited from 2099-01-01T00:00:00Z; policy v2 signed"
    by = ("--by", "ada")
    code, _, err = run(
        capsys, "central", "set-status", "M0001", "active", "--reason", "x", "--at", "soon",
        *by, *data,
    )  # fmt: skip
    assert code == 2 and "not an ISO 8601 time" in err
    # a time no calendar of the union's has (it was an OverflowError's traceback)
    for at in ("0001-01-01T00:00", "9999-12-31T23:00:00-05:00"):
        code, _, err = run(
            capsys, "central", "set-status", "M0001", "active", "--reason", "x", "--at", at,
            *by, *data,
        )  # fmt: skip
        assert code == 2 and "not a time of the years 2000 to 9998" in err, err
        assert "Traceback" not in err
    # a lifetime no key outlives (a Python int too large for a C int, before)
    code, _, err = run(capsys, "central", "publish-roster", "--expires-in", "99999999999d", *data)
    assert code == 2 and "at most 3650d" in err and "Traceback" not in err


def test_an_exited_merchant_is_closed_at_the_deadline_its_terminals_revoked(
    union: Union, clock: Clock, tmp_path: Path
) -> None:
    union.add_merchant("M0001", "Shop", 500)
    union.add_merchant("M0002", "Stays", 500)
    terminal = enrol_signing_terminal(union, "T1", "M0001")
    union.ingest(terminal, [signed(s) for s in make_sales("T1", 3)])
    union.set_merchant_status("M0001", "exited", "left the district")
    assert close_exits(union, tmp_path / "final").closed == []  # it may still upload
    clock.advance(FINAL_UPLOAD_DEADLINE)
    [closed] = close_exits(union, tmp_path / "final").closed
    assert (closed.merchant_id, closed.sales) == ("M0001", 3)
    row = union.store.terminal("T1")
    assert row is not None and row["revoked_last_seq"] == 3
    assert "final-upload deadline" in row["revoked_reason"]
    merchant = union.store.merchant("M0001")
    assert merchant["closed_at"] == "2026-12-12T09:30:00Z"
    assert merchant["retain_until"] > "2056-12-01"
    final = json.loads((closed.folder / "final.json").read_text())
    assert set(final["files"]) == {"statement.csv", "statement.html", "bundle.json"}
    assert close_exits(union, tmp_path / "final").closed == []  # closed once
    assert union.store.merchant("M0002")["closed_at"] is None


def test_the_daily_job_renews_policies_past_half_their_life(union: Union, clock: Clock) -> None:
    union.add_merchant("M0001", "Shop", 500)
    assert union.refresh_policies() == []
    clock.advance(timedelta(days=16))
    assert union.refresh_policies() == [("M0001", 2)]
    assert _policy(union)[1].expires_at == clock() + timedelta(days=30)
    assert union.refresh_policies() == []


# ------------------------------------------------------------------ the terminal's side
def test_a_terminal_applies_an_exit_signed_ahead_without_syncing_again(site: Site, clock) -> None:
    site.sync(clock)
    site.union.set_merchant_status("M0001", "exited", "contract ends", clock() + timedelta(hours=1))
    assert site.sync(clock).policy_version == 2
    before = site.sell(MEMBER_PAN, 10000, clock)
    assert (before["verdict"], before["discount_fen"]) == ("member", 500)
    clock.advance(timedelta(hours=2))  # no sync since
    after = site.sell(MEMBER_PAN, 10000, clock)
    assert (after["verdict"], after["discount_fen"]) == ("merchant_exited", 0)


class TestExitEndToEnd:
    """A merchant is exited while its terminal is offline; the terminal later syncs,
    gives no more discounts, uploads its last sales and decommissions; the final
    statement has every sale."""

    @pytest.fixture
    def clock(self) -> Clock:
        return wall_clock()  # the command line reads the wall clock

    def test_exit_sync_decommission_close(self, site: Site, clock, capsys, tmp_path) -> None:
        union, folder = site.union, site.state.dir
        site.sync(clock)
        assert site.sell(MEMBER_PAN, 10000, clock)["discount_fen"] == 500
        # the union exits the merchant; the terminal, offline, goes on as it knows
        union.set_merchant_status("M0001", "exited", "broke the programme's rules")
        clock.advance(timedelta(minutes=1))
        offline = [site.sell(MEMBER_PAN, 2000, clock) for _ in range(2)]
        assert [s["discount_fen"] for s in offline] == [100, 100]
        report = site.sync(clock)  # its last sales go up, the exit comes down
        assert report.policy_version == 2 and site.journal.counts()[1] == 0
        last = site.sell(MEMBER_PAN, 5000, clock)
        assert (last["verdict"], last["discount_fen"]) == ("merchant_exited", 0)
        service = TerminalService(folder, lambda: None, clock)
        try:
            status = service.status()
        finally:
            service.close()
        assert status["merchant_status"] == "exited"
        assert any("left the union's programme" in w for w in status["warnings"])
        # decommissioning refuses while anything is unacknowledged, or the daemon runs
        site.journal.close()
        out_file = tmp_path / "export" / "journal.json"
        args = ("terminal", "decommission", "--data", str(folder), "--out", str(out_file))
        code, _, err = run(capsys, *args)
        assert code == 1 and "1 journal entries (seq 4 to 4) are not yet acknowledged" in err
        assert run(capsys, "sync", "--data", str(folder))[0] == 0
        with data_folder_lock(folder):
            code, _, err = run(capsys, *args)
        assert code == 1 and "the terminal daemon is running" in err
        inside = ("terminal", "decommission", "--data", str(folder), "--out", str(folder / "x"))
        assert "would be wiped" in run(capsys, *inside)[2]
        key = (folder / "device.pub").read_text().strip()
        code, out, err = run(capsys, *args)
        assert code == 0, err
        assert "terminal T1 decommissioned: the union revoked it; 4 journal entries" in out
        # the shop keeps its journal; the keys and data are gone
        assert sorted(p.name for p in folder.iterdir()) == [".serve.lock"]
        export = json.loads(out_file.read_text())
        assert export["format"] == "unioncard.journal-export.v1" and export["last_seq"] == 4
        entries = [Sale.from_json(e) for e in export["entries"]]
        assert [e.seq for e in entries] == [1, 2, 3, 4]
        for entry in entries:
            check_signature(device_key(key), entry)
        assert MEMBER_PAN not in out_file.read_text()
        # the union revoked the terminal: its calls are refused
        row = union.store.terminal("T1")
        assert row is not None and row["decommissioned_at"] is not None
        assert row["revoked_last_seq"] == 4
        with pytest.raises(CentralForgotError):
            site.client.fetch_usage()
        # the merchant closes at once (no live terminal): the final statement has every sale
        [closed] = close_exits(union, tmp_path / "final").closed
        sales = [e for e in entries if e.kind is None]
        assert closed.sales == len(sales) == 4
        with (closed.folder / "statement.csv").open(encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
        [total] = [r for r in rows if r["section"] == "total"]
        assert int(total["sales"]) == 4
        held = union.store.sales_for("T1")
        assert held == entries
        # the frozen audit bundle verifies offline with the root public key alone
        final = json.loads((closed.folder / "final.json").read_text())
        assert set(final["files"]) == {"statement.csv", "statement.html", "bundle.json"}
        auditor = tmp_path / "auditor"
        auditor.mkdir()
        shutil.copy(tmp_path / "central" / "keys" / "root.pub", auditor / "root.pub")
        bundle = closed.folder / "bundle.json"
        code, out, err = run(
            capsys, "audit", "verify", str(bundle), "--trust", str(auditor / "root.pub")
        )
        # ... and shows the discounts the terminal gave, offline, after the exit
        assert code == 1 and "2 findings;" in err and "every signature and digest verified" in err
        assert [line.split(" detail=")[0] for line in out.splitlines()] == [
            "terminal=T1 seq=2 finding=merchant_not_active",
            "terminal=T1 seq=3 finding=merchant_not_active",
        ]
        assert MEMBER_PAN not in bundle.read_text()


def test_the_serving_daemon_holds_the_data_folder(tmp_path: Path) -> None:
    with data_folder_lock(tmp_path):
        with pytest.raises(Exception, match="the terminal daemon is running"):
            with data_folder_lock(tmp_path):
                pass
    with data_folder_lock(tmp_path):  # released
        pass


# ------------------------------------------------------------------ the partners list
@pytest.fixture
def central_app(tmp_path: Path, clock: Clock):
    from central import create_app
    from central.keys import create_keys
    from central.service import CentralPaths

    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=clock())
    app = create_app({"DATA_DIR": str(paths.data_dir), "CLOCK": clock})
    yield app, app.extensions["unioncard"]
    app.extensions["unioncard"].close()


def test_the_partners_list_shows_where_the_card_gives_discounts_today(
    central_app, clock: Clock
) -> None:
    app, union = central_app
    union.add_merchant("M0001", "Huangpu Pharmacy", 800)
    where = {"category": "pharmacy", "district": "黄浦区", "address": "1 Nanjing Rd"}
    union.store.set_registry("M0001", **where)
    union.add_merchant("M0002", "Star Cinema", 500)
    union.add_merchant("M0003", "Billiards", 500)
    union.set_merchant_status("M0002", "suspended", "complaints")
    union.set_merchant_status("M0003", "exited", "contract ends", clock() + timedelta(hours=1))
    client = app.test_client()
    listed = client.get("/api/v1/partners").get_json()
    assert [p["merchant_id"] for p in listed["partners"]] == ["M0001", "M0003"]
    [offer] = listed["partners"][0]["offers"]
    assert offer["en"] == "8% off, except gift_card, lottery, prescription, tobacco"
    assert offer["zh"] == "优惠 8%，不含 gift_card, lottery, prescription, tobacco"
    page = client.get("/partners").get_data(as_text=True)
    assert '<html lang="zh-CN">' in page and "Huangpu Pharmacy" in page and "黄浦区" in page
    assert "Star Cinema" not in page and offer["zh"] in page
    english = client.get("/partners?lang=en").get_data(as_text=True)
    assert offer["en"] in english
    clock.advance(timedelta(hours=2))  # the exit takes effect: it disappears
    listed = client.get("/api/v1/partners").get_json()
    assert [p["merchant_id"] for p in listed["partners"]] == ["M0001"]


def test_an_exit_cancels_what_was_scheduled_after_it(union: Union, clock: Clock, tmp_path) -> None:
    """Suspended for an inspection, reinstatement scheduled; the inspection finds fraud
    and the merchant is exited before the reinstatement: it never comes."""
    union.add_merchant("M0001", "Shop", 500)
    day = timedelta(days=1)
    union.set_merchant_status("M0001", "suspended", "inspection", clock() + day)
    union.set_merchant_status("M0001", "active", "inspection passed", clock() + 3 * day)
    union.set_merchant_status("M0001", "exited", "fraud found", clock() + 2 * day)
    _, policy = _policy(union)
    assert [c.status for c in policy.status_changes] == ["suspended", "exited"]
    assert policy.status_at(clock() + 4 * day) == "exited"
    clock.advance(2 * day + FINAL_UPLOAD_DEADLINE)
    [closed] = close_exits(union, tmp_path / "final").closed
    assert closed.merchant_id == "M0001"
    assert union.store.merchant("M0001")["status"] == "exited"


def test_a_policy_listing_a_change_after_an_exit_stays_exited(clock: Clock) -> None:
    from pact.policy import StatusChange

    policy = parse_policy_document(
        {
            "type": "policy", "merchant_id": "M1", "merchant_name": "Shop",
            "status": "active", "version": 1, "issued_at": "2026-11-28T00:00:00Z",
            "expires_at": "2026-12-28T00:00:00Z", "rules": [],
        }
    )  # fmt: skip
    listed = (StatusChange("exited", clock()), StatusChange("active", clock() + timedelta(1)))
    policy = dataclasses.replace(policy, status_changes=listed)
    assert policy.status_at(clock() + timedelta(days=2)) == "exited"


def test_the_wipe_never_writes_through_a_symbolic_link(tmp_path: Path) -> None:
    folder, outside = tmp_path / "data", tmp_path / "victim.txt"
    folder.mkdir()
    outside.write_text("keep me")
    (folder / "enrolment.json").symlink_to(outside)
    (folder / "device.pem").write_bytes(b"secret")
    (folder / "gens").mkdir()
    (folder / "gens" / "x").write_text("x")
    wipe(folder)
    assert outside.read_text() == "keep me" and list(folder.iterdir()) == []


class TestDecommissionRefusals:
    @pytest.fixture
    def clock(self) -> Clock:
        return wall_clock()

    def test_an_entry_journaled_after_the_export_is_never_wiped(self, site: Site, clock) -> None:
        site.sync(clock)
        site.sell(MEMBER_PAN, 1000, clock)
        site.sync(clock)
        last = site.journal.counts()[0]
        site.sell(MEMBER_PAN, 2000, clock)  # e.g. a checkout from the command line
        with pytest.raises(Exception, match="the journal changed while it was exported"):
            with journal_held(site.state.journal_path, last):
                pass

    def test_a_union_that_does_not_know_the_terminal_stops_it(
        self, site: Site, clock, capsys, tmp_path
    ) -> None:
        site.sync(clock)
        site.sell(MEMBER_PAN, 1000, clock)
        site.sync(clock)
        site.journal.close()
        folder = site.state.dir
        enrolment = json.loads((folder / "enrolment.json").read_text())
        enrolment["api_secret"] = "not-the-secret"
        (folder / "enrolment.json").write_text(json.dumps(enrolment))
        out = tmp_path / "export.json"
        code, _, err = run(
            capsys, "terminal", "decommission", "--data", str(folder), "--out", str(out)
        )
        assert code == 7 and "nothing was wiped" in err
        assert (folder / "journal.db").exists() and (folder / "device.pem").exists()


def test_a_merchant_that_cannot_be_closed_does_not_stop_the_others(
    union: Union, clock: Clock, tmp_path: Path
) -> None:
    for merchant_id in ("M0001", "M0002"):
        union.add_merchant(merchant_id, "Shop", 500)
        union.set_merchant_status(merchant_id, "exited", "contract ends")
    final = tmp_path / "final"
    final.mkdir()
    (final / "M0001").write_text("a file where its folder should go")
    done = close_exits(union, final)
    assert [c.merchant_id for c in done.closed] == ["M0002"]
    [problem] = done.problems
    assert problem.startswith("merchant M0001 was not closed: ")
    assert union.store.merchant("M0001")["closed_at"] is None  # tried again tomorrow
    (final / "M0001").unlink()
    assert [c.merchant_id for c in close_exits(union, final).closed] == ["M0001"]
