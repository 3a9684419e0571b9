"""Cells of the CSV files the union hands out (pure).

A spreadsheet reads a cell that starts with ``=``, ``+``, ``-`` or ``@`` (or a tab or a
carriage return before one) as a formula: a merchant's name or a rule's title typed
as ``=HYPERLINK(...)`` would run in the union's or an auditor's spreadsheet when a
statement is opened. Such a text cell is written with a leading apostrophe, which the
spreadsheet shows as text and does not print; numbers (``-2.54``, ``12.5%``) and the
lone ``-`` of an empty share stay as they are.
"""

from __future__ import annotations

import re

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"[-+]?[0-9][0-9,]*(?:\.[0-9]+)?%?|-")


def spreadsheet_safe(cell: str) -> str:
    """``cell`` as a spreadsheet shows it as text, never as a formula."""
    if cell.startswith(FORMULA_STARTS) and not NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def safe_row(row: list[str]) -> list[str]:
    return [spreadsheet_safe(cell) for cell in row]
