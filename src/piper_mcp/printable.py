"""Names made safe to print: control characters and escape sequences shown escaped.

A newline in a client's or variable's name would forge a line of an audit
listing, and an ANSI escape would drive the reader's terminal.
"""

from __future__ import annotations

import unicodedata

CONTROL_CATEGORIES = ("Cc", "Cf", "Zl", "Zp")


def has_control_characters(text: str) -> bool:
    return any(unicodedata.category(char) in CONTROL_CATEGORIES for char in text)


def printable(text: str) -> str:
    """`text` with each control character escaped as `repr` would (`\\n`, `\\x1b`, `\\u202e`)."""
    if not has_control_characters(text):
        return text
    return "".join(
        repr(char)[1:-1] if unicodedata.category(char) in CONTROL_CATEGORIES else char
        for char in text
    )


def quoted(text: str, limit: int = 64) -> str:
    """`text` quoted for an error message: escaped as `repr` does, and cut if long."""
    return repr(text[:limit]) + ("…" if len(text) > limit else "")


def shown(text: str, limit: int = 100) -> str:
    """`text` as a page shows a name someone else chose: printable, cut at `limit`."""
    text = printable(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
