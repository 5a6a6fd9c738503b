"""What counts as a secret here: not empty, not blank, and too long to guess.

One check for every secret a person configures (the HTTP bearer token, an
agent's client secret), so that an unset variable in a unit file never turns
authentication off and every place says the same thing.
"""

from __future__ import annotations

MIN_SECRET_LENGTH = 32
HOW_TO_MAKE_ONE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class WeakSecretError(ValueError):
    """A configured secret is empty, blank or shorter than `MIN_SECRET_LENGTH`."""


def checked_secret(value: str, what: str, *, fix: str | None = None) -> str:
    """`value` if it is strong enough to stand for `what`; a `WeakSecretError` saying why not.

    `fix` says where a good one comes from, when it is not the user's to make.
    """
    fix = fix or f"make one with: {HOW_TO_MAKE_ONE}"
    if not value.strip():
        raise WeakSecretError(f"{what} is empty; {fix}")
    if len(value) < MIN_SECRET_LENGTH:
        raise WeakSecretError(
            f"{what} is {len(value)} characters long; use at least {MIN_SECRET_LENGTH}: {fix}"
        )
    return value
