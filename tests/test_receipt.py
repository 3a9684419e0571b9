"""Receipts: an 80 mm page and ESC/POS on paper, each with a verification code that
leads the union or an auditor to the signed journal entry."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC
from pathlib import Path

import pytest
from escpos.printer import Dummy

from pact.basket import Basket, Line
from pact.receipt import normal_code, receipt, verification_code
from terminal.errors import ConfigError, PrinterError
from terminal.printing import open_printer, print_receipt
from terminal.service import TerminalService
from terminal.web import create_app
from tests.conftest import Site
from tests.helpers import MEMBER_PAN, invoke, till_client
from tests.test_policy_checkout import MONDAY, card, make_shop, terms

POPCORN = Line("POP", "snack", 2, 2000)
FILM = Line("FILM", "film", 1, 4500)


@pytest.fixture
def cinema(tmp_path: Path):
    shop = make_shop(tmp_path, terms("cinema"))
    member = card(shop)
    service = TerminalService(
        shop.dir,
        lambda *, timeout, tokenize: member,
        lambda: MONDAY,
        card_timeout=1,
        printer=f"file:{tmp_path / 'printer.bin'}",
    )
    yield service, tmp_path / "printer.bin"
    service.close()


def test_the_code_comes_from_the_signature(cinema) -> None:
    service, _ = cinema
    sale = service.checkout(Basket((FILM, POPCORN)), confirm=True).sale
    code = verification_code(sale)
    assert code is not None and len(code) == 11 and code[5] == "-"
    assert code == verification_code(dataclasses.replace(sale, seq=99))  # the signature's
    assert verification_code(dataclasses.replace(sale, sig="00" * 64)) != code
    assert verification_code(dataclasses.replace(sale, sig=None)) is None
    typed = code.lower().replace("-", "").replace("0", "o").replace("1", "l")
    assert normal_code(typed) == code
    with pytest.raises(ValueError, match="not a receipt code"):
        normal_code("ABC")


def test_the_slip_names_the_rules_and_the_local_time(cinema) -> None:
    service, _ = cinema
    sale = service.checkout(Basket((FILM, POPCORN)), confirm=True).sale
    slip = service.receipt(sale.seq)
    assert (slip.merchant, slip.title, slip.seq, slip.card) == (
        "Test Shop",
        "Sale",
        1,
        "•••• " + sale.pan_last4,
    )
    assert slip.local_time == MONDAY.astimezone(service.state.current.policy.zone).strftime(
        "%Y-%m-%d %H:%M"
    )
    assert [(x.sku, x.qty, x.gross) for x in slip.lines] == [
        ("FILM", 1, "45.00"),
        ("POP", 2, "40.00"),
    ]
    titles = dict(slip.discounts)
    assert titles["One free film a month"] == "45.00" and (slip.gross, slip.net) == (
        "85.00",
        "36.00",
    )
    assert slip.code == verification_code(sale)
    utc = receipt(sale, "Shop", UTC)
    assert utc.local_time != slip.local_time and utc.discounts[0][0] == "free-film"  # ids


def test_esc_pos_bytes_through_the_dummy_printer(cinema) -> None:
    service, _ = cinema
    sale = service.checkout(Basket((FILM,)), confirm=True).sale
    slip = service.receipt(sale.seq)
    printer = Dummy()
    print_receipt(printer, slip)
    out = printer.output
    assert b"Test Shop" in out and b"Sale #1" in out and slip.code.encode() in out
    assert "实收".encode("gb18030") in out  # Chinese in the printer's code page
    qr = out.index(b"\x1d(k")  # a native QR code (GS ( k) that stores the code
    assert slip.code.encode() in out[qr:]
    assert out.rstrip(b"\x00").endswith(b"\x1dVA\x00") or b"\x1dV" in out[-8:]  # then cut


def test_each_printed_row_fits_the_slip(cinema) -> None:
    """A Chinese character takes two columns on the printer: rows padded by characters
    ("原价 Gross", an item named 爆米花) ran past the slip's 42 and wrapped."""
    from terminal.printing import WIDTH, columns

    service, _ = cinema
    service.checkout(Basket((Line("爆米花", "snack", 1, 1200), FILM)), confirm=True)
    slip = service.receipt(1)
    printer = Dummy()
    print_receipt(printer, slip)
    text = printer.output.decode("gb18030", errors="replace")
    rows = [row for row in text.split("\n") if "Gross" in row or "Net" in row or "爆米花" in row]
    assert len(rows) >= 3, rows
    for row in rows:
        printed = re.split(r"\x1b.[\x00-\x01]?", row)[-1]  # after the last ESC command
        assert columns(printed) <= WIDTH, (printed, columns(printed))
    assert columns("原价 Gross") == 10 and columns("ab") == 2


def test_printing_on_the_settings_printer(cinema, tmp_path: Path) -> None:
    service, device = cinema
    service.checkout(Basket((FILM,)), confirm=True)
    client = till_client(create_app(service))
    answer = client.post("/api/v1/sales/1/print").get_json()
    assert answer["printed"] == 1 and answer["code"].encode() in device.read_bytes()
    assert client.post("/api/v1/sales/7/print").status_code == 404
    service.printer = None
    none = client.post("/api/v1/sales/1/print")
    assert none.status_code == 503 and none.get_json()["kind"] == "printer"
    with pytest.raises(PrinterError):
        print_receipt(object(), service.receipt(1))  # not a printer at all

    class Jammed:
        def set(self, **_: object) -> None:
            raise OSError("paper jam\nat the cutter")

    with pytest.raises(PrinterError) as jammed:
        print_receipt(Jammed(), service.receipt(1))
    assert "\n" not in str(jammed.value) and "paper jam at the cutter" in str(jammed.value)
    for spec in ("lp0", "usb:zz:01", "network:", "file:"):
        with pytest.raises(ConfigError, match="usb:VID:PID"):
            open_printer(spec)


def test_the_receipt_page(cinema) -> None:
    service, _ = cinema
    sale = service.checkout(Basket((FILM, POPCORN)), confirm=True).sale
    client = till_client(create_app(service))
    page = client.get("/receipt/1").get_data(as_text=True)
    assert verification_code(sale) in page and "<svg" in page and "One free film a month" in page
    assert "size: 80mm" in page and MEMBER_PAN not in page
    assert client.get("/receipt/5").status_code == 404


def test_the_union_finds_the_entry_behind_a_receipt(site: Site, clock) -> None:
    site.sync(clock)
    sale = site.sell(MEMBER_PAN, 12800, clock)
    site.sync(clock)
    code = verification_code(site.journal.entry(sale["seq"]))
    data = ["--data", str(site.state.dir.parent / "central")]
    found = invoke("audit", "receipt", code.lower(), *data)
    assert found.returncode == 0, found.stderr
    assert f"{code}: terminal T1 sale #1 of merchant M0001" in found.stdout
    assert "gross 128.00, discount 6.40, net 121.60; device signature verified" in found.stdout
    missing = invoke("audit", "receipt", "00000-00000", *data)
    assert missing.returncode == 1 and "no entry the union holds" in missing.stderr
    bad = invoke("audit", "receipt", "nonsense", *data)
    assert bad.returncode == 2 and "not a receipt code" in bad.stderr
    with site.union.store.engine.begin() as conn:  # someone edits the union's copy
        import sqlalchemy as sa

        conn.execute(sa.text("UPDATE sales SET discount = 1000, net = 11800 WHERE seq = 1"))
    edited = invoke("audit", "receipt", code, *data)
    assert edited.returncode == 1 and "altered: its fields do not give its hash" in edited.stdout


def test_the_code_is_the_signatures_hash_five_bits_a_character() -> None:
    """The code printed on receipts since the first release: the first 50 bits of the
    SHA-256 of the signature, 5 bits a character of the Crockford alphabet, the most
    significant first (written two characters at a time now: the same characters)."""
    import hashlib
    import random

    from pact.receipt import ALPHABET
    from tests.test_sale import PHARMACY

    def by_the_definition(sig: str) -> str:
        bits = int.from_bytes(hashlib.sha256(bytes.fromhex(sig)).digest()[:8], "big") >> 14
        chars = "".join(ALPHABET[(bits >> (5 * (9 - i))) & 31] for i in range(10))
        return f"{chars[:5]}-{chars[5:]}"

    assert verification_code(dataclasses.replace(PHARMACY, sig="ab" * 64)) == "XHJWG-YCESY"
    rng = random.Random(20261201)
    for _ in range(2000):
        sig = rng.randbytes(64).hex()
        assert verification_code(dataclasses.replace(PHARMACY, sig=sig)) == by_the_definition(sig)
