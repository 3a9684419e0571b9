"""Read a payment card's identity: application selection, GPO, records.

This is the pure core of the reader. It talks to the card only through a
``transmit(apdu) -> (data, sw)`` callable (see :mod:`reader.apdu`), reads no clock
(``now`` is a parameter) and does no I/O; :mod:`reader.pcsc` supplies the callable.

The flow is EMV 4.3 Book 1, section 12 (application selection) and Book 3,
section 10.1-10.2 (initiate application processing, read application data):

1. PPSE ``2PAY.SYS.DDF01`` (EMV Contactless Book B, 3.3): the FCI lists the
   applications in ``BF0C`` / ``61`` entries.
2. else PSE ``1PAY.SYS.DDF01`` (Book 1, 12.3.2): the FCI names the directory's SFI
   (tag ``88``); records 1, 2, ... are read until ``6A83``.
3. else the list of known AIDs (Book 1, 12.3.3).

Candidates are ordered by the Application Priority Indicator (tag ``87``, Book 1,
12.2.3 table 48: low nibble, 1 is the highest priority, 0 or absent the lowest),
then SELECTed in turn; the first one that selects and accepts GET PROCESSING
OPTIONS is read. Only the PAN, the expiry date and the track 2 equivalent data are
kept from the records; the cardholder name (``5F20``) and the PBOC ID number
(``9F61``) are never extracted, and the PAN goes straight into
:func:`reader.identity.identity_from_pan`.
"""

from __future__ import annotations

import dataclasses
import datetime
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from reader import apdu, tlv
from reader.errors import (
    CardBlockedError,
    MalformedResponseError,
    UnsupportedCardError,
)
from reader.identity import CardIdentity, Tokenize, identity_from_pan

PPSE = b"2PAY.SYS.DDF01"
PSE = b"1PAY.SYS.DDF01"

# Book 1, 12.3.3: the terminal's own list, tried in this order when no directory helps.
KNOWN_AIDS: tuple[bytes, ...] = (
    bytes.fromhex("A000000333010101"),  # UnionPay debit
    bytes.fromhex("A000000333010102"),  # UnionPay credit
    bytes.fromhex("A000000333010103"),  # UnionPay quasi-credit
    bytes.fromhex("A0000000031010"),  # Visa credit/debit
    bytes.fromhex("A0000000041010"),  # Mastercard credit/debit
    bytes.fromhex("A00000002501"),  # American Express
    bytes.fromhex("A0000000651010"),  # JCB
    bytes.fromhex("A0000001523010"),  # Discover
)

# ISO/IEC 7816-5: the first five bytes of an AID are the Registered Application Provider.
SCHEMES: dict[bytes, str] = {
    bytes.fromhex("A000000333"): "unionpay",
    bytes.fromhex("A000000003"): "visa",
    bytes.fromhex("A000000004"): "mastercard",
    bytes.fromhex("A000000025"): "amex",
    bytes.fromhex("A000000065"): "jcb",
    bytes.fromhex("A000000152"): "discover",
}

# Terminal data for the PDOL (EMV 4.3 Book 3, 5.4 and Annex A). ``9A`` (date) and
# ``9F37`` (unpredictable number) are filled per read; any other tag is zero-filled.
TERMINAL_DATA: dict[int, bytes] = {
    0x9F66: bytes.fromhex("36000000"),  # TTQ: contactless EMV + contact chip, online PIN, sig
    0x9F02: bytes(6),  # Amount, Authorised: 0 (we only read the card)
    0x9F03: bytes(6),  # Amount, Other
    0x9F1A: bytes.fromhex("0156"),  # Terminal Country Code: China
    0x5F2A: bytes.fromhex("0156"),  # Transaction Currency Code: CNY
    0x95: bytes(5),  # Terminal Verification Results
    0x9C: bytes(1),  # Transaction Type: goods and services
    0x9F35: bytes.fromhex("22"),  # Terminal Type: attended, merchant, offline with online
    0x9F33: bytes.fromhex("E0F0C8"),  # Terminal Capabilities
    0x9F40: bytes.fromhex("6000F0A001"),  # Additional Terminal Capabilities
}
# Book 3, 5.4: numeric (format n) values are padded / truncated on the left.
NUMERIC_TAGS = frozenset({0x9F02, 0x9F03, 0x9F1A, 0x5F2A, 0x9A, 0x9C, 0x9F35, 0x9F21})

# The only data objects taken from the card's records and GPO response.
TAG_PAN = 0x5A
TAG_TRACK2 = 0x57
TAG_EXPIRY = 0x5F24
TAG_ATC = 0x9F36  # Application Transaction Counter: 2 bytes, the card adds one per GPO
WANTED_TAGS = frozenset({TAG_PAN, TAG_TRACK2, TAG_EXPIRY, TAG_ATC})

NOT_FOUND = frozenset({0x6A82, 0x6D00, 0x6E00})  # SELECT: no such application here
MAX_DIRECTORY_RECORDS = 16  # PSE directory records read at most
MAX_AFL_RECORDS = 64  # records named by an AFL at most (real cards use under 20)
MAX_PDOL_DATA = 253  # GPO data field is 83 L data, at most 255 bytes
# Applications tried at most from a card's directory (real cards list one to four): a
# hostile directory listing hundreds, each refusing GPO, kept a checkout busy for minutes
MAX_CANDIDATES = 16
# What one read sends the card at most, GET RESPONSE and resends included: a real card
# takes 10 to 40; a hostile one answering each command in 32 pieces is cut off within
# seconds (at 20 ms a command)
MAX_TRANSMITS = 256


@dataclass(frozen=True)
class Candidate:
    """An application found in a directory (Book 1, 12.2.3, table 47)."""

    aid: bytes
    priority: int  # 1..15, 0 = none (lowest)

    @property
    def order(self) -> int:
        return self.priority if self.priority else 16


def scheme_for_aid(aid: bytes) -> str:
    """The payment scheme named by an AID's RID, or ``"other"``."""
    return SCHEMES.get(bytes(aid[:5]), "other")


def read_identity(
    transmit: apdu.Transmit,
    *,
    tokenize: Tokenize,
    accepted_aids: Sequence[bytes] | None = None,
    now: datetime.date,
    unpredictable_number: bytes | None = None,
) -> CardIdentity:
    """Select the card's payment application and return its identity.

    ``accepted_aids`` limits the applications considered (a card AID matches a
    terminal AID it starts with, Book 1 12.3.1 partial selection); by default every
    AID of a known scheme is. ``now`` fills the Transaction Date (``9A``);
    ``unpredictable_number`` (``9F37``, 4 bytes) defaults to ``secrets.token_bytes(4)``.

    Raises only :class:`reader.errors.CardError` subclasses for anything the card
    does: :class:`UnsupportedCardError` when no accepted application exists,
    :class:`CardBlockedError` for a blocked card or application,
    :class:`MalformedResponseError` for data that does not parse or fails Luhn.
    Bad arguments raise ``ValueError``.
    """
    if unpredictable_number is None:
        unpredictable_number = secrets.token_bytes(4)
    if len(unpredictable_number) != 4:
        raise ValueError("the unpredictable number is 4 bytes")
    accepted = tuple(bytes(a) for a in accepted_aids) if accepted_aids is not None else None
    if accepted is not None and any(not 5 <= len(a) <= 16 for a in accepted):
        raise ValueError("an accepted AID is 5 to 16 bytes")
    terminal = dict(TERMINAL_DATA)
    terminal[0x9A] = _bcd_date(now)
    terminal[0x9F37] = bytes(unpredictable_number)

    sent = 0

    def counted(command: bytes) -> tuple[bytes, int]:
        nonlocal sent
        sent += 1
        if sent > MAX_TRANSMITS:
            raise MalformedResponseError(
                f"the card needed more than {MAX_TRANSMITS} commands to read: not a card "
                "we can read"
            )
        return transmit(command)

    def send(command: bytes) -> tuple[bytes, int]:
        return apdu.exchange(counted, command)

    listed = [c.aid for c in _directory_candidates(send, accepted)]
    fallback = accepted if accepted is not None else KNOWN_AIDS
    order = listed + [aid for aid in fallback if aid not in listed]

    blocked = refused = False
    for aid in order:
        fci_bytes, sw = send(apdu.select_by_name(aid))
        if sw in NOT_FOUND:
            continue
        if sw == 0x6283:  # Book 1, 12.4: selected application is blocked; skip it
            blocked = True
            continue
        apdu.check(sw, "selecting the payment application")
        fci = tlv.parse(fci_bytes)
        df_name = _df_name(fci, aid)
        pdol = tlv.find(fci, 0x9F38)
        pdol_data = _pdol_data(pdol.value if pdol else b"", terminal)
        gpo, sw = send(apdu.get_processing_options(pdol_data))
        if sw == 0x6985:  # Book 3, 10.1: conditions not satisfied; try the next one
            refused = True
            continue
        apdu.check(sw, "GET PROCESSING OPTIONS")
        found = _read_application_data(send, gpo)
        identity = _identity(df_name, found, tokenize)
        atc = _counter(found) if TAG_ATC in found else _get_counter(send)
        return dataclasses.replace(identity, atc=atc)
    if blocked:
        raise CardBlockedError("the card's payment application is blocked")
    if refused:
        raise UnsupportedCardError("the card refused to start a transaction")
    raise UnsupportedCardError("this is not a payment card we accept")


def _bcd_date(day: datetime.date) -> bytes:
    return bytes.fromhex(f"{day.year % 100:02d}{day.month:02d}{day.day:02d}")


def _acceptable(aid: bytes, accepted: tuple[bytes, ...] | None) -> bool:
    if not 5 <= len(aid) <= 16:  # Book 1, 12.2.1: an ADF name is 5 to 16 bytes
        return False
    if accepted is None:
        return bytes(aid[:5]) in SCHEMES
    return any(aid.startswith(a) for a in accepted)


def _directory_candidates(
    send: apdu.Transmit, accepted: tuple[bytes, ...] | None
) -> list[Candidate]:
    """Applications listed by the PPSE, else the PSE, best priority first."""
    entries = _ppse_entries(send)
    if not any(_acceptable(c.aid, accepted) for c in entries):
        entries = _pse_entries(send)
    unique: dict[bytes, Candidate] = {}  # the first entry of each AID, in directory order
    for c in entries:
        if c.aid not in unique and _acceptable(c.aid, accepted):
            unique[c.aid] = c
    # sorted() is stable: equal priorities keep the directory's order (Book 1, 12.4)
    return sorted(unique.values(), key=lambda c: c.order)[:MAX_CANDIDATES]


def _entries(templates: list[tlv.Tlv]) -> list[Candidate]:
    out: list[Candidate] = []
    for entry in templates:
        adf = entry.find(0x4F)
        if adf is None:
            continue  # a DDF entry (9D) or junk: Book 1, 12.3.2 says ignore it
        api = entry.find(0x87)
        priority = api.value[0] & 0x0F if api is not None and len(api.value) == 1 else 0
        out.append(Candidate(adf.value, priority))
    return out


def _ppse_entries(send: apdu.Transmit) -> list[Candidate]:
    """EMV Contactless Book B, 3.3.2: FCI 6F / A5 / BF0C / 61 entries."""
    data, sw = send(apdu.select_by_name(PPSE))
    if sw != apdu.SW_OK:
        return []  # a contact-only card: fall through to the PSE
    fci = tlv.parse(data)
    directory = tlv.find(fci, 0xBF0C)
    if directory is None:
        return []
    return _entries([t for t in directory.children if t.tag == 0x61])


def _pse_entries(send: apdu.Transmit) -> list[Candidate]:
    """EMV 4.3 Book 1, 12.3.2: SELECT PSE, then the directory records of SFI ``88``."""
    data, sw = send(apdu.select_by_name(PSE))
    if sw == 0x6A81:
        apdu.check(sw, "selecting the payment system directory")
    if sw != apdu.SW_OK:
        return []
    sfi_tag = tlv.find(tlv.parse(data), 0x88)
    if sfi_tag is None or len(sfi_tag.value) != 1 or not 1 <= sfi_tag.value[0] <= 30:
        return []
    sfi = sfi_tag.value[0]
    out: list[Candidate] = []
    for record in range(1, MAX_DIRECTORY_RECORDS + 1):
        data, sw = send(apdu.read_record(record, sfi))
        if sw == 0x6A83:  # no more records
            break
        if sw != apdu.SW_OK:
            return []  # Book 1, 12.3.2 step 3: abandon the PSE, use the list of AIDs
        items = tlv.parse(data)
        if len(items) != 1 or items[0].tag != 0x70:
            raise MalformedResponseError("a directory record is not a '70' template")
        out += _entries([t for t in items[0].children if t.tag == 0x61])
    return out


def _df_name(fci: tuple[tlv.Tlv, ...], selected: bytes) -> bytes:
    """The DF name (``84``) the card answered with; it may extend the one selected."""
    if not fci or fci[0].tag != 0x6F:
        raise MalformedResponseError("the application's FCI is not a '6F' template")
    name = tlv.find(fci, 0x84)
    if name is None:
        return selected
    if not name.value.startswith(selected) or len(name.value) > 16:
        raise MalformedResponseError("the card answered SELECT with another application")
    return name.value


def _fit(tag: int, value: bytes, length: int) -> bytes:
    """Book 3, 5.4: fit a terminal value to the length the card's DOL asks for."""
    if tag in NUMERIC_TAGS:
        return value[-length:].rjust(length, b"\x00") if length else b""
    return value[:length].ljust(length, b"\x00")


def _pdol_data(pdol: bytes, terminal: dict[int, bytes]) -> bytes:
    """Concatenate the terminal values the PDOL (``9F38``) asks for (Book 3, 5.4)."""
    out = bytearray()
    for tag, length in tlv.parse_dol(pdol):
        if length > MAX_PDOL_DATA:
            raise MalformedResponseError("the card's PDOL asks for too much data")
        out += _fit(tag, terminal.get(tag, b""), length)
        if len(out) > MAX_PDOL_DATA:
            raise MalformedResponseError("the card's PDOL asks for too much data")
    return bytes(out)


def _read_application_data(send: apdu.Transmit, gpo: bytes) -> dict[int, bytes]:
    """Parse the GPO response and read the AFL's records (Book 3, 6.5.8.4, 10.2)."""
    items = tlv.parse(gpo)
    if not items:
        raise MalformedResponseError("the card's GPO response is empty")
    found: dict[int, bytes] = {}
    top = items[0]
    if top.tag == 0x80:  # format 1: AIP (2 bytes) then the AFL
        if len(top.value) < 2:
            raise MalformedResponseError("the card's GPO response has no AIP")
        afl = top.value[2:]
    elif top.tag == 0x77:  # format 2: a template with 82 (AIP), 94 (AFL), maybe more
        afl_tag = top.find(0x94)
        afl = afl_tag.value if afl_tag is not None else b""
        tlv.collect(top.value, WANTED_TAGS, found)
    else:
        raise MalformedResponseError("the card's GPO response is neither format 1 nor 2")
    for sfi, record in _afl_records(afl):
        data, sw = send(apdu.read_record(record, sfi))
        apdu.check(sw, f"reading record {record} of SFI {sfi}")
        leading = tlv.collect(data, WANTED_TAGS, found)
        if sfi <= 10 and leading != 0x70:
            # Book 3, 10.2: records in SFIs 1-10 are '70' templates
            raise MalformedResponseError("an application record is not a '70' template")
    return found


def _counter(found: dict[int, bytes]) -> int | None:
    value = found.get(TAG_ATC)
    return int.from_bytes(value, "big") if value is not None and len(value) == 2 else None


def _get_counter(send: apdu.Transmit) -> int | None:
    """The card's transaction counter by GET DATA (Book 3, 6.5.7), after GPO (which
    counted this transaction); None when the card does not give it. Evidence that
    the card was present, not needed to read it: a refusal is not an error."""
    found: dict[int, bytes] = {}
    try:
        data, sw = send(apdu.get_data(TAG_ATC))  # (61xx for ever is malformed)
        if sw != 0x9000:
            return None
        tlv.collect(data, frozenset({TAG_ATC}), found)
    except MalformedResponseError:
        return None
    return _counter(found)


def _afl_records(afl: bytes) -> list[tuple[int, int]]:
    """Book 3, 10.2: four bytes per entry: SFI<<3, first record, last record, ODA count."""
    if len(afl) % 4:
        raise MalformedResponseError("the card's AFL is not a multiple of four bytes")
    out: list[tuple[int, int]] = []
    for i in range(0, len(afl), 4):
        sfi, first, last, oda = afl[i] >> 3, afl[i + 1], afl[i + 2], afl[i + 3]
        if afl[i] & 0x07 or not 1 <= sfi <= 30 or not 1 <= first <= last:
            raise MalformedResponseError("the card's AFL names impossible records")
        if oda > last - first + 1:
            raise MalformedResponseError("the card's AFL names impossible records")
        out += [(sfi, record) for record in range(first, last + 1)]
        if len(out) > MAX_AFL_RECORDS:
            raise MalformedResponseError("the card's AFL names too many records")
    return out


def _digits(value: bytes) -> str:
    """Compressed numeric (cn, Book 3 Annex B): BCD digits padded with ``F``."""
    text = value.hex().upper().rstrip("F")
    if not text.isdigit():
        raise MalformedResponseError("the card's PAN is not decimal digits")
    return text


def _expiry(yymm: str) -> str:
    """``YYMM`` -> ``YYYY-MM``; Book 4, 6.7.3: YY 50-99 is 19YY, 00-49 is 20YY."""
    if len(yymm) != 4 or not yymm.isdigit() or not 1 <= int(yymm[2:]) <= 12:
        raise MalformedResponseError("the card's expiry date is not a valid YYMM")
    yy = int(yymm[:2])
    return f"{1900 + yy if yy >= 50 else 2000 + yy}-{yymm[2:]}"


def _identity(aid: bytes, found: dict[int, bytes], tokenize: Tokenize) -> CardIdentity:
    """PAN and expiry from ``5A``/``5F24``, else from track 2 (``57``, Book 3 Annex A)."""
    track_pan: str | None = None
    track_expiry: str | None = None
    if TAG_TRACK2 in found:
        track = found[TAG_TRACK2].hex().upper()
        sep = track.find("D")
        if sep < 0:
            raise MalformedResponseError("the card's track 2 data has no separator")
        track_pan, track_expiry = track[:sep], track[sep + 1 : sep + 5]
        if not track_pan.isdigit():
            raise MalformedResponseError("the card's track 2 PAN is not decimal digits")
    if TAG_PAN in found:
        pan = _digits(found[TAG_PAN])
        if track_pan is not None and track_pan != pan:
            raise MalformedResponseError("the card's PAN and track 2 data disagree")
    elif track_pan is not None:
        pan = track_pan
    else:
        raise MalformedResponseError("the card did not give its PAN")
    if TAG_EXPIRY in found:
        yymmdd = found[TAG_EXPIRY].hex()
        if len(yymmdd) != 6:
            raise MalformedResponseError("the card's expiry date is not YYMMDD")
        expiry = _expiry(yymmdd[:4])
    elif track_expiry is not None:
        expiry = _expiry(track_expiry)
    else:
        raise MalformedResponseError("the card did not give its expiry date")
    try:
        return identity_from_pan(scheme_for_aid(aid), aid, pan, expiry, tokenize)
    except ValueError:  # the tokenizer refuses what is not a card number
        raise MalformedResponseError(
            "the card's PAN is not a card number (12 to 19 digits, Luhn check)"
        ) from None
