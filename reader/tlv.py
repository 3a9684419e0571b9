"""BER-TLV as EMV uses it (EMV 4.3 Book 3, Annex B; ISO/IEC 8825-1).

Pure functions over bytes. Every malformation raises
:class:`reader.errors.MalformedResponseError`; nothing else escapes, and every loop
is bounded by the length of the input, so a hostile card cannot make the parser hang
or recurse without limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

from reader.errors import MalformedResponseError

MAX_TAG_BYTES = 3  # ISO/IEC 7816-4, 5.2.2.1: a tag field is one to three bytes
MAX_LENGTH_BYTES = 3  # EMV 4.3 Book 3, B2: lengths up to 65535 in practice ('82'); allow '83'
MAX_DEPTH = 16  # nesting deeper than this is never EMV data
PADDING = (0x00, 0xFF)  # EMV 4.3 Book 3, B1; ISO/IEC 7816-4, 5.2.2.1


class Tlv(NamedTuple):
    """One data object: its tag as an integer (``0x9F38``), its value bytes, and,
    for a constructed tag, the data objects inside it.

    A named tuple rather than a dataclass: a read makes dozens of these, and a
    tuple is several times cheaper to create."""

    tag: int
    value: bytes
    children: tuple[Tlv, ...] = ()

    @property
    def constructed(self) -> bool:
        """Bit 6 of the first tag byte (EMV 4.3 Book 3, B1, table 35)."""
        return bool(_first_tag_byte(self.tag) & 0x20)

    def find(self, tag: int) -> Tlv | None:
        """The first data object with ``tag`` inside this one, depth first."""
        return find(self.children, tag)


def _first_tag_byte(tag: int) -> int:
    while tag > 0xFF:
        tag >>= 8
    return tag


def tag_is_constructed(tag: int) -> bool:
    """Whether a tag (as an integer) denotes a constructed data object."""
    return bool(_first_tag_byte(tag) & 0x20)


def read_tag(data: bytes, pos: int) -> tuple[int, int]:
    """Decode the tag at ``data[pos]``; return ``(tag, next_pos)``.

    EMV 4.3 Book 3, B1: if bits b5..b1 of the first byte are all 1, subsequent
    bytes follow, each with b8 set when yet another follows.
    """
    if pos >= len(data):
        raise MalformedResponseError("TLV data ends where a tag was expected")
    first = data[pos]
    tag = first
    pos += 1
    if first & 0x1F == 0x1F:
        count = 1
        while True:
            if pos >= len(data):
                raise MalformedResponseError("TLV data ends inside a multi-byte tag")
            byte = data[pos]
            tag = (tag << 8) | byte
            pos += 1
            count += 1
            if not byte & 0x80:
                break
            if count >= MAX_TAG_BYTES:
                raise MalformedResponseError("TLV tag is longer than three bytes")
    return tag, pos


def read_length(data: bytes, pos: int) -> tuple[int, int]:
    """Decode the length at ``data[pos]``; return ``(length, next_pos)``.

    EMV 4.3 Book 3, B2: one byte ``00``..``7F``, or ``81``..``83`` followed by that
    many length bytes. The indefinite form ``80`` is not allowed in EMV.
    """
    if pos >= len(data):
        raise MalformedResponseError("TLV data ends where a length was expected")
    first = data[pos]
    pos += 1
    if first < 0x80:
        return first, pos
    count = first & 0x7F
    if count == 0 or count > MAX_LENGTH_BYTES:
        raise MalformedResponseError(f"TLV length byte {first:02X} is not allowed in EMV")
    if pos + count > len(data):
        raise MalformedResponseError("TLV data ends inside a long-form length")
    return int.from_bytes(data[pos : pos + count], "big"), pos + count


def parse(data: bytes) -> tuple[Tlv, ...]:
    """Parse a sequence of BER-TLV data objects, recursing into constructed ones.

    ``00`` and ``FF`` bytes before, between and after data objects are padding and
    are skipped (EMV 4.3 Book 3, B1; ISO/IEC 7816-4, 5.2.2.1).
    """
    return _parse(bytes(data), 0)[0]


def collect(data: bytes, tags: frozenset[int], into: dict[int, bytes]) -> int:
    """Store in ``into`` the value of each primitive data object in ``data`` (at any
    depth) whose tag is in ``tags`` and not in ``into`` yet, building nothing else;
    return the tag of the first top-level object (0 when there is none).

    Checks ``data`` exactly as :func:`parse` does; a read uses it for the records
    it only picks a few tags from.
    """
    _, first = _parse(bytes(data), 0, (tags, into))
    return first


def _parse(
    data: bytes, depth: int, collecting: tuple[frozenset[int], dict[int, bytes]] | None = None
) -> tuple[tuple[Tlv, ...], int]:
    """The data objects in ``data`` (none when ``collecting``) and the first one's tag."""
    if depth > MAX_DEPTH:
        raise MalformedResponseError("TLV data is nested too deeply")
    out: list[Tlv] = []
    leading = 0
    pos = 0
    end = len(data)
    while pos < end:
        first = data[pos]
        if first == 0x00 or first == 0xFF:  # PADDING
            pos += 1
            continue
        # The common cases inline (a card answer has dozens of objects per read):
        # a one- or two-byte tag and a one-byte length; the rest goes the long way.
        if first & 0x1F != 0x1F:
            tag, pos = first, pos + 1
        elif pos + 1 < end and not data[pos + 1] & 0x80:
            tag, pos = (first << 8) | data[pos + 1], pos + 2
        else:
            tag, pos = read_tag(data, pos)
        if pos < end and data[pos] < 0x80:
            length, pos = data[pos], pos + 1
        else:
            length, pos = read_length(data, pos)
        if pos + length > end:
            raise MalformedResponseError(
                f"TLV tag {tag:X} says {length} bytes but only {end - pos} remain"
            )
        value = data[pos : pos + length]
        pos += length
        leading = leading or tag
        constructed = first & 0x20  # bit 6 of the first tag byte (Book 3, B1, table 35)
        if collecting is None:
            children = _parse(value, depth + 1)[0] if constructed else ()
            out.append(Tlv(tag, value, children))
        elif constructed:
            _parse(value, depth + 1, collecting)
        elif tag in collecting[0] and tag not in collecting[1]:
            collecting[1][tag] = value
    return tuple(out), leading


def walk(tlvs: Iterable[Tlv]) -> Iterator[Tlv]:
    """Every data object in ``tlvs`` and inside them, depth first, in order."""
    stack = [iter(tlvs)]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        yield item
        if item.children:
            stack.append(iter(item.children))


def find(tlvs: Iterable[Tlv], tag: int) -> Tlv | None:
    """The first data object with ``tag`` anywhere in ``tlvs`` (depth first)."""
    for item in tlvs:  # recursion is bounded: parse() refuses nesting beyond MAX_DEPTH
        if item.tag == tag:
            return item
        if item.children:
            inner = find(item.children, tag)
            if inner is not None:
                return inner
    return None


def find_all(tlvs: Iterable[Tlv], tag: int) -> list[Tlv]:
    """Every data object with ``tag`` anywhere in ``tlvs``, in order."""
    return [item for item in walk(tlvs) if item.tag == tag]


def primitives(tlvs: Iterable[Tlv]) -> dict[int, bytes]:
    """The primitive data objects in ``tlvs`` as ``{tag: value}``; the first wins.

    EMV 4.3 Book 3, 10.2 forbids a data object appearing twice in the records read,
    so "first wins" only matters for malformed cards.
    """
    out: dict[int, bytes] = {}
    for item in walk(tlvs):
        if not tag_is_constructed(item.tag) and item.tag not in out:
            out[item.tag] = item.value
    return out


def parse_dol(data: bytes) -> tuple[tuple[int, int], ...]:
    """Parse a Data Object List into ``((tag, length), ...)``.

    EMV 4.3 Book 3, 5.4: a DOL (e.g. the PDOL, tag ``9F38``) is a concatenation of
    tags and lengths, without values.
    """
    data = bytes(data)
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < len(data):
        tag, pos = read_tag(data, pos)
        length, pos = read_length(data, pos)
        out.append((tag, length))
    return tuple(out)


def encode_tag(tag: int) -> bytes:
    """The bytes of a tag given as an integer (``0x9F38`` -> ``9F 38``)."""
    if tag < 0:
        raise ValueError("a tag is a non-negative integer")
    return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")


def encode_length(length: int) -> bytes:
    """BER length field (EMV 4.3 Book 3, B2)."""
    if length < 0 or length > 0xFFFFFF:
        raise ValueError("a TLV length is 0 to 16777215")
    if length < 0x80:
        return bytes([length])
    size = (length.bit_length() + 7) // 8
    return bytes([0x80 | size]) + length.to_bytes(size, "big")


def encode(tag: int, value: bytes) -> bytes:
    """One data object: tag, length, value."""
    return encode_tag(tag) + encode_length(len(value)) + bytes(value)
