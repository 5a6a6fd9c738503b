"""Keeping the credential out of an API's answer: every spelling of it becomes "[redacted]".

An API may echo what it was sent (a debug endpoint, an error quoting the
request, a Location built from the query). Exact forms (`encodings()`: base64,
JSON-escaped once and twice, repr) are not enough: servers percent-encode with
their own safe characters and hex case, and JSON and HTML escape characters
one by one. So each character of a secret may appear as itself, percent-encoded,
JSON-escaped or as an HTML character reference, in any mix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from piper_mcp.server.redaction import REDACTED, encodings

_HTML_NAMES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"}
_LONGEST_SPELLING = 12  # characters: "%F0%9F%94%91", one 4-byte character percent-encoded


def _any_case(hex_digits: str) -> str:
    return "".join(f"[{d}{d.upper()}]" if d in "abcdef" else d for d in hex_digits.lower())


def _spellings(char: str) -> str:
    """A pattern for one character of a secret, as URLs, JSON and HTML may write it."""
    code = ord(char)
    utf16 = char.encode("utf-16-be")
    spellings = {
        re.escape(char),
        re.escape(json.dumps(char)[1:-1]),  # \" \\ \n
        "".join(f"%{_any_case(f'{byte:02x}')}" for byte in char.encode()),
        "".join(rf"\\u{_any_case(utf16[i : i + 2].hex())}" for i in range(0, len(utf16), 2)),
        f"&#{code};",
        f"&#[xX]{_any_case(f'{code:x}')};",
    }
    if char == " ":
        spellings.add(r"\+")
    if char == "/":
        spellings.add(r"\\/")
    if char in _HTML_NAMES:
        spellings.add(_HTML_NAMES[char])
    return "(?:" + "|".join(sorted(spellings)) + ")"


class CredentialScrubber:
    """Replaces every spelling of the given secrets with "[redacted]"."""

    def __init__(self, secrets: Iterable[str]) -> None:
        given = {secret for secret in secrets if secret}
        # An echo of a non-ASCII secret in an HTTP header is read as latin-1: mojibake that
        # the model could turn back.
        given |= {secret.encode().decode("latin-1") for secret in given}
        secrets = sorted(given, key=len, reverse=True)
        exact: set[str] = set()
        for secret in secrets:
            exact |= encodings(secret)
        spelled = ["".join(_spellings(char) for char in secret) for secret in secrets]
        source = "|".join(
            [re.escape(form) for form in sorted(exact, key=len, reverse=True)] + spelled
        )
        self._pattern = re.compile(source)
        self._any_case = re.compile(source, re.IGNORECASE)
        longest = max([len(form) for form in exact] + [len(s) for s in secrets], default=0)
        # How far past a cut an occurrence that starts before it may reach, in UTF-8 bytes.
        self.reach = 4 * max(longest, _LONGEST_SPELLING * max(map(len, secrets), default=0))

    def text(self, text: str) -> str:
        return self._pattern.sub(REDACTED, text)

    def in_any_case(self, text: str) -> bool:
        """Whether a secret is in `text` in any letter case: for what was case-folded."""
        return self._any_case.search(text) is not None

    def text_cut(self, text: str, end: int) -> str:
        """`text[:end]` scrubbed, where `text` goes on at least `reach` past `end` (or ends):
        an occurrence that starts before the cut is redacted whole, not cut in two."""
        kept: list[str] = []
        shown = 0
        for match in self._pattern.finditer(text):
            if match.start() >= end:
                break
            kept += [text[shown : match.start()], REDACTED]
            shown = match.end()
        kept.append(text[shown:end])
        return "".join(kept)
