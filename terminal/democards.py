"""The demo's test cards (UnionPay BIN range 62, Luhn-valid; never real cards).

`unioncard demo` enrols them as members and `unioncard card emulate --demo NAME`
presents one on the virtual reader. Their numbers stay in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from pact.cards import luhn_complete


@dataclass(frozen=True)
class DemoCard:
    label: str
    pan: str
    member_id: str | None  # None: not on the roster
    status: str = "active"


DEMO_CARDS = {
    "member": DemoCard("member", luhn_complete("621483" + "000012345"), "U-000101"),
    "member2": DemoCard("second member", luhn_complete("621483" + "000067890"), "U-000102"),
    "suspended": DemoCard(
        "suspended member", luhn_complete("621700" + "5550001234"), "U-000103", "suspended"
    ),
    "nonmember": DemoCard("non-member", luhn_complete("622588" + "0000009876"), None),
}


def members_csv() -> str:
    """The demo's members file (kept in memory: it holds card numbers)."""
    lines = ["member_id,pan,status,tier,valid_until,district,workplace"]
    for card in DEMO_CARDS.values():
        if card.member_id is not None:
            lines.append(
                f"{card.member_id},{card.pan},{card.status},1,2030-12-31,Huangpu,Demo Works"
            )
    return "\n".join(lines) + "\n"
