"""The pure card-reading core: APDUs, T=0 transport, selection, GPO, records.

Cards here are scripted fakes that record every APDU, so the tests assert the exact
command sequence (EMV 4.3 Book 1 section 12, Book 3 section 10), or the emulator's
cards used directly as a ``transmit`` function (no pcscd).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pact.cards import PanTokenizer, token_for_pan
from reader import apdu, emv
from reader.emulation.images import PROFILES, build_image
from reader.emulation.responder import EmulatedCard
from reader.errors import (
    CardBlockedError,
    CardError,
    MalformedResponseError,
    UnsupportedCardError,
)
from reader.identity import CardIdentity, identity_from_pan
from reader.tlv import encode
from tests.deadline import no_hang

KEY = bytes(range(32))
PAN = "6212345678901232"
NOW = datetime.date(2026, 11, 28)
UN = bytes.fromhex("A1B2C3D4")
DEBIT = bytes.fromhex("A000000333010101")
CREDIT = bytes.fromhex("A000000333010102")

SELECT_PPSE = "00A404000E325041592E5359532E444446303100"
SELECT_PSE = "00A404000E315041592E5359532E444446303100"
SELECT_DEBIT = "00A4040008A00000033301010100"
SELECT_CREDIT = "00A4040008A00000033301010200"
GPO_NO_PDOL = "80A8000002830000"
GET_ATC = "80CA9F3600"  # GET DATA of the transaction counter, after the records


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


class ScriptedCard:
    """Replays ``(expected command, response)`` pairs and records what it was sent.

    A command that differs from the script fails the test at once.
    """

    def __init__(self, script: Sequence[tuple[str, bytes | str]]) -> None:
        self.script = list(script)
        self.sent: list[bytes] = []

    def transmit(self, command: bytes) -> tuple[bytes, int]:
        self.sent.append(command)
        if not self.script:
            raise AssertionError(f"unscripted APDU {command.hex().upper()}")
        expected, response = self.script.pop(0)
        assert command.hex().upper() == expected.replace(" ", "").upper()
        raw = h(response) if isinstance(response, str) else response
        return raw[:-2], int.from_bytes(raw[-2:], "big")

    def done(self) -> bool:
        return not self.script


def ok(data: bytes) -> bytes:
    return data + b"\x90\x00"


def fci(aid: bytes, *extra: bytes) -> bytes:
    return encode(0x6F, encode(0x84, aid) + encode(0xA5, encode(0x50, b"APP") + b"".join(extra)))


def pse_fci(sfi: int = 1) -> bytes:
    return encode(0x6F, encode(0x84, b"1PAY.SYS.DDF01") + encode(0xA5, encode(0x88, bytes([sfi]))))


def ppse_fci(*entries: bytes) -> bytes:
    return encode(
        0x6F, encode(0x84, b"2PAY.SYS.DDF01") + encode(0xA5, encode(0xBF0C, b"".join(entries)))
    )


def entry(aid: bytes, priority: int | None = None) -> bytes:
    body = encode(0x4F, aid)
    if priority is not None:
        body += encode(0x87, bytes([priority]))
    return encode(0x61, body)


def record(*objects: bytes) -> bytes:
    return encode(0x70, b"".join(objects))


def track2(pan: str, yymm: str) -> bytes:
    digits = f"{pan}D{yymm}2200000000000"
    return encode(0x57, h(digits + "F" * (len(digits) % 2)))


def cn(pan: str) -> bytes:
    return h(pan + "F" * (len(pan) % 2))


def read(card: Callable[[bytes], tuple[bytes, int]], **kwargs: object) -> CardIdentity:
    args: dict[str, object] = {
        "tokenize": PanTokenizer(KEY),
        "now": NOW,
        "unpredictable_number": UN,
    }
    args.update(kwargs)
    return emv.read_identity(card, **args)  # type: ignore[arg-type]


UNIONPAY_RECORDS = [
    ("00B2010C00", ok(record(track2(PAN, "3012"), encode(0x5F20, b"ZHANG/SAN")))),
    ("00B2020C00", ok(record(encode(0x5A, cn(PAN)), encode(0x5F24, h("301231"))))),
]


# ----------------------------------------------------------------------------- APDUs


def test_command_builders_match_the_standard_encodings() -> None:
    assert apdu.select_by_name(b"1PAY.SYS.DDF01").hex().upper() == SELECT_PSE
    assert apdu.select_by_name(DEBIT, next_occurrence=True).hex().upper() == (
        "00A4040208A00000033301010100"
    )
    assert apdu.read_record(3, 2) == h("00B2031400")
    assert apdu.get_processing_options(b"") == h(GPO_NO_PDOL)
    assert apdu.get_processing_options(h("0102")) == h("80A80000048302010200")
    assert apdu.get_response(0x1E) == h("00C000001E")
    with pytest.raises(ValueError):
        apdu.read_record(1, 31)
    with pytest.raises(ValueError):
        apdu.select_by_name(b"")


@pytest.mark.parametrize(
    ("command", "le", "expected"),
    [
        ("00B2010C", 0x22, "00B2010C22"),  # case 1 -> 2
        ("00B2010C00", 0x22, "00B2010C22"),  # case 2
        ("80CA9F1700", 0x04, "80CA9F1704"),
        ("00A404000201 02", 0x10, "00A4040002010210"),  # case 3 -> 4
        ("00A404000201 02 00", 0x10, "00A4040002010210"),  # case 4
    ],
)
def test_with_le(command: str, le: int, expected: str) -> None:
    assert apdu.with_le(h(command), le) == h(expected)


@pytest.mark.parametrize(
    ("sw", "error", "text"),
    [
        (0x6283, CardBlockedError, "blocked"),
        (0x6A81, CardBlockedError, "blocked"),
        (0x6983, CardBlockedError, "blocked"),
        (0x6A82, UnsupportedCardError, "application not found"),
        (0x6A83, MalformedResponseError, "record"),
        (0x6985, UnsupportedCardError, "refused"),
        (0x6F42, MalformedResponseError, "internal error"),  # by SW1
        (0x1234, MalformedResponseError, "unknown status"),
    ],
)
def test_status_word_table(sw: int, error: type[CardError], text: str) -> None:
    err = apdu.error_for(sw, "doing it")
    assert type(err) is error
    assert text in str(err) and f"{sw:04X}" in str(err) and "doing it" in str(err)
    with pytest.raises(error):
        apdu.check(sw)
    apdu.check(0x9000)


def test_t0_61xx_is_followed_by_get_response_and_concatenated() -> None:
    card = ScriptedCard(
        [
            (SELECT_DEBIT, "6110"),
            ("00C0000010", "000102030405060708090A0B0C0D0E0F 6104"),
            ("00C0000004", "10111213 9000"),
        ]
    )
    data, sw = apdu.exchange(card.transmit, h(SELECT_DEBIT))
    assert (data, sw) == (bytes(range(0x14)), 0x9000) and card.done()


def test_t0_6cxx_resends_with_the_right_le() -> None:
    card = ScriptedCard([("00B2010C00", "6C03"), ("00B2010C03", "700100 9000")])
    assert apdu.exchange(card.transmit, h("00B2010C00")) == (h("700100"), 0x9000)
    assert card.done()


def test_t0_a_card_that_never_stops_announcing_data_is_cut_off() -> None:
    calls = []

    def endless(command: bytes) -> tuple[bytes, int]:
        calls.append(command)
        return b"\x00" * 255, 0x61FF

    with pytest.raises(MalformedResponseError):
        apdu.exchange(endless, h(SELECT_DEBIT))
    assert len(calls) <= apdu.MAX_GET_RESPONSE + 1


# --------------------------------------------------------------------- selection


def test_unionpay_contact_card_via_pse_exact_sequence() -> None:
    """PPSE 6A82 -> PSE -> directory records until 6A83 -> best priority -> GPO -> AFL."""
    card = ScriptedCard(
        [
            (SELECT_PPSE, "6A82"),
            (SELECT_PSE, ok(pse_fci())),
            ("00B2010C00", ok(record(entry(CREDIT, 2)))),
            ("00B2020C00", ok(record(entry(DEBIT, 1)))),
            ("00B2030C00", "6A83"),
            (SELECT_DEBIT, ok(fci(DEBIT))),
            (GPO_NO_PDOL, ok(encode(0x80, h("7C00 08010200")))),
            *UNIONPAY_RECORDS,
            (GET_ATC, ok(encode(0x9F36, h("002A")))),
        ]
    )
    identity = read(card.transmit)
    assert card.done()
    assert identity == CardIdentity(
        scheme="unionpay",
        aid=DEBIT,
        pan_last4="1232",
        expiry="2030-12",
        token=token_for_pan(PAN, KEY),
        atc=42,
    )


def test_priority_zero_or_absent_ranks_last_and_ties_keep_directory_order() -> None:
    first, second, third = (bytes.fromhex(f"A00000033301010{i}") for i in (1, 2, 3))
    card = ScriptedCard(
        [
            (SELECT_PPSE, "6A82"),
            (SELECT_PSE, ok(pse_fci(2))),
            # absent, 0 (= none), 3: the one with 3 goes first, then the others in order
            ("00B2011400", ok(record(entry(first), entry(second, 0x80), entry(third, 0x83)))),
            ("00B2021400", "6A83"),
            (apdu.select_by_name(third).hex(), "6A82"),
            (apdu.select_by_name(first).hex(), "6A82"),
            (apdu.select_by_name(second).hex(), ok(fci(second))),
            (GPO_NO_PDOL, ok(encode(0x77, encode(0x82, h("0000")) + track2(PAN, "2901")))),
            (GET_ATC, "6A88"),
        ]
    )
    identity = read(card.transmit, accepted_aids=[first, second, third])
    assert identity.aid == second and identity.expiry == "2029-01" and card.done()


def test_ppse_pdol_is_filled_with_terminal_data() -> None:
    """Book 3, 5.4: known tags get terminal values (numeric ones cut on the left),
    unknown ones zeros; the date comes from ``now``, 9F37 from the parameter."""
    pdol = h("9F6602 9F0204 9A03 9F3704 5F2A02 9F1A02 9505 9C01 9F3501 DF0103")
    card = ScriptedCard(
        [
            (SELECT_PPSE, ok(ppse_fci(entry(DEBIT, 1)))),
            (SELECT_DEBIT, ok(fci(DEBIT, encode(0x9F38, pdol)))),
            (
                "80A800001D831B360000000000261128A1B2C3D4015601560000000000002200000000",
                ok(encode(0x77, encode(0x82, h("0000")) + track2(PAN, "2812"))),
            ),
            (GET_ATC, "6D00"),  # no GET DATA at all: still read, without a counter
        ]
    )
    identity = read(card.transmit)
    assert (identity.aid, identity.pan_last4, identity.expiry) == (DEBIT, "1232", "2028-12")
    assert card.done()


def test_the_list_of_known_aids_is_tried_in_order_when_there_is_no_directory() -> None:
    mastercard = bytes.fromhex("A0000000041010")
    script: list[tuple[str, bytes | str]] = [(SELECT_PPSE, "6A82"), (SELECT_PSE, "6A82")]
    for aid in emv.KNOWN_AIDS[:4]:
        script.append((apdu.select_by_name(aid).hex(), "6A82"))
    script += [
        (apdu.select_by_name(mastercard).hex(), ok(fci(mastercard))),
        (GPO_NO_PDOL, ok(encode(0x80, h("1980 10010100")))),
        (
            "00B2011400",
            ok(record(encode(0x5A, cn("5413330089020011")), encode(0x5F24, h("271130")))),
        ),
        (GET_ATC, "6A88"),
    ]
    card = ScriptedCard(script)
    identity = read(card.transmit)
    assert (identity.scheme, identity.pan_last4, identity.expiry) == (
        "mastercard",
        "0011",
        "2027-11",
    )
    assert card.done()


def test_a_card_without_any_payment_application_is_unsupported() -> None:
    card = ScriptedCard(
        [(SELECT_PPSE, "6A82"), (SELECT_PSE, "6A82")]
        + [(apdu.select_by_name(aid).hex(), "6A82") for aid in emv.KNOWN_AIDS]
    )
    with pytest.raises(UnsupportedCardError, match="this is not a payment card we accept"):
        read(card.transmit)
    assert card.done()


def test_accepted_aids_limit_what_is_selected() -> None:
    card = EmulatedCard(build_image("unionpay", PAN, "2030-12"))
    identity = read(card.transmit, accepted_aids=[CREDIT])
    assert identity.aid == CREDIT
    selected = [c for c, _ in card.log if c[1] == 0xA4]
    assert h(SELECT_DEBIT) not in selected and h(SELECT_CREDIT) in selected


def test_a_card_without_an_accepted_aid_is_unsupported() -> None:
    card = EmulatedCard(build_image("unionpay", PAN, "2030-12"))
    with pytest.raises(UnsupportedCardError, match="not a payment card we accept"):
        read(card.transmit, accepted_aids=[bytes.fromhex("A0000000031010")])


def test_blocked_application_6283() -> None:
    card = EmulatedCard(build_image("blocked", PAN, "2030-12"))
    with pytest.raises(CardBlockedError):
        read(card.transmit)


@pytest.mark.parametrize("where", ["pse", "aid"])
def test_6a81_means_the_card_is_blocked(where: str) -> None:
    if where == "pse":
        script: list[tuple[str, bytes | str]] = [(SELECT_PPSE, "6A82"), (SELECT_PSE, "6A81")]
    else:
        script = [(SELECT_PPSE, "6A82"), (SELECT_PSE, "6A82"), (SELECT_DEBIT, "6A81")]
    card = ScriptedCard(script)
    with pytest.raises(CardBlockedError):
        read(card.transmit)
    assert card.done()


def test_gpo_6985_moves_on_to_the_next_candidate() -> None:
    card = ScriptedCard(
        [
            (SELECT_PPSE, ok(ppse_fci(entry(DEBIT, 1), entry(CREDIT, 2)))),
            (SELECT_DEBIT, ok(fci(DEBIT))),
            (GPO_NO_PDOL, "6985"),
            (SELECT_CREDIT, ok(fci(CREDIT))),
            (GPO_NO_PDOL, ok(encode(0x77, encode(0x82, h("0000")) + track2(PAN, "3012")))),
            (GET_ATC, "6A88"),
        ]
    )
    assert read(card.transmit).aid == CREDIT and card.done()


def test_a_directory_record_error_falls_back_to_the_list_of_aids() -> None:
    card = ScriptedCard(
        [
            (SELECT_PPSE, "6A82"),
            (SELECT_PSE, ok(pse_fci())),
            ("00B2010C00", "6A86"),
            (SELECT_DEBIT, ok(fci(DEBIT))),
            (GPO_NO_PDOL, ok(encode(0x77, track2(PAN, "3012")))),
            (GET_ATC, "6A88"),
        ]
    )
    assert read(card.transmit).aid == DEBIT and card.done()


# ------------------------------------------------------------------ records, PAN


def read_records(*objects: bytes, gpo: bytes | None = None) -> CardIdentity:
    card = ScriptedCard(
        [
            (SELECT_PPSE, ok(ppse_fci(entry(DEBIT, 1)))),
            (SELECT_DEBIT, ok(fci(DEBIT))),
            (GPO_NO_PDOL, ok(gpo if gpo is not None else encode(0x80, h("0000 08010100")))),
            ("00B2010C00", ok(record(*objects))),
            (GET_ATC, "6A88"),
        ]
    )
    return read(card.transmit)


def test_pan_with_padding_and_expiry_from_5f24() -> None:
    amex = "378282246310005"  # 15 digits: cn padded with F
    identity = read_records(encode(0x5A, cn(amex)), encode(0x5F24, h("281031")))
    assert (identity.pan_last4, identity.expiry) == ("0005", "2028-10")


def test_expiry_years_50_to_99_are_19yy() -> None:
    """EMV 4.3 Book 4, 6.7.3 (YY 50-99 -> 19YY)."""
    identity = read_records(encode(0x5A, cn(PAN)), encode(0x5F24, h("991231")))
    assert identity.expiry == "1999-12"


def test_pan_and_expiry_from_track2_when_5a_and_5f24_are_absent() -> None:
    identity = read_records(track2(PAN, "3107"))
    assert (identity.pan_last4, identity.expiry) == ("1232", "2031-07")


def test_data_in_the_format_2_gpo_response_counts() -> None:
    gpo = encode(
        0x77, encode(0x82, h("0000")) + encode(0x94, h("08010100")) + encode(0x5A, cn(PAN))
    )
    identity = read_records(encode(0x5F24, h("300630")), gpo=gpo)
    assert (identity.pan_last4, identity.expiry) == ("1232", "2030-06")


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        ((encode(0x5A, cn("6212345678901233")), encode(0x5F24, h("301231"))), "Luhn"),
        ((encode(0x5A, h("62123456789012AB")), encode(0x5F24, h("301231"))), "digits"),
        ((encode(0x5A, cn("6212345")), encode(0x5F24, h("301231"))), "Luhn"),  # too short
        ((encode(0x5A, cn(PAN)), encode(0x5F24, h("301331"))), "expiry"),  # month 13
        ((encode(0x5A, cn(PAN)),), "expiry"),
        ((encode(0x5F24, h("301231")),), "PAN"),
        ((encode(0x5A, cn(PAN)), track2("6212345678901240", "3012")), "disagree"),
        ((encode(0x57, h("6212345678901232")),), "separator"),
    ],
)
def test_bad_card_data_is_malformed(objects: tuple[bytes, ...], message: str) -> None:
    with pytest.raises(MalformedResponseError, match=message):
        read_records(*objects)


@pytest.mark.parametrize(
    "gpo",
    [
        encode(0x80, h("00")),  # no AIP
        encode(0x80, h("0000 080101")),  # AFL not a multiple of 4
        encode(0x80, h("0000 00010100")),  # SFI 0
        encode(0x80, h("0000 08020100")),  # first record after last
        encode(0x80, h("0000 08010103")),  # more ODA records than records
        encode(0x80, h("0000") + h("08 01 FF 00") * 2),  # too many records
        encode(0x9F10, h("00")),  # neither format 1 nor 2
    ],
)
def test_bad_gpo_responses_are_malformed(gpo: bytes) -> None:
    with pytest.raises(MalformedResponseError):
        read_records(encode(0x5A, cn(PAN)), gpo=gpo)


def test_a_record_outside_a_70_template_is_malformed() -> None:
    card = ScriptedCard(
        [
            (SELECT_PPSE, ok(ppse_fci(entry(DEBIT, 1)))),
            (SELECT_DEBIT, ok(fci(DEBIT))),
            (GPO_NO_PDOL, ok(encode(0x80, h("0000 08010100")))),
            ("00B2010C00", ok(encode(0x5A, cn(PAN)))),
        ]
    )
    with pytest.raises(MalformedResponseError, match="70"):
        read(card.transmit)


def test_the_pan_goes_only_into_identity_from_pan(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[object, ...]] = []
    real = identity_from_pan

    def spy(*args: object) -> CardIdentity:
        seen.append(args)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(emv, "identity_from_pan", spy)
    identity = read(EmulatedCard(build_image("unionpay", PAN, "2030-12")).transmit)
    assert [args[:4] for args in seen] == [("unionpay", DEBIT, PAN, "2030-12")]
    assert isinstance(seen[0][4], PanTokenizer) and seen[0][4](PAN) == token_for_pan(PAN, KEY)
    text = repr(identity) + str(identity.as_json())
    for secret in (PAN, PAN[:12], "ZHANG", "110101199003077777"):
        assert secret not in text


def test_no_token_key_gives_no_token() -> None:
    card = EmulatedCard(build_image("unionpay", PAN, "2030-12"))
    identity = read(card.transmit, tokenize=PanTokenizer(None))
    assert identity.token is None and identity.pan_last4 == "1232"


def test_bad_arguments_are_value_errors() -> None:
    card = ScriptedCard([])
    with pytest.raises(ValueError, match="32 bytes"):
        read(card.transmit, tokenize=PanTokenizer(b"short"))
    with pytest.raises(ValueError, match="5 to 16"):
        read(card.transmit, accepted_aids=[b"\xa0"])
    with pytest.raises(ValueError, match="4 bytes"):
        read(card.transmit, unpredictable_number=b"\x00")
    assert card.sent == []


# -------------------------------------------------------- the emulator's profiles


@pytest.mark.parametrize(
    ("profile", "outcome"),
    [
        ("unionpay", ("unionpay", DEBIT)),
        ("unionpay-t0", ("unionpay", DEBIT)),
        ("contactless", ("unionpay", DEBIT)),
        ("visa", ("visa", bytes.fromhex("A0000000031010"))),
        ("blocked", CardBlockedError),
        ("transit", UnsupportedCardError),
    ],
)
def test_profiles_read_through_the_pure_core(profile: str, outcome: object) -> None:
    card = EmulatedCard(build_image(profile, PAN, "2031-02"))
    if isinstance(outcome, tuple):
        identity = read(card.transmit)
        assert (identity.scheme, identity.aid) == outcome
        assert (identity.pan_last4, identity.expiry) == ("1232", "2031-02")
        assert identity.token == token_for_pan(PAN, KEY)
    else:
        assert isinstance(outcome, type)
        with pytest.raises(outcome):
            read(card.transmit)


def test_t0_profile_needs_the_transport_rules() -> None:
    card = EmulatedCard(build_image("unionpay-t0", PAN, "2030-12"))
    read(card.transmit)
    statuses = [r[-2] for _, r in card.log]
    assert 0x61 in statuses and 0x6C in statuses


def test_contactless_profile_receives_the_pdol_data() -> None:
    card = EmulatedCard(build_image("contactless", PAN, "2030-12"))
    read(card.transmit)
    assert card.pdol_data is not None and len(card.pdol_data) == 33
    assert card.pdol_data[:4] == h("36000000") and card.pdol_data[-4:] == UN
    assert h("261128") in card.pdol_data


def test_a_card_whose_pan_fails_the_luhn_check_is_refused_by_the_reader() -> None:
    """The emulator builds any card (`unioncard card emulate` refuses such a number);
    the reader refuses it through the tokenizer, as a malformed card."""
    card = EmulatedCard(build_image("unionpay", "6212345678901233", "2030-12"))
    with pytest.raises(MalformedResponseError, match="Luhn"):
        read(card.transmit)


@pytest.mark.parametrize(
    ("pan", "expiry", "profile", "message"),
    [
        ("62123456789O1232", "2030-12", "unionpay", "decimal digits"),
        ("62123", "2030-12", "unionpay", "12 to 19"),
        (PAN, "12/30", "unionpay", "YYYY-MM"),
        (PAN, "2030-13", "unionpay", "valid month"),
        (PAN, "2030-12", "diners", "unknown card profile"),
    ],
)
def test_emulator_rejects_bad_cards(pan: str, expiry: str, profile: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_image(profile, pan, expiry)


# -------------------------------------------------------------------- fuzzing

STATUS_WORDS = st.one_of(
    st.sampled_from([0x9000, 0x6A82, 0x6A83, 0x6283, 0x6A81, 0x6985, 0x6100, 0x6C00]),
    st.integers(0x6100, 0x61FF),
    st.integers(0x6C00, 0x6CFF),
    st.integers(0, 0xFFFF),
)


@given(st.data())
@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_card_answers_raise_only_card_errors(data: st.DataObject) -> None:
    calls = 0

    def transmit(command: bytes) -> tuple[bytes, int]:
        nonlocal calls
        calls += 1
        assert calls < 1000, "the reader keeps talking to a nonsense card"
        body = data.draw(st.binary(max_size=80))
        return body, data.draw(STATUS_WORDS)

    try:
        with no_hang(5.0):
            read(transmit)
    except CardError:
        pass


@given(st.data(), st.sampled_from(sorted(PROFILES)))
@settings(max_examples=600, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
def test_corrupted_real_card_answers_raise_only_card_errors(
    data: st.DataObject, profile: str
) -> None:
    """Mutate the emulator's realistic answers, so the fuzz reaches deep into EMV."""
    card = EmulatedCard(build_image(profile, PAN, "2030-12"))
    calls = 0

    def transmit(command: bytes) -> tuple[bytes, int]:
        nonlocal calls
        calls += 1
        assert calls < 1000, "the reader keeps talking to a broken card"
        rapdu = card.respond(command) or b"\x6f\x00"
        how = data.draw(st.integers(0, 9))
        if how == 1 and len(rapdu) > 2:  # cut the data short
            cut = data.draw(st.integers(0, len(rapdu) - 2))
            rapdu = rapdu[:cut] + rapdu[-2:]
        elif how == 2 and len(rapdu) > 2:  # change one byte
            i = data.draw(st.integers(0, len(rapdu) - 3))
            rapdu = rapdu[:i] + bytes([data.draw(st.integers(0, 255))]) + rapdu[i + 1 :]
        elif how == 3:  # another status word
            rapdu = rapdu[:-2] + data.draw(STATUS_WORDS).to_bytes(2, "big")
        elif how == 4:  # insert junk
            i = data.draw(st.integers(0, len(rapdu) - 2))
            rapdu = rapdu[:i] + data.draw(st.binary(min_size=1, max_size=8)) + rapdu[i:]
        return rapdu[:-2], int.from_bytes(rapdu[-2:], "big")

    try:
        with no_hang(5.0):
            identity = read(transmit)
    except CardError:
        return
    assert identity.pan_last4.isdigit() and len(identity.pan_last4) == 4


# ------------------------------------------------------------ the transaction counter


def test_the_counter_is_read_after_gpo_and_counts_each_transaction() -> None:
    """Card-presence evidence: the ATC (9F36) goes up by one at every GPO, as real
    cards do, and the reader reads it by GET DATA after the records."""
    card = EmulatedCard(build_image("unionpay", PAN, "2030-12"))
    first, second = read(card.transmit), read(card.transmit)
    assert first.atc is not None and second.atc == first.atc + 1
    assert card.log[-1][0] == h(GET_ATC) and first.as_json()["atc"] == first.atc


def test_a_contactless_card_gives_its_counter_in_the_gpo_answer() -> None:
    card = EmulatedCard(build_image("contactless", PAN, "2030-12"))
    first, second = read(card.transmit), read(card.transmit)
    assert first.atc is not None and second.atc == first.atc + 1
    assert h(GET_ATC) not in [c for c, _ in card.log]  # no GET DATA needed


def test_a_card_that_refuses_get_data_still_reads_without_a_counter() -> None:
    card = EmulatedCard(build_image("no-get-data", PAN, "2030-12"))
    identity = read(card.transmit)
    assert identity.pan_last4 == "1232" and identity.atc is None
    assert card.log[-1] == (h(GET_ATC), h("6A88"))


@pytest.mark.parametrize("answer", [ok(h("9F3601FF")), ok(h("9F36")), ok(b""), ok(h("DF01020001"))])
def test_a_garbled_counter_is_no_counter(answer: bytes) -> None:
    card = ScriptedCard(
        [
            (SELECT_PPSE, ok(ppse_fci(entry(DEBIT, 1)))),
            (SELECT_DEBIT, ok(fci(DEBIT))),
            (GPO_NO_PDOL, ok(encode(0x77, track2(PAN, "3012")))),
            (GET_ATC, answer),
        ]
    )
    assert read(card.transmit).atc is None and card.done()


def test_a_counter_announcing_more_data_for_ever_is_no_counter() -> None:
    """GET DATA answered 61xx round after round: the card was read, with no counter
    (it failed the whole read)."""
    script = [
        (SELECT_PPSE, ok(ppse_fci(entry(DEBIT, 1)))),
        (SELECT_DEBIT, ok(fci(DEBIT))),
        (GPO_NO_PDOL, ok(encode(0x77, track2(PAN, "3012")))),
        (GET_ATC, "6101"),
    ]
    script += [("00C0000001", "006101")] * (apdu.MAX_GET_RESPONSE + 1)
    card = ScriptedCard(script)
    identity = read(card.transmit)
    assert identity.pan_last4 == "1232" and identity.atc is None


class HostileDirectory:
    """A card whose directory lists ``count`` applications, each of which it selects
    and then refuses to start (GPO 6985), answering every command in T=0 pieces when
    ``chatty``."""

    def __init__(self, count: int, chatty: bool = False) -> None:
        self.aids = [DEBIT[:5] + n.to_bytes(3, "big") for n in range(count)]
        self.sent = 0
        self.chatty = chatty
        self.pending = b""

    def transmit(self, command: bytes) -> tuple[bytes, int]:
        self.sent += 1
        ins = command[1]
        if ins == 0xC0:  # GET RESPONSE: 1 byte at a time while it lasts
            piece, self.pending = self.pending[:1], self.pending[1:]
            return piece, (0x6100 | 1) if self.pending else 0x9000
        if ins == 0xA4 and command[5 : 5 + command[4]] == b"2PAY.SYS.DDF01":
            data = ppse_fci(*(entry(aid, 1) for aid in self.aids))
        elif ins == 0xA4:
            data = fci(command[5 : 5 + command[4]])
        elif ins == 0xA8:
            return b"", 0x6985
        else:
            return b"", 0x6D00
        if self.chatty:
            self.pending = data
            return b"", 0x6101
        return data, 0x9000


@pytest.mark.parametrize("chatty", [False, True])
def test_a_directory_of_hundreds_of_refusing_applications_is_cut_short(chatty: bool) -> None:
    """A hostile directory (hundreds of AIDs, each refusing GPO) took thousands of
    commands, minutes of a checkout: the read tries a few and ends in one line."""
    card = HostileDirectory(600, chatty)
    with no_hang(10), pytest.raises((UnsupportedCardError, MalformedResponseError)) as caught:
        read(card.transmit)
    assert card.sent <= emv.MAX_TRANSMITS
    assert "\n" not in str(caught.value)
    if not chatty:  # each candidate is a SELECT and a GPO
        assert card.sent <= 1 + 2 * (emv.MAX_CANDIDATES + len(emv.KNOWN_AIDS))


def test_a_real_card_reads_well_within_the_budget() -> None:
    for profile in PROFILES:
        card = EmulatedCard(build_image(profile, PAN, "2030-12"))
        try:
            read(card.transmit)
        except (CardError, ConnectionResetError):
            pass  # the profiles of refusing or pulled cards: what matters is how much they took
        assert len(card.log) <= emv.MAX_TRANSMITS // 4, profile


def test_the_t0_emulator_sends_a_256_byte_record() -> None:
    """Le = 00 asks for 256 bytes: the emulated T=0 card answered 6C00 to it for ever."""
    image = build_image("unionpay-t0", PAN, "2030-12")
    app = next(a for a in image.applications if a.name == DEBIT)
    (key, first), *_ = sorted(app.records.items())
    inner = first[3:] if first[1] == 0x81 else first[2:]
    filler = 256 - 4 - len(inner) - 3  # 70 82 LL LL, the record's objects, DF01 LL
    app.records[key] = encode(0x70, inner + encode(0xDF01, bytes(filler)))
    assert len(app.records[key]) == 256
    card = EmulatedCard(image)
    assert read(card.transmit).pan_last4 == "1232"
