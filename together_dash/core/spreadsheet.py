"""CSV cells a spreadsheet will not run: every CSV export (request logs, the key audit) goes through here."""
from __future__ import annotations

# A cell starting with one of these is run as a formula by spreadsheet programs (OWASP "CSV injection";
# a leading tab or carriage return is how the = gets past a naive check).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def defused(text: str) -> str:
    """The text as a cell: prefixed with a quote when a spreadsheet would take it for a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text
