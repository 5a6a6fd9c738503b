"""One consent, one release: the code each consent question carries, and the answers spent.

In the 2026-07-28 protocol era the user's answer comes back with the retried
tool call, next to the request state the SDK sealed when it asked. The SDK
checks that the state was minted by this process, for these tool arguments,
within its lifetime; it does not check that it is used once, so the same
answer and state would release the value again and again for ten minutes.

Each question names a code. A retry that brings a state back answers the
question with the current code: the state is spent (bringing it again is
refused), and the variable moves on to a new code, so an old answer never
matches a question asked later, even once the spent state is forgotten.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

# The SDK's request-state lifetime (`RequestStateSecurity` ttl), which `build_server`
# keeps: a spent state is refused by name at least as long as the SDK would accept it.
STATE_LIFETIME_SECONDS = 600.0
# A bound on memory under a flood of retries; forgetting a spent state early only loses
# the clear refusal, since its question's code has moved on.
MAX_SPENT_STATES = 4096


class ConsentLedger:
    """Question codes per variable, and the request states already answered."""

    def __init__(
        self,
        *,
        lifetime: float = STATE_LIFETIME_SECONDS,
        capacity: int = MAX_SPENT_STATES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lifetime = lifetime
        self._capacity = capacity
        self._clock = clock
        self._codes: dict[str, str] = {}
        # Spent state digest -> when it may be forgotten; insertion order is expiry order.
        self._spent: OrderedDict[bytes, float] = OrderedDict()

    def question_code(self, variable: str, returned_state: str | None) -> str | None:
        """The code for the question this call puts about `variable`; None if already answered.

        `returned_state` is the request state the call brought back (None on a first
        call and in the handshake era). Bringing one back spends it, and the variable's
        next question gets a new code. Synchronous on purpose: concurrent copies of one
        retry cannot both pass.
        """
        code = self._codes.get(variable) or secrets.token_hex(6)
        if returned_state is None:
            self._codes[variable] = code
            return code
        if not self._spend(returned_state):
            return None
        self._codes[variable] = secrets.token_hex(6)
        return code

    def _spend(self, state: str) -> bool:
        now = self._clock()
        while self._spent and next(iter(self._spent.values())) <= now:
            self._spent.popitem(last=False)
        digest = hashlib.sha256(state.encode()).digest()
        if digest in self._spent:
            return False
        if len(self._spent) >= self._capacity:
            self._spent.popitem(last=False)
        self._spent[digest] = now + self._lifetime
        return True
