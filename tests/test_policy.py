"""The discount engine (pure) and the signed policy."""

from __future__ import annotations

import ast
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from central.keys import UnionKeys
from terminal.errors import PolicyError
from terminal.money import fen, parse_yuan
from terminal.policy import quote, verify_policy
from terminal.roster import Membership
from tests.helpers import policy_bytes, trusted

MEMBER = Membership("active", 1, None)


def _policy(keys, clock, **kw):
    return verify_policy(policy_bytes(keys, clock(), **kw), trusted(keys), merchant_id="M0001")


@pytest.mark.parametrize(
    "gross, bp, rounding, discount",
    [
        (12800, 500, "half-up", 640),
        (10, 500, "half-up", 1),  # 0.5 fen rounds up
        (9, 500, "half-up", 0),  # 0.45 fen rounds down
        (10, 500, "down", 0),
        (19999, 1000, "down", 1999),
        (100, 10000, "half-up", 100),  # free: never more than the amount
    ],
)
def test_percent_rounding(union_keys, clock, gross, bp, rounding, discount) -> None:
    policy = _policy(union_keys, clock, basis_points=bp, rounding=rounding)
    q = quote(gross, MEMBER, policy, clock())
    assert (q.discount, q.net) == (discount, gross - discount)


@pytest.mark.parametrize(
    "member, status, lifetime, reason",
    [
        (None, "active", timedelta(days=1), "not a member"),
        (Membership("suspended", 1, None), "active", timedelta(days=1), "membership suspended"),
        (Membership("active", 1, date(2020, 1, 1)), "active", timedelta(days=1), "ended"),
        (MEMBER, "exited", timedelta(days=1), "merchant exited"),
        (MEMBER, "suspended", timedelta(days=1), "merchant suspended"),
        (MEMBER, "active", timedelta(seconds=-1), "expired"),
    ],
)
def test_no_discount_with_reason(union_keys, clock, member, status, lifetime, reason) -> None:
    # a policy that expired before "now": issue it in the past
    policy = verify_policy(
        policy_bytes(
            union_keys,
            clock() - timedelta(days=2),
            status=status,
            lifetime=timedelta(days=2) + lifetime,
        ),
        trusted(union_keys),
        merchant_id="M0001",
    )
    q = quote(5000, member, policy, clock())
    assert q.discount == 0 and q.net == 5000
    assert any(reason in r for r in q.reasons), q.reasons


def test_policy_for_another_merchant_is_refused(union_keys, clock) -> None:
    with pytest.raises(PolicyError, match="for merchant M0002"):
        verify_policy(
            policy_bytes(union_keys, clock(), merchant_id="M0002"),
            trusted(union_keys),
            merchant_id="M0001",
        )


def test_policy_rollback_and_tamper_refused(union_keys: UnionKeys, clock) -> None:
    data = policy_bytes(union_keys, clock(), version=3)
    with pytest.raises(PolicyError, match="rollback"):
        verify_policy(data, trusted(union_keys), merchant_id="M0001", installed_version=3)
    tampered = data.replace(b'"basis_points":500', b'"basis_points":900')
    with pytest.raises(PolicyError, match="bad signature"):
        verify_policy(tampered, trusted(union_keys), merchant_id="M0001")


@given(
    gross=st.integers(0, 10**9),
    bp=st.integers(0, 10000),
    rounding=st.sampled_from(["half-up", "down"]),
)
def test_quote_invariants(gross: int, bp: int, rounding: str) -> None:
    from datetime import UTC, datetime

    from terminal.policy import Policy, Rule

    now = datetime(2026, 1, 1, tzinfo=UTC)
    policy = Policy(
        "M",
        "m",
        "active",
        1,
        now,
        now + timedelta(days=1),
        rounding,
        (Rule("r", "percent_off", bp),),
    )
    q = quote(gross, MEMBER, policy, now)
    assert 0 <= q.discount <= gross
    assert q.gross - q.discount == q.net
    assert q == quote(gross, MEMBER, policy, now)
    assert all(isinstance(v, int) for v in (q.gross, q.discount, q.net))


@pytest.mark.parametrize(
    "text, value", [("128", 12800), ("128.5", 12850), ("0.01", 1), ("1,280.00", 128000)]
)
def test_parse_yuan(text: str, value: int) -> None:
    assert parse_yuan(text) == value
    assert fen(value) == f"{value // 100}.{value % 100:02d}"


@pytest.mark.parametrize("text", ["", "abc", "-1", "0", "1.234", "nan", "inf", "99999999"])
def test_parse_yuan_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_yuan(text)


def test_no_float_in_money_code() -> None:
    """No float literal, float() call or true division in the money path."""
    root = Path(__file__).resolve().parents[1]
    for name in (
        "terminal/policy.py",
        "terminal/money.py",
        "terminal/checkout.py",
        "terminal/journal.py",
        "central/store.py",
        "sync/wire.py",
    ):
        tree = ast.parse((root / name).read_text())
        for node in ast.walk(tree):
            assert not (isinstance(node, ast.Constant) and isinstance(node.value, float)), name
            assert not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "float"), (
                name
            )
            assert not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)), name
