"""The local vault's one error, apart from the vault so the CLI can catch it cheaply."""

from __future__ import annotations

import difflib


class VaultError(Exception):
    """A vault operation that cannot be done; the message says why in one line."""


def did_you_mean(wanted: str, names: list[str]) -> str:
    """` Did you mean 'x'?` for the closest of `names`, or nothing: a typo, not a new name."""
    close = difflib.get_close_matches(wanted, names, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""
