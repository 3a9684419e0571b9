"""The privacy scan (issue 16 item 6): no card number in any file the product wrote.

A card number (PAN) is never written anywhere: not to a database or its WAL, a log, an
upload, an export, a bundle or a receipt. This scanner reads every file under a folder,
as bytes, and reports each card number it finds:

- **ASCII**: every run of 13 to 19 digits (not part of a longer run of digits) that
  passes the Luhn check. A run inside a hexadecimal string that has letters too (a
  hash, a signature, a key id, a token: 16 hex characters or more) is not a number
  anyone wrote and is skipped, or every SHA-256 in the journal would count; so is the
  value of a JSON field named ``...key_id`` or ``keyid`` (a hash's hex digits, which
  may all be decimal). A run
  glued to a time stamp after it (a database row's text fields touch) loses the year,
  and one that starts a UUID's last group loses that group's 12 digits.
- **Packed BCD**, as a card's own records hold a PAN (EMV tag ``5A``, and tag ``57``,
  Track 2 equivalent data, where the PAN ends at the separator ``D``): a ``5A`` or
  ``57`` tag and its length followed by a Luhn-valid number of 13 to 19 digits; and
  every PAN in ``known`` (the test cards, the demo's cards) packed, at either nibble
  alignment. Random binary bytes (roster tokens, signatures) hold Luhn-valid decimal
  nibble runs by chance every few hundred kilobytes, so a BCD number is looked for
  where a card would put it, and the cards we know of anywhere.

Files a person gives the product are not its output and are not scanned: a members
file (its first line starts ``member_id,``: the union's own list, which the import
reads and never writes), and whatever the caller excludes.

``python -m tests.privacy FOLDER ...`` scans from the command line (``make demo`` runs
it over the demo's folder); it prints one line per finding, never the number itself
(its first six and last four digits are not shown either: only where it is and its
length), and exits 1 when there is any.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pact.cards import luhn_ok

ASCII_RUN = re.compile(rb"(?<![0-9])[0-9]{13,19}(?![0-9])")
HEX_TOKEN = re.compile(rb"[0-9a-fA-F]{16,}")
ISO_DATE_AFTER = re.compile(rb"-[01][0-9]-[0-3][0-9]T")
# the value of a key id field: 16 hex digits of a hash, all decimal 1 time in 1,800 and
# then Luhn-valid 1 time in 10 (a fresh token key per test made the suite's scan fail
# about once in a few hundred runs on "token_key_id":"9110545412890016")
KEY_ID_BEFORE = re.compile(rb'key_?id"\s*:\s*"$')
# a UUID's first four groups: the digits after them start with its last group (12 hex
# digits, all decimal 1 time in 280), which a database row may glue to the next field's
# bytes (a sale id's index entry and the row's number: "...-3170490940986")
UUID_BEFORE = re.compile(rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-$")
BCD_TAGS = (b"\x5a", b"\x57")  # EMV: Application PAN; Track 2 Equivalent Data
# the card schemes' number ranges (UnionPay 62 and 81, Visa, Mastercard, Amex, JCB, Discover)
SCHEMES = re.compile(r"62|81|4|5[1-5]|2[2-7]|3[47]|35|60|65")
MEMBERS_HEADER = b"member_id,"


@dataclass(frozen=True)
class Finding:
    path: Path
    offset: int
    form: str  # "ascii", "bcd", "bcd-tlv"
    length: int  # digits

    def line(self) -> str:
        return f"{self.path}: a {self.length}-digit card number ({self.form}) at byte {self.offset}"


def _bcd(pan: str) -> list[bytes]:
    """``pan`` packed two digits a byte, the whole bytes of it at either nibble alignment
    (from its first digit, and from its second: whatever pads it)."""
    first = pan if len(pan) % 2 == 0 else pan[:-1]
    second = pan[1:] if len(pan) % 2 == 1 else pan[1:-1]
    return [bytes.fromhex(first), bytes.fromhex(second)]


def _ascii(data: bytes) -> Iterator[tuple[int, int]]:
    hex_spans = [(m.start(), m.end()) for m in HEX_TOKEN.finditer(data)]
    for match in ASCII_RUN.finditer(data):
        start, end = match.span()
        if any(a <= start and end <= b and b - a > end - start for a, b in hex_spans):
            continue  # digits inside a hex string of 16 or more (a key id, a hash)
        if KEY_ID_BEFORE.search(data, max(0, start - 32), start):
            continue  # a key id field's value (a hash's hex that has no letters)
        digits = match.group().decode()
        if ISO_DATE_AFTER.match(data, end):  # a database row glues a text field to a
            digits = digits[:-4]  # time stamp that follows it: the year is not the number's
        if UUID_BEFORE.search(data, max(0, start - 24), start):
            digits = digits[12:]  # a UUID's last group: the rest is what follows it
        if len(digits) >= 13 and luhn_ok(digits):
            yield start, len(digits)


def _bcd_tlv(data: bytes) -> Iterator[tuple[int, int]]:
    """A PAN as a card's record holds it: the tag, its length, the PAN in BCD (F-padded;
    in Track 2 up to the separator D), from a card scheme's range. The tags' bytes are
    the letters Z and W: one right after an ASCII digit is a time stamp's Z."""
    for tag in BCD_TAGS:
        at = data.find(tag)
        while at != -1:
            length = data[at + 1] if at + 1 < len(data) else 0
            value = data[at + 2 : at + 2 + length]
            before = data[at - 1 : at]
            track2 = tag == b"\x57"  # its PAN ends at the separator D
            if (
                7 <= length <= 19
                and len(value) == length
                and not before.isdigit()
                and (not track2 or "d" in value.hex())
            ):
                digits = value.hex().split("d")[0].rstrip("f")
                if (
                    15 <= len(digits) <= 19
                    and digits.isdigit()
                    and SCHEMES.match(digits)
                    and luhn_ok(digits)
                ):
                    yield at, len(digits)
            at = data.find(tag, at + 1)


def scan_bytes(data: bytes, known: Iterable[str] = ()) -> list[tuple[int, str, int]]:
    """Each card number in ``data``: (offset, form, digits)."""
    found = [(at, "ascii", n) for at, n in _ascii(data)]
    found += [(at, "bcd-tlv", n) for at, n in _bcd_tlv(data)]
    for pan in known:
        for packed in _bcd(pan):
            if len(packed) >= 6:
                at = data.find(packed)
                if at != -1:
                    found.append((at, "bcd", len(pan)))
    return sorted(set(found))


def is_input(path: Path, head: bytes) -> bool:
    """A file a person gives the product (a members file), not one it wrote."""
    return head.startswith(MEMBERS_HEADER) or head.startswith(b"\xef\xbb\xbf" + MEMBERS_HEADER)


def scan_tree(
    roots: Iterable[Path], known: Iterable[str] = (), exclude: Iterable[Path] = ()
) -> list[Finding]:
    """Every card number in the files under ``roots`` (symbolic links not followed)."""
    known = tuple(known)
    skipped = {p.resolve() for p in exclude}
    findings: list[Finding] = []
    for root in roots:
        for path in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if path.is_symlink() or not path.is_file() or path.resolve() in skipped:
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if is_input(path, data[:16]):
                continue
            findings += [Finding(path, at, form, n) for at, form, n in scan_bytes(data, known)]
    return findings


def main(argv: list[str]) -> int:
    from terminal.democards import DEMO_CARDS  # the demo's cards: looked for packed too
    from tests.helpers import MEMBER_PAN, OTHER_PAN

    known = [MEMBER_PAN, OTHER_PAN, *(card.pan for card in DEMO_CARDS.values())]
    findings = scan_tree([Path(a) for a in argv], known)
    for finding in findings:
        print(finding.line())
    if not findings:
        print(f"privacy scan: no card number in {', '.join(argv)}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
