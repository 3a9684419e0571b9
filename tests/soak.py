"""The soak (issue 16, item 8): an hour of mixed load on loopback, with nothing lost.

    python -m tests.soak --minutes 60 [--terminals 3] [--seed S] [--db sqlite|postgres]

The pieces are the real ones, as a shop and the union run them:

- the central service, ``unioncard central serve`` (gunicorn) on SQLite (default) or
  PostgreSQL (the test server of tests.conftest, in a schema of its own);
- ``--terminals`` shops, each ``unioncard terminal serve`` (the daemon) with a pcscd of
  its own (tests.private_pcscd) and emulated cards in its vpcd reader, enrolled to a
  fault proxy (tests.faultproxy) of its own in front of the central service.

Each shop has three kinds of load at once:

- the till (a thread): checkouts through the till API (baskets, by a member's card or
  another's; most confirmed at once, some priced first and then confirmed or
  cancelled), voids and refunds of its confirmed sales (with the supervisor token),
  and, in some of them, a SIGKILL of the daemon a few ms after the request went out
  (then the daemon is started again);
- the sync (a thread): ``unioncard sync`` processes through the proxy: clean, with up
  to 3 random network faults (fewer than the sync's tries: it must succeed), or
  SIGKILLed at a random moment (on a timer, or when the proxy sees a request arrive,
  go upstream, come back answered or get relayed);
- the union (one thread for all): new roster versions (a member joins) and new policy
  versions (a draft approved by a second admin: the discount changes), which the
  terminals pull at their next sync.

At the end every daemon is stopped, each terminal syncs once more with no faults, and
the central store is compared with what the till API said. The last line on stdout is
the counts, ``key=value`` each::

    soak: confirmed=N received=N duplicates=0 gaps=0 unexplained=0 ... errors=kind:n,...

``confirmed``: entries (sales, voids, refunds) the till API confirmed with a seq;
``received``: those the central service holds exactly once at that seq, as asked;
``duplicates``: (terminal, seq), sale ids or requests held more than once; ``gaps``:
seqs missing at the union or on a terminal; ``errors``: what went wrong by kind. An
error is *explained* when the soak caused it (a request cut off by its own kill, a
sync it killed); any other is unexplained. Exit 0 only when confirmed = received,
no duplicates, no gaps and no unexplained error. A failed run keeps its folder
(named on stderr) with every log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from central.keys import create_keys
from central.service import CentralPaths, Union
from central.store import Store
from pact.sale import Sale
from reader.emulation.vpcd import CardEmulator
from terminal.access import new_api_token, new_supervisor_token
from terminal.devicekey import load_public_key
from terminal.journal import Journal
from terminal.state import TerminalState
from tests import faultproxy as fp
from tests.helpers import MEMBER_PAN, OTHER_PAN, with_luhn
from tests.private_pcscd import PrivatePcscd
from tests.test_reader_recovery import UNIONCARD, free_port
from tests.test_sync_faults import Central, tracebacks

MERCHANT = "M0001"
SYNC_TIMEOUT = 120  # s: a sync's five tries with their waits take under 20
KILL_SHARE = 0.04  # of the till's requests, one has a SIGKILL of the daemon inside it
KILL_WINDOW = 0.012  # s after the request is sent, at least (test_kill's window)
TWO_STEP_SHARE = 0.15  # of the checkouts, priced first, then confirmed (or cancelled)
SYNC_PAUSE = (2.0, 8.0)  # s between a terminal's syncs
UNION_PAUSE = (8.0, 25.0)  # s between the union's updates
KILL_MOMENTS = ("request", "sent", "answered", "relayed")  # the proxy's events


def now() -> datetime:
    return datetime.now(UTC)


def say(line: str) -> None:
    print(f"soak: {line}", file=sys.stderr, flush=True)


class SoakError(Exception):
    """The soak could not run (a component would not start): not a finding."""


@dataclass
class Tally:
    """Counts and errors of the whole run (threads add to it under its lock)."""

    counts: Counter[str] = field(default_factory=Counter)
    explained: Counter[str] = field(default_factory=Counter)
    unexplained: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)  # what each unexplained error was
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def explain(self, kind: str) -> None:
        with self.lock:
            self.explained[kind] += 1

    def error(self, kind: str, detail: str) -> None:
        with self.lock:
            self.unexplained[kind] += 1
            if len(self.notes) < 200:
                self.notes.append(f"{kind}: {detail}")
        say(f"UNEXPLAINED {kind}: {detail[:500]}")


@dataclass
class Asked:
    """One request of the till that journals an entry: what it should journal."""

    kind: str | None  # None a sale, "void", "refund"
    sku: str | None = None  # a sale: its first line's SKU (unique in the run)
    ref_seq: int | None = None  # a void or refund: the sale it reverses
    seq: int | None = None  # the seq the API answered (None: cut off, or refused)


@dataclass
class Sold:
    """A confirmed sale of the till, which a void or refund may reverse."""

    seq: int
    qty: int  # units of line 0
    refunded: int = 0
    voided: bool = False
    tainted: bool = False  # a reversal of it was cut off: it is not touched again


class Shop:
    """One terminal: its folder, pcscd, cards, fault proxy and daemon process."""

    def __init__(self, name: str, folder: Path, central_port: int) -> None:
        self.name = name
        self.folder = folder
        self.dir = folder / "terminal"
        self.config = folder / "terminal.toml"
        folder.mkdir(parents=True, exist_ok=True)
        # the soak drives the syncs: the daemon's own are off
        self.config.write_text("sync_every_minutes = 0\nsync_after_sales = 0\n")
        self.proxy = fp.FaultProxy(central_port)
        self.pcscd = PrivatePcscd(Path(tempfile.mkdtemp(prefix="uc-soak-")))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "daemon.log"
        self.child: subprocess.Popen[bytes] | None = None
        self.http = requests.Session()
        self.asked: list[Asked] = []
        self.sold: list[Sold] = []
        self.lock = threading.Lock()  # the daemon's process: the till and the end
        self.starts = 0
        self.latency: dict[str, float] = {}  # s a till request takes, by its endpoint

    def enrol(self, bundle: bytes) -> None:
        state = TerminalState(self.dir)
        state.enrol(bundle)
        self.http.headers["Authorization"] = f"Bearer {new_api_token(self.dir)}"
        self.supervisor = {"Authorization": f"Bearer {new_supervisor_token(self.dir)}"}

    def start_pcscd(self) -> None:
        reason = PrivatePcscd.unavailable_reason()
        if reason is not None:
            raise SoakError(f"no pcscd of the soak's own: {reason}")
        self.pcscd.start()
        self.member = CardEmulator(MEMBER_PAN, port=self.pcscd.port)
        self.other = CardEmulator(OTHER_PAN, port=self.pcscd.port)

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.child = subprocess.Popen(
                [UNIONCARD, "terminal", "serve", "--config", str(self.config)]
                + ["--data", str(self.dir), "--port", str(self.port), "--reader", "00 00"],
                env={**os.environ, **self.pcscd.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        deadline = time.monotonic() + 60
        while True:
            try:
                self.http.get(self.url + "/api/v1/status", timeout=2).raise_for_status()
                return
            except requests.RequestException:
                if self.child.poll() is not None or time.monotonic() > deadline:
                    raise SoakError(f"{self.name}: terminal serve did not come up") from None
                time.sleep(0.05)

    def kill(self) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGKILL)
            self.child.wait(10)

    def dead(self) -> bool:
        return self.child is None or self.child.poll() is not None

    def stop(self) -> int | None:
        if self.child is None:
            return None
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
        try:
            return self.child.wait(30)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait(10)
            return None

    def reader(self) -> dict[str, Any]:
        state: dict[str, Any] = self.http.get(self.url + "/api/v1/reader", timeout=5).json()
        return state

    def card_ready(self) -> bool:
        state = self.reader()
        return bool(state["card_present"] and state["ready_for_new_card"])

    def card_present(self) -> bool:
        return bool(self.reader()["card_present"])

    def start_sync(self, batch: int | None) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if k != "UNIONCARD_CONFIG"}
        if batch is not None:
            env["UNIONCARD_SYNC_BATCH"] = str(batch)
        return subprocess.Popen(
            [UNIONCARD, "sync", "--config", str(self.config), "--data", str(self.dir)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def close(self) -> None:
        self.stop()
        self.proxy.stop()
        self.pcscd.stop()
        shutil.rmtree(self.pcscd.folder, ignore_errors=True)
        self.http.close()


class Soak:
    def __init__(
        self, folder: Path, minutes: float, terminals: int, seed: int, database_url: str | None
    ) -> None:
        self.folder = folder
        self.seconds = minutes * 60
        self.seed = seed
        self.database_url = database_url
        self.tally = Tally()
        self.stopping = threading.Event()
        self.paths = CentralPaths(folder / "central")
        create_keys(self.paths.keys, now=now())
        union = self.union()
        union.import_members(f"member_id,pan\nU1,{MEMBER_PAN}\n")
        union.add_merchant(MERCHANT, "Soak Shop", 500)
        union.add_user("admin.one", "admin", None, "soak-password-1")
        union.add_user("admin.two", "admin", None, "soak-password-2")
        union.publish_roster()
        self.central = Central(self.paths.data_dir, database_url, folder / "central.log")
        self.shops = [
            Shop(f"T{i + 1}", folder / f"T{i + 1}", self.central.port) for i in range(terminals)
        ]
        for shop in self.shops:
            shop.enrol(union.enrol_terminal(shop.name, MERCHANT, shop.proxy.url))
        union.close()
        self.members = 1
        self.sku = 0
        self.sku_lock = threading.Lock()

    def union(self) -> Union:
        return Union.open(self.paths, self.database_url, now)

    # -- the till ------------------------------------------------------------------------
    def next_sku(self, shop: Shop) -> str:
        with self.sku_lock:
            self.sku += 1
            return f"soak-{shop.name}-{self.sku}"

    def request(
        self, shop: Shop, rng: random.Random, method: str, path: str, **kwargs: Any
    ) -> requests.Response | None:
        """One request of the till, perhaps with a SIGKILL of the daemon inside it;
        None when it was cut off (by that kill: explained; else not)."""
        timer = None
        if rng.random() < KILL_SHARE:
            # anywhere in the request as long as it takes here: card read, pricing,
            # journaling, the answer (so some are cut off after they were journaled)
            window = max(KILL_WINDOW, shop.latency.get(path.split("/")[3], 0.0) * 1.2)
            timer = threading.Timer(rng.uniform(0, window), shop.kill)
            timer.start()
        started = time.monotonic()
        try:
            answer = shop.http.request(method, shop.url + path, timeout=60, **kwargs)
        except requests.RequestException as exc:
            if timer is None:
                self.tally.error("till_request_failed", f"{shop.name} {path}: {exc}")
            return None
        finally:
            if timer is not None:
                timer.join()
                self.tally.count("daemon_kills")
        if timer is None and answer.status_code == 200:  # a moving average, per endpoint
            kind = path.split("/")[3]
            took = time.monotonic() - started
            shop.latency[kind] = 0.8 * shop.latency.get(kind, took) + 0.2 * took
        return answer

    def refused(self, shop: Shop, path: str, answer: requests.Response) -> None:
        try:
            kind = answer.json().get("kind", "?")
        except ValueError:
            kind = "?"
        self.tally.error(f"till_{answer.status_code}_{kind}", f"{shop.name} {path}: {answer.text}")

    def checkout(self, shop: Shop, rng: random.Random) -> None:
        card = shop.member if rng.random() < 0.7 else shop.other
        sku = self.next_sku(shop)
        qty = rng.randint(1, 3)
        lines = [
            {"sku": sku, "category": "grocery", "qty": qty, "unit_price": yuan(rng, 100, 20_000)}
        ]
        if rng.random() < 0.5:
            lines.append(
                {"sku": f"{sku}-b", "category": "drinks", "qty": 1, "unit_price": yuan(rng, 50)}
            )
        asked = Asked(None, sku=sku)
        card.insert()
        try:
            try:
                until(lambda: shop.card_ready(), 30)
            except (requests.RequestException, TimeoutError) as exc:
                self.tally.error("card_not_seen", f"{shop.name}: {exc}")
                return
            two_step = rng.random() < TWO_STEP_SHARE
            path = "/api/v1/checkout"
            body = {"basket": lines, "confirm": not two_step}
            shop.asked.append(asked)
            answer = self.request(shop, rng, "POST", path, json=body)
            if answer is None:
                self.tally.explain("checkout_cut_by_kill")
                return
            if answer.status_code != 200:
                self.refused(shop, path, answer)
                return
            if two_step:
                pending = answer.json()
                if pending.get("state") != "pending":
                    self.tally.error("checkout_not_pending", f"{shop.name}: {pending}")
                    return
                if shop.dead():  # the kill came just after the answer: the sale is gone
                    shop.asked.remove(asked)  # so nothing may be journaled for it
                    self.tally.explain("pending_lost_by_kill")
                    return
                cancel = rng.random() < 0.3
                path = f"/api/v1/checkout/{pending['pending_id']}/" + (
                    "cancel" if cancel else "confirm"
                )
                answer = self.request(shop, rng, "POST", path)
                if answer is None:
                    self.tally.explain("checkout_cut_by_kill")
                    return
                if answer.status_code != 200:
                    self.refused(shop, path, answer)
                    return
                if cancel:
                    shop.asked.remove(asked)  # nothing may be journaled for it
                    self.tally.count("cancelled")
                    return
            sale = answer.json()
            asked.seq = int(sale["seq"])
            shop.sold.append(Sold(asked.seq, qty))
            self.tally.count("checkouts")
        finally:
            card.remove()
            card.apdu_log.clear()  # an hour of APDUs is not kept in memory
            # the next card goes in once the reader saw this one leave: pcscd polls
            # vpcd, and a swap quicker than its poll would look like no removal at all
            if not shop.dead():
                try:
                    until(lambda: not shop.card_present(), 10)
                except (requests.RequestException, TimeoutError) as exc:
                    self.tally.error("card_removal_not_seen", f"{shop.name}: {exc}")

    def reverse(self, shop: Shop, rng: random.Random) -> None:
        """Void a sale, or refund a unit of its first line (the supervisor's token)."""
        open_sales = [s for s in shop.sold[-50:] if not (s.voided or s.tainted)]
        refundable = [s for s in open_sales if s.refunded < s.qty]
        if not refundable:
            return
        sold = rng.choice(refundable)
        if rng.random() < 0.4 and sold.refunded == 0:
            kind, path = "void", f"/api/v1/sales/{sold.seq}/void"
            body: dict[str, Any] = {"reason": "soak: void"}
        else:
            kind, path = "refund", f"/api/v1/sales/{sold.seq}/refund"
            body = {"lines": [{"index": 0, "qty": 1}], "reason": "soak: refund"}
        asked = Asked(kind, ref_seq=sold.seq)
        shop.asked.append(asked)
        answer = self.request(shop, rng, "POST", path, json=body, headers=shop.supervisor)
        if answer is None:
            sold.tainted = True
            self.tally.explain(f"{kind}_cut_by_kill")
            return
        if answer.status_code != 200:
            sold.tainted = True
            self.refused(shop, path, answer)
            return
        got = answer.json()
        if got.get("ref_seq") != sold.seq:
            self.tally.error(f"{kind}_wrong_sale", f"{shop.name}: {got}")
        asked.seq = int(got["seq"])
        if kind == "void":
            sold.voided = True
        else:
            sold.refunded += 1
        self.tally.count(f"{kind}s")

    def till(self, shop: Shop) -> None:
        rng = random.Random(f"{self.seed}:till:{shop.name}")
        try:
            while not self.stopping.is_set():
                with shop.lock:
                    if rng.random() < 0.8:
                        self.checkout(shop, rng)
                    else:
                        self.reverse(shop, rng)
                    if shop.dead():
                        shop.start()
        except Exception as exc:  # noqa: BLE001 - the till stopped: a finding
            self.tally.error("till_stopped", f"{shop.name}: {type(exc).__name__}: {exc}")

    # -- the syncs -----------------------------------------------------------------------
    def sync_once(self, shop: Shop, rng: random.Random) -> None:
        scenario = rng.choices(["clean", "faults", "kill"], [30, 40, 30])[0]
        batch = rng.choice([None, None, 1, 3, 10])
        box: list[subprocess.Popen[str]] = []
        fired = threading.Event()
        plan: fp.Plan = fp.no_faults
        observer: fp.Observer | None = None
        timer: threading.Timer | None = None

        def kill_sync() -> None:
            if box and box[0].poll() is None and not fired.is_set():
                fired.set()
                box[0].kill()

        if scenario == "faults":
            plan = fp.RandomFaults(random.Random(rng.random()), rate=0.3, limit=rng.randint(1, 3))
        elif scenario == "kill":
            if rng.random() < 0.3:
                timer = threading.Timer(rng.uniform(0.1, 2.0), kill_sync)
            else:
                target, event = rng.randint(1, 6), rng.choice(KILL_MOMENTS)
                wait, seen = rng.uniform(0, 0.015), Counter[str]()

                def on_event(name: str, request: fp.Request) -> None:
                    seen[name] += 1
                    if name == event and seen[name] == target:
                        time.sleep(wait)
                        kill_sync()

                observer = on_event
        shop.proxy.clear()
        shop.proxy.plan, shop.proxy.observer = plan, observer
        child = shop.start_sync(batch)
        box.append(child)
        if timer is not None:
            timer.start()
        try:
            out, err = child.communicate(timeout=SYNC_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
            self.tally.error("sync_hung", f"{shop.name}: {err[-1000:]}")
            return
        finally:
            if timer is not None:
                timer.cancel()
            shop.proxy.plan, shop.proxy.observer = fp.no_faults, None
        self.tally.count("syncs")
        self.tally.count("faults", len(shop.proxy.faults()))
        if shop.proxy.errors:
            self.tally.error("proxy", f"{shop.name}: {shop.proxy.errors}")
        if tracebacks(err):
            self.tally.error("sync_traceback", f"{shop.name}: {err[-2000:]}")
        if fired.is_set():
            self.tally.count("sync_kills")
            if child.returncode != -signal.SIGKILL:
                self.tally.explain("sync_failed_as_killed")  # killed as it ended: it ran
            else:
                self.tally.explain("sync_killed")
        elif child.returncode != 0:
            self.tally.error(f"sync_exit_{child.returncode}", f"{shop.name} ({scenario}): {err}")

    def syncs(self, shop: Shop) -> None:
        rng = random.Random(f"{self.seed}:sync:{shop.name}")
        try:
            while not self.stopping.wait(rng.uniform(*SYNC_PAUSE)):
                self.sync_once(shop, rng)
        except Exception as exc:  # noqa: BLE001 - the syncs stopped: a finding
            self.tally.error("syncs_stopped", f"{shop.name}: {type(exc).__name__}: {exc}")

    # -- the union -----------------------------------------------------------------------
    def updates(self) -> None:
        rng = random.Random(f"{self.seed}:union")
        while not self.stopping.wait(rng.uniform(*UNION_PAUSE)):
            union = self.union()
            try:
                if rng.random() < 0.5:
                    self.members += 1
                    pan = with_luhn(f"6214{self.members:011d}")
                    union.import_members(f"member_id,pan\nU{self.members},{pan}\n")
                    union.publish_roster()
                    self.tally.count("rosters")
                else:
                    rule = {"id": "member", "kind": "percent_off"}
                    rule["basis_points"] = rng.choice([300, 500, 800])  # type: ignore[assignment]
                    terms = {"rounding": "half-up", "rules": [rule]}
                    draft = union.draft_policy(MERCHANT, terms, "admin.one")
                    union.approve_policy(draft, "admin.two")
                    self.tally.count("policies")
            except Exception as exc:  # noqa: BLE001 - any failure of the union is a finding
                self.tally.error("union_update", f"{type(exc).__name__}: {exc}")
            finally:
                union.close()

    # -- the run and its checks ----------------------------------------------------------
    def run(self) -> None:
        self.central.start()
        for shop in self.shops:
            shop.proxy.start()
            shop.start_pcscd()
            shop.proxy.plan = fp.no_faults
            child = shop.start_sync(None)  # the first roster and policy, before serving
            out, err = child.communicate(timeout=SYNC_TIMEOUT)
            if child.returncode != 0:
                raise SoakError(f"{shop.name}: the first sync failed: {err.strip()[-500:]}")
            shop.start()
        threads = [threading.Thread(target=self.updates, name="union", daemon=True)]
        for shop in self.shops:
            threads.append(threading.Thread(target=self.till, args=(shop,), daemon=True))
            threads.append(threading.Thread(target=self.syncs, args=(shop,), daemon=True))
        for thread in threads:
            thread.start()
        started = time.monotonic()
        while not self.stopping.wait(min(60.0, self.seconds)):
            elapsed = time.monotonic() - started
            with self.tally.lock:
                say(f"{elapsed / 60:.1f} min: {dict(self.tally.counts)}")
            if elapsed >= self.seconds:
                self.stopping.set()
        for thread in threads:
            thread.join(SYNC_TIMEOUT + 60)
            if thread.is_alive():
                self.tally.error("thread_hung", thread.name)
        for shop in self.shops:
            code = shop.stop()
            if code != 0:
                self.tally.error("daemon_stop", f"{shop.name} exited {code}")
        for shop in self.shops:  # the final clean sync
            shop.proxy.plan, shop.proxy.observer = fp.no_faults, None
            child = shop.start_sync(None)
            out, err = child.communicate(timeout=SYNC_TIMEOUT)
            if child.returncode != 0:
                self.tally.error("final_sync", f"{shop.name}: {err.strip()[-500:]}")

    def check(self) -> dict[str, int]:
        """Compare what each till was told with the journals and the central store."""
        figures = Counter[str]()
        store = Store.open(self.database_url or self.paths.database_url)
        union = self.union()
        try:
            roster_version = union.store.latest_signed("roster")[0]
            policy_version = union.latest_policy(MERCHANT).version  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - reported as a finding
            roster_version = policy_version = None
            self.tally.error("union_versions", f"{type(exc).__name__}: {exc}")
        finally:
            union.close()
        try:
            for shop in self.shops:
                self.check_shop(shop, store, figures, roster_version, policy_version)
        finally:
            store.close()
        for log in [self.central.log] + [shop.log for shop in self.shops]:
            for block in tracebacks(log.read_text(errors="replace")):
                self.tally.error("traceback", f"{log.name}: {block[-1500:]}")
        return dict(figures)

    def check_shop(
        self,
        shop: Shop,
        store: Store,
        figures: Counter[str],
        roster_version: int | None,
        policy_version: int | None,
    ) -> None:
        held = store.sales_for(shop.name)
        journal = Journal(TerminalState(shop.dir).journal_path)
        try:
            entries = journal.sales()
            verified = journal.verify(load_public_key(shop.dir))
            total, pending = journal.counts()
        finally:
            journal.close()
        if verified != len(entries):
            self.tally.error("journal_verify", f"{shop.name}: {verified} of {len(entries)}")
        if pending:
            self.tally.error("pending_after_final_sync", f"{shop.name}: {pending}")
        if store.refusals(shop.name):
            self.tally.error("upload_refused", f"{shop.name}: {store.refusals(shop.name)[:3]}")
        seqs = Counter(s.seq for s in held)
        ids = Counter(s.sale_id for s in held)
        dupes = sum(n - 1 for n in seqs.values()) + sum(n - 1 for n in ids.values())
        top = max(seqs, default=0)
        figures["gaps"] += len(set(range(1, top + 1)) - set(seqs))
        figures["gaps"] += len(entries) != top or [e.seq for e in entries] != list(
            range(1, len(entries) + 1)
        )
        if [(s.seq, s.hash) for s in held] != [(e.seq, e.hash) for e in entries]:
            self.tally.error("held_differs", f"{shop.name}: the union's entries differ")
        by_seq = {s.seq: s for s in held}
        journaled = [s for s in held if s.kind != "event"]
        figures["entries"] += len(journaled)
        figures["events"] += len(held) - len(journaled)

        def key(entry: Sale) -> tuple[Any, ...]:
            if entry.kind is None:
                lines = (entry.basket or {}).get("lines") or [{}]
                return (None, lines[0].get("sku"))
            return (entry.kind, entry.ref_seq)

        matched = Counter(key(e) for e in journaled)
        confirmed, cut = Counter[tuple[Any, ...]](), Counter[tuple[Any, ...]]()
        for asked in shop.asked:
            k = (asked.kind, asked.sku) if asked.kind is None else (asked.kind, asked.ref_seq)
            if asked.seq is None:
                cut[k] += 1
                continue
            confirmed[k] += 1
            figures["confirmed"] += 1
            entry = by_seq.get(asked.seq)
            if entry is not None and key(entry) == k and seqs[asked.seq] == 1:
                figures["received"] += 1
            else:
                self.tally.error("confirmed_not_received", f"{shop.name} seq {asked.seq} {k}")
        for k, n in matched.items():
            extra = n - confirmed[k]  # held, and no answer said so: cut off by a kill?
            if extra > cut[k]:
                if k in confirmed or k in cut:
                    dupes += extra - cut[k]  # one request journaled twice
                else:
                    self.tally.error("unasked_entry", f"{shop.name}: {k} x{n}")
            figures["cut_journaled"] += min(max(extra, 0), cut[k])
        figures["duplicates"] += dupes
        status = subprocess.run(
            [UNIONCARD, "terminal", "status", "--json", "--config", str(shop.config)]
            + ["--data", str(shop.dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if status.returncode != 0:
            self.tally.error("status", f"{shop.name}: {status.stderr.strip()}")
            return
        got = json.loads(status.stdout)
        versions = (got.get("roster_version"), got.get("policy_version"))
        if roster_version is not None and versions != (roster_version, policy_version):
            self.tally.error(
                "stale_terminal",
                f"{shop.name} has roster/policy {versions}, "
                f"the union {(roster_version, policy_version)}",
            )

    def close(self) -> None:
        self.stopping.set()
        for shop in self.shops:
            with contextlib.suppress(Exception):
                shop.close()
        self.central.stop()


def yuan(rng: random.Random, low: int, high: int | None = None) -> str:
    fen = rng.randint(low, high or low * 40)
    return f"{fen // 100}.{fen % 100:02d}"


def until(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:g} s")
        time.sleep(0.05)


def counts_line(args: argparse.Namespace, figures: dict[str, int], tally: Tally) -> str:
    """The one line: ``soak: key=value ...``; errors as ``kind:n`` (unexplained ones
    marked ``!``)."""
    errors = [f"{k}:{n}" for k, n in sorted(tally.explained.items())]
    errors += [f"!{k}:{n}" for k, n in sorted(tally.unexplained.items())]
    fields = {
        "minutes": f"{args.minutes:g}",
        "terminals": args.terminals,
        "db": args.db,
        "seed": args.seed,
        "confirmed": figures.get("confirmed", 0),
        "received": figures.get("received", 0),
        "duplicates": figures.get("duplicates", 0),
        "gaps": figures.get("gaps", 0),
        "unexplained": sum(tally.unexplained.values()),
        "entries": figures.get("entries", 0),
        "cut_journaled": figures.get("cut_journaled", 0),
    }
    for name in ("checkouts", "cancelled", "voids", "refunds", "daemon_kills", "syncs"):
        fields[name] = tally.counts.get(name, 0)
    for name in ("sync_kills", "faults", "rosters", "policies"):
        fields[name] = tally.counts.get(name, 0)
    fields["errors"] = ",".join(errors) or "none"
    return "soak: " + " ".join(f"{k}={v}" for k, v in fields.items())


def passed(figures: dict[str, int], tally: Tally) -> bool:
    return (
        figures.get("confirmed", 0) == figures.get("received", -1)
        and figures.get("duplicates", 0) == 0
        and figures.get("gaps", 0) == 0
        and not tally.unexplained
    )


@contextlib.contextmanager
def database(kind: str) -> Iterator[str | None]:
    if kind == "sqlite":
        yield None
        return
    from tests.conftest import pg_schema  # only for PostgreSQL: it imports pytest's fixtures

    with pg_schema() as url:
        yield url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=60.0, help="how long the load runs")
    parser.add_argument("--terminals", type=int, default=3, help="shops (1 to 8)")
    parser.add_argument("--seed", type=int, default=random.SystemRandom().randrange(10**6))
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 24 * 60 or not 1 <= args.terminals <= 8:
        parser.error("--minutes must be above 0 (at most a day), --terminals 1 to 8")
    folder = Path(tempfile.mkdtemp(prefix="unioncard-soak-"))
    say(f"seed {args.seed}, {args.terminals} terminals, {args.minutes:g} min, in {folder}")
    ok = False
    try:
        with database(args.db) as url:
            soak = Soak(folder, args.minutes, args.terminals, args.seed, url)
            try:
                soak.run()
            finally:
                soak.close()
            figures = soak.check()
        ok = passed(figures, soak.tally)
        for note in soak.tally.notes:
            say(f"unexplained: {note[:2000]}")
        print(counts_line(args, figures, soak.tally), flush=True)
    except SoakError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if ok and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            say(f"the run's folder (logs, journals, central store): {folder}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
