"""Emulated payment cards as data: card images and the profiles that build them.

The card itself is data: a :class:`CardImage` lists its applications (DF name, FCI,
records by SFI, GPO response) and a few behaviours (T=0 ``61xx``/``6Cxx`` answers,
being pulled out mid-read). :data:`PROFILES` maps a profile name to a function that
builds the image for a PAN and an expiry date; :func:`build_image` checks the name.
:class:`reader.emulation.responder.EmulatedCard` answers APDUs from an image.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from reader.tlv import encode

SW_OK = 0x9000
SW_BLOCKED = 0x6283
SW_WRONG_LENGTH = 0x6700
SW_CONDITIONS = 0x6985
SW_NOT_FOUND = 0x6A82
SW_NO_RECORD = 0x6A83
SW_REF_NOT_FOUND = 0x6A88  # referenced data not found (GET DATA of what the card lacks)
SW_INS = 0x6D00
SW_CLA = 0x6E00


def _with_tck(atr: bytes) -> bytes:
    """Append TCK, the XOR of T0 .. the last historical byte (ISO/IEC 7816-3, 8.2.5)."""
    tck = 0
    for byte in atr[1:]:
        tck ^= byte
    return atr + bytes([tck])


# ISO/IEC 7816-3, 8.2. T=0 only: TS 3B, T0 68 (TB1 TC1 present, 8 historical bytes).
ATR_T0 = bytes.fromhex("3B680000") + b"UNIONCRD"
# T=1: TS 3B, T0 88 (TD1, 8 historical bytes), TD1 80 (TD2, T=0), TD2 01 (T=1), TCK.
ATR_T1 = _with_tck(bytes.fromhex("3B888001") + b"UNIONCRD")

PPSE = b"2PAY.SYS.DDF01"
PSE = b"1PAY.SYS.DDF01"
AID_UNIONPAY_DEBIT = bytes.fromhex("A000000333010101")
AID_UNIONPAY_CREDIT = bytes.fromhex("A000000333010102")
AID_VISA = bytes.fromhex("A0000000031010")
AID_TUNION = bytes.fromhex("A000000632010105")  # China T-Union transport (not payment)


@dataclass
class Application:
    """One selectable DF: a payment application, or a PSE/PPSE directory."""

    name: bytes
    fci: bytes
    records: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (sfi, rec)
    gpo: bytes | None = None  # GPO response data; None: GPO is refused (6985)
    pdol_length: int = 0  # the length of PDOL data GPO must carry
    select_sw: int = SW_OK  # e.g. 6283 for a blocked application
    gpo_atc: bool = False  # a format 2 GPO answer carries the counter (9F36) at its end


@dataclass
class CardImage:
    """Everything a profile says about a card."""

    atr: bytes
    applications: list[Application]
    t0: bool = False  # answer like a T=0 card: 61xx for case 4, 6Cxx for a wrong Le
    t0_chunk: int = 32  # bytes per GET RESPONSE when t0
    vanish_after: int | None = None  # answer this many APDUs, then leave (card pulled)
    atc: int = 0x0100  # Application Transaction Counter: one more at each GPO
    get_data: bool = True  # answers GET DATA 9F36 with the counter; else 6A88


# ---------------------------------------------------------------------------
# Profiles: functions (pan, expiry "YYYY-MM") -> CardImage.


def _check_pan(pan: str) -> None:
    if not pan.isdigit():
        raise ValueError(f"the PAN must be decimal digits, got {pan!r}")
    if not 12 <= len(pan) <= 19:
        raise ValueError(f"the PAN must be 12 to 19 digits, got {len(pan)}")


def _yymm(expiry: str) -> tuple[int, int]:
    year, sep, month = expiry.partition("-")
    if not sep or len(year) != 4 or not year.isdigit() or not month.isdigit():
        raise ValueError(f"the expiry must be YYYY-MM, got {expiry!r}")
    if not 1 <= int(month) <= 12 or not 1950 <= int(year) <= 2049:
        raise ValueError(f"the expiry {expiry!r} is not a valid month in 1950..2049")
    return int(year), int(month)


def _cn(digits: str) -> bytes:
    """Compressed numeric: BCD, padded on the right with F (EMV 4.3 Book 3, Annex B)."""
    return bytes.fromhex(digits + "F" * (len(digits) % 2))


def _track2(pan: str, year: int, month: int, service_code: str = "220") -> bytes:
    """Track 2 Equivalent Data (tag 57): PAN, D, YYMM, service code, discretionary."""
    return _cn(f"{pan}D{year % 100:02d}{month:02d}{service_code}0000000000")


def _expiry_date(year: int, month: int) -> bytes:
    """Application Expiration Date (5F24), YYMMDD: the last day of the month."""
    day = calendar.monthrange(year, month)[1]
    return bytes.fromhex(f"{year % 100:02d}{month:02d}{day:02d}")


def _directory_fci(name: bytes, sfi: int | None, entries: Sequence[bytes] = ()) -> bytes:
    """FCI of a PSE (A5 holds 88 SFI) or PPSE (A5 holds BF0C with 61 entries)."""
    if sfi is not None:
        prop = encode(0x88, bytes([sfi])) + encode(0x5F2D, b"zhen")
    else:
        prop = encode(0xBF0C, b"".join(entries))
    return encode(0x6F, encode(0x84, name) + encode(0xA5, prop))


def _entry(aid: bytes, label: bytes, priority: int | None) -> bytes:
    """A directory entry, template 61 (EMV 4.3 Book 1, 12.2.3, table 47)."""
    body = encode(0x4F, aid) + encode(0x50, label)
    if priority is not None:
        body += encode(0x87, bytes([priority]))
    return encode(0x61, body)


def _adf_fci(aid: bytes, label: bytes, priority: int, pdol: bytes = b"") -> bytes:
    """FCI of an ADF (EMV 4.3 Book 1, 11.3.4, table 45)."""
    prop = encode(0x50, label) + encode(0x87, bytes([priority]))
    if pdol:
        prop += encode(0x9F38, pdol)
    prop += encode(0x5F2D, b"zhen") + encode(0x9F11, b"\x01")
    prop += encode(0xBF0C, encode(0x9F4D, b"\x0b\x0a"))
    return encode(0x6F, encode(0x84, aid) + encode(0xA5, prop))


def _pboc_records(pan: str, year: int, month: int) -> dict[tuple[int, int], bytes]:
    """SFI 1 records 1-2 of a PBOC debit application, with personal data in record 1."""
    record1 = encode(
        0x70,
        encode(0x57, _track2(pan, year, month))
        + encode(0x5F20, b"ZHANG/SAN")  # cardholder name: the reader must not keep it
        + encode(0x9F61, b"110101199003077777")  # PBOC cardholder ID number: ditto
        + encode(0x9F62, b"\x00"),  # ID type: national ID card
    )
    record2 = encode(
        0x70,
        encode(0x5A, _cn(pan))
        + encode(0x5F24, _expiry_date(year, month))
        + encode(0x5F25, bytes.fromhex("200101"))
        + encode(0x5F28, bytes.fromhex("0156"))
        + encode(0x5F34, b"\x01")
        + encode(0x9F07, bytes.fromhex("FF00"))
        + encode(0x8E, bytes(8) + bytes.fromhex("42031E031F00"))
        + encode(0x8C, bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F3704")),
    )
    return {(1, 1): record1, (1, 2): record2}


def _pse(entries_by_record: Sequence[bytes]) -> Application:
    records = {(1, i + 1): encode(0x70, rec) for i, rec in enumerate(entries_by_record)}
    return Application(PSE, _directory_fci(PSE, 1), records)


def _unionpay_app(aid: bytes, label: bytes, priority: int, pan: str, y: int, m: int) -> Application:
    # Format 1: 80 [AIP 7C00][AFL 08 01 02 00 = SFI 1, records 1..2, none for ODA]
    gpo = encode(0x80, bytes.fromhex("7C00") + bytes.fromhex("08010200"))
    return Application(aid, _adf_fci(aid, label, priority), _pboc_records(pan, y, m), gpo)


def unionpay(pan: str, expiry: str) -> CardImage:
    """A contact-only UnionPay (PBOC 3.0) card with a debit and a credit application.

    PPSE: 6A82. PSE: SFI 1, record 1 lists credit (priority 2), record 2 debit
    (priority 1). No PDOL; GPO answers format 1 naming SFI 1 records 1-2.
    """
    _check_pan(pan)
    y, m = _yymm(expiry)
    return CardImage(
        atr=ATR_T0,
        applications=[
            _pse(
                [
                    _entry(AID_UNIONPAY_CREDIT, b"UnionPay Credit", 2),
                    _entry(AID_UNIONPAY_DEBIT, b"UnionPay Debit", 1),
                ]
            ),
            _unionpay_app(AID_UNIONPAY_DEBIT, b"UnionPay Debit", 1, pan, y, m),
            _unionpay_app(AID_UNIONPAY_CREDIT, b"UnionPay Credit", 2, pan, y, m),
        ],
    )


def unionpay_t0(pan: str, expiry: str) -> CardImage:
    """The ``unionpay`` card behind a T=0 link: ``61xx`` chains and ``6Cxx`` retries."""
    image = unionpay(pan, expiry)
    image.t0 = True
    return image


def pulled(pan: str, expiry: str) -> CardImage:
    """The ``unionpay`` card, taken out after GPO, at the first READ RECORD."""
    image = unionpay(pan, expiry)
    image.vanish_after = 7  # PPSE, PSE, 3 directory reads, SELECT, GPO
    return image


def blocked(pan: str, expiry: str) -> CardImage:
    """A UnionPay card whose only application answers SELECT with ``6283``."""
    image = unionpay(pan, expiry)
    image.applications = [
        _pse([_entry(AID_UNIONPAY_DEBIT, b"UnionPay Debit", 1)]),
        _unionpay_app(AID_UNIONPAY_DEBIT, b"UnionPay Debit", 1, pan, *_yymm(expiry)),
    ]
    image.applications[1].select_sw = SW_BLOCKED
    return image


# PDOL of a UnionPay qUICS / Visa qVSDC contactless application: TTQ, amounts,
# country, TVR, currency, date, type, unpredictable number = 4+6+6+2+5+2+3+1+4 = 33.
CONTACTLESS_PDOL = bytes.fromhex("9F66049F02069F03069F1A0295055F2A029A039C019F3704")


def contactless(pan: str, expiry: str) -> CardImage:
    """A UnionPay qUICS card (tap): PPSE, a PDOL, GPO format 2 with track 2 only.

    No ``5A`` and no ``5F24`` anywhere: PAN and expiry come from tag ``57`` in the
    GPO response (format 2, tag 77), and there is no AFL to read.
    """
    _check_pan(pan)
    y, m = _yymm(expiry)
    aid = AID_UNIONPAY_DEBIT
    gpo = encode(
        0x77,
        encode(0x82, bytes.fromhex("0000"))
        + encode(0x57, _track2(pan, y, m))
        + encode(0x5F34, b"\x01")
        + encode(0x9F10, bytes.fromhex("07010103A00000010A0100000000000000000000"))
        + encode(0x9F26, bytes(8)),
    )  # the counter (9F36) is added at each GPO: gpo_atc
    ppse_entries = [_entry(aid, b"UnionPay", 1)]
    return CardImage(
        atr=ATR_T1,
        applications=[
            Application(PPSE, _directory_fci(PPSE, None, ppse_entries)),
            Application(
                aid,
                _adf_fci(aid, b"UnionPay", 1, CONTACTLESS_PDOL),
                gpo=gpo,
                pdol_length=33,
                gpo_atc=True,
            ),
        ],
    )


def visa(pan: str, expiry: str) -> CardImage:
    """A Visa card found through the PPSE, GPO format 2 with an AFL (SFI 2 record 1)."""
    _check_pan(pan)
    y, m = _yymm(expiry)
    pdol = bytes.fromhex("9F66049F02069F37045F2A02")  # 4+6+4+2 = 16
    gpo = encode(
        0x77, encode(0x82, bytes.fromhex("2000")) + encode(0x94, bytes.fromhex("10010100"))
    )
    record = encode(
        0x70,
        encode(0x57, _track2(pan, y, m, "201"))
        + encode(0x5F20, b"CARDHOLDER/VISA")
        + encode(0x5A, _cn(pan))
        + encode(0x5F24, _expiry_date(y, m)),
    )
    return CardImage(
        atr=ATR_T1,
        applications=[
            Application(PPSE, _directory_fci(PPSE, None, [_entry(AID_VISA, b"VISA DEBIT", 1)])),
            Application(
                AID_VISA,
                _adf_fci(AID_VISA, b"VISA DEBIT", 1, pdol),
                {(2, 1): record},
                gpo,
                pdol_length=16,
            ),
        ],
    )


def transit(pan: str, expiry: str) -> CardImage:
    """A China T-Union transport card: its PPSE lists only a non-payment application.

    The PAN is not used; the card answers ``6A82`` to every payment AID.
    """
    _check_pan(pan)
    _yymm(expiry)
    fci = encode(0x6F, encode(0x84, AID_TUNION) + encode(0xA5, encode(0x50, b"T-Union")))
    return CardImage(
        atr=ATR_T1,
        applications=[
            Application(PPSE, _directory_fci(PPSE, None, [_entry(AID_TUNION, b"T-Union", 1)])),
            Application(AID_TUNION, fci),
        ],
    )


def no_get_data(pan: str, expiry: str) -> CardImage:
    """The ``unionpay`` card, but it refuses GET DATA (6A88): no transaction counter."""
    image = unionpay(pan, expiry)
    image.get_data = False
    return image


PROFILES: dict[str, Callable[[str, str], CardImage]] = {
    "unionpay": unionpay,
    "unionpay-t0": unionpay_t0,
    "no-get-data": no_get_data,
    "contactless": contactless,
    "visa": visa,
    "blocked": blocked,
    "transit": transit,
    "pulled": pulled,
}


def build_image(profile: str, pan: str, expiry: str) -> CardImage:
    """The :class:`CardImage` of ``profile``; ``ValueError`` for a bad name, PAN or date."""
    if profile not in PROFILES:
        raise ValueError(f"unknown card profile {profile!r}; known: {', '.join(PROFILES)}")
    return PROFILES[profile](pan, expiry)
