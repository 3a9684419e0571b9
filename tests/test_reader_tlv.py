"""BER-TLV parsing (EMV 4.3 Book 3, Annex B) and DOLs (Book 3, 5.4)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reader import tlv
from reader.errors import MalformedResponseError
from reader.tlv import Tlv
from tests.deadline import Hang, no_hang


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_primitive_one_byte_tag_and_length() -> None:
    assert tlv.parse(h("5A 08 6212345678901232")) == (Tlv(0x5A, h("6212345678901232")),)


def test_two_and_three_byte_tags() -> None:
    items = tlv.parse(h("9F38 03 9F6604  DF8117 01 E0"))
    assert [(i.tag, i.value) for i in items] == [(0x9F38, h("9F6604")), (0xDF8117, h("E0"))]


def test_long_form_lengths() -> None:
    value = bytes(range(200))
    assert tlv.parse(h("5F20 81 C8") + value)[0].value == value
    big = bytes(300)
    assert tlv.parse(h("70 82 012C") + big)[0].value == big


def test_constructed_tags_are_parsed_recursively() -> None:
    fci = h("6F 1E 84 0E 325041592E5359532E4444463031A5 0C BF0C 09 61 07 4F 05 A000000333")
    (top,) = tlv.parse(fci)
    assert top.constructed and top.tag == 0x6F
    entry = top.find(0x61)
    assert entry is not None and entry.constructed
    assert tlv.find((top,), 0x4F) == Tlv(0x4F, h("A000000333"))
    assert [t.tag for t in tlv.walk((top,))] == [0x6F, 0x84, 0xA5, 0xBF0C, 0x61, 0x4F]


def test_primitive_tags_are_not_recursed_into() -> None:
    # 5A's value happens to look like TLV; it must stay a value
    (item,) = tlv.parse(h("5A 03 5A 01 00"))
    assert item.children == () and not item.constructed


def test_padding_between_objects_is_skipped() -> None:
    items = tlv.parse(h("00 5A 01 12 00 00 5F24 03 301231 FF FF"))
    assert [i.tag for i in items] == [0x5A, 0x5F24]


def test_find_all_and_primitives_first_wins() -> None:
    data = h("70 0A 61 03 4F 01 01 61 03 4F 01 02")
    items = tlv.parse(data)
    assert [t.value for t in tlv.find_all(items, 0x4F)] == [b"\x01", b"\x02"]
    assert tlv.primitives(items) == {0x4F: b"\x01"}
    assert tlv.find(items, 0x9F38) is None


@pytest.mark.parametrize(
    "data",
    [
        "5A",  # tag without length
        "5A 05 0102",  # value shorter than its length
        "9F",  # multi-byte tag cut off
        "9F 81",  # tag says another byte follows, none does
        "9F 81 81 81 01 00",  # tag longer than three bytes
        "5A 80 00 00",  # indefinite length: not EMV
        "5A 84 00000001 00",  # four length bytes: not EMV
        "5A 82 01",  # long-form length cut off
        "70 03 5A 05 01",  # a child overruns its parent
    ],
)
def test_malformed_input_raises_malformed_response(data: str) -> None:
    with pytest.raises(MalformedResponseError):
        tlv.parse(h(data))


def test_nesting_is_bounded() -> None:
    data = b""
    for _ in range(tlv.MAX_DEPTH + 2):
        data = tlv.encode(0x70, data)
    with pytest.raises(MalformedResponseError, match="nested too deeply"):
        tlv.parse(data)


def test_parse_dol() -> None:
    pdol = h("9F66 04 9F02 06 9F37 04 5F2A 02 9A 03")
    assert tlv.parse_dol(pdol) == ((0x9F66, 4), (0x9F02, 6), (0x9F37, 4), (0x5F2A, 2), (0x9A, 3))
    assert tlv.parse_dol(b"") == ()
    with pytest.raises(MalformedResponseError):
        tlv.parse_dol(h("9F66 04 9F"))


def test_encode() -> None:
    assert tlv.encode(0x9F38, h("9F6604")) == h("9F38 03 9F6604")
    assert tlv.encode(0x70, bytes(128))[:3] == h("70 81 80")
    assert tlv.encode(0x70, bytes(256))[:4] == h("70 82 0100")
    with pytest.raises(ValueError):
        tlv.encode_length(-1)


# Strategies: tags valid in EMV encoding (never a padding byte 00/FF first), and trees.
one_byte_primitive = st.integers(0x01, 0xFE).filter(lambda b: b & 0x1F != 0x1F and not b & 0x20)
one_byte_constructed = st.integers(0x20, 0xFE).filter(lambda b: b & 0x1F != 0x1F and b & 0x20)
two_byte = st.tuples(st.sampled_from([0x5F, 0x9F, 0xDF, 0xBF, 0x7F]), st.integers(0x01, 0x7F)).map(
    lambda t: (t[0] << 8) | t[1]
)

primitive_tags = st.one_of(one_byte_primitive, two_byte.filter(lambda t: not t & 0x2000))
constructed_tags = st.one_of(one_byte_constructed, two_byte.filter(lambda t: t & 0x2000))


trees = st.recursive(
    st.builds(lambda t, v: (t, v), primitive_tags, st.binary(max_size=300)),
    lambda children: st.builds(
        lambda t, kids: (t, kids),
        constructed_tags,
        st.lists(children, max_size=4),
    ),
    max_leaves=12,
)


def _encode(node: tuple[int, object]) -> bytes:
    tag, body = node
    if isinstance(body, bytes):
        return tlv.encode(tag, body)
    assert isinstance(body, list)
    return tlv.encode(tag, b"".join(_encode(child) for child in body))


def _shape(node: tuple[int, object]) -> object:
    tag, body = node
    if isinstance(body, bytes):
        return (tag, body)
    assert isinstance(body, list)
    return (tag, [_shape(child) for child in body])


def _parsed_shape(item: Tlv) -> object:
    if item.constructed:
        return (item.tag, [_parsed_shape(child) for child in item.children])
    return (item.tag, item.value)


@given(st.lists(trees, max_size=4))
@settings(max_examples=300)
def test_encode_then_parse_round_trips(nodes: list[tuple[int, object]]) -> None:
    data = b"".join(_encode(n) for n in nodes)
    parsed = tlv.parse(data)
    assert [_parsed_shape(p) for p in parsed] == [_shape(n) for n in nodes]


@given(st.binary(max_size=600))
@settings(max_examples=1000, deadline=500)
def test_arbitrary_bytes_parse_or_raise_malformed_only(data: bytes) -> None:
    try:
        with no_hang(2.0):
            items = tlv.parse(data)
    except MalformedResponseError:
        return
    # whatever parsed fits inside the input
    assert sum(len(i.value) for i in items) <= len(data)


@given(
    st.one_of(
        st.binary(max_size=300),
        st.lists(trees, max_size=4).map(lambda nodes: b"".join(_encode(n) for n in nodes)),
    )
)
@settings(max_examples=500, deadline=500)
def test_collect_agrees_with_parse(data: bytes) -> None:
    """collect() (what a read uses for records) accepts and refuses exactly what
    parse() does, and picks the same values a depth-first walk finds first."""
    tags = frozenset({0x5A, 0x57, 0x5F24, 0x9F38})
    try:
        with no_hang(2.0):
            items = tlv.parse(data)
    except MalformedResponseError:
        with pytest.raises(MalformedResponseError):
            tlv.collect(data, tags, {})
        return
    found: dict[int, bytes] = {}
    leading = tlv.collect(data, tags, found)
    expected = {}
    for item in tlv.walk(items):
        if item.tag in tags and not item.children and item.tag not in expected:
            if not tlv.tag_is_constructed(item.tag):
                expected[item.tag] = item.value
    assert found == expected
    assert leading == (items[0].tag if items else 0)


@given(st.binary(max_size=200))
@settings(max_examples=500, deadline=500)
def test_arbitrary_bytes_as_dol_parse_or_raise_malformed_only(data: bytes) -> None:
    try:
        with no_hang(2.0):
            entries = tlv.parse_dol(data)
    except MalformedResponseError:
        return
    assert len(entries) <= len(data)


def test_no_hang_fails_a_loop_that_never_ends() -> None:
    """The guard the fuzz tests rely on does fire."""
    with pytest.raises(Hang), no_hang(0.05):
        while True:
            pass
