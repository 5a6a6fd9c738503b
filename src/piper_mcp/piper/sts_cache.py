"""STS tokens kept per variable for the revocation window, so a revoked grant stops soon."""

from __future__ import annotations

import time
from collections.abc import Callable

from piper_mcp.piper.names import normalize_variable_name
from piper_mcp.piper.result import SecretResult
from piper_mcp.piper.tokens import EXPIRY_MARGIN_SECONDS


class StsTokenCache:
    """The last STS token Piper minted for each variable, reused while it is young enough.

    A token is reused for at most `revocation_window` seconds (that bounds how long
    a revoked grant can still be served) and never in its last minute. Names are
    kept normalized, as Piper resolves them. A window of 0 keeps nothing.
    """

    def __init__(
        self, revocation_window: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.revocation_window = revocation_window
        self._clock = clock
        self._tokens: dict[str, tuple[SecretResult, float]] = {}

    def get(self, name: str) -> SecretResult | None:
        """The kept token for `name`, its `expires_in` counted down to now; None if none."""
        entry = self._tokens.get(normalize_variable_name(name))
        if entry is None:
            return None
        result, fetched_at = entry
        age = self._clock() - fetched_at
        left = None if result.expires_in is None else result.expires_in - age
        if age >= self.revocation_window or (left is not None and left < EXPIRY_MARGIN_SECONDS):
            return None
        return result.model_copy(
            update={"expires_in": None if left is None else int(left), "variable_name": name}
        )

    def put(self, name: str, result: SecretResult) -> None:
        """Keep `result`, just minted for `name`."""
        if self.revocation_window > 0:
            self._tokens[normalize_variable_name(name)] = (result, self._clock())

    def discard(self, name: str) -> None:
        self._tokens.pop(normalize_variable_name(name), None)

    def forget(self, name: str, token: str) -> None:
        """Drop the kept token for `name` if it is `token` (a reader was refused with it)."""
        key = normalize_variable_name(name)
        entry = self._tokens.get(key)
        if entry is not None and entry[0].value == token:
            del self._tokens[key]
