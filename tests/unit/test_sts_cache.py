"""The STS token cache: one token per variable, reused within the revocation window only."""

from __future__ import annotations

from piper_mcp.piper.result import SecretResult
from piper_mcp.piper.sts_cache import StsTokenCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sts(token: str = "piper-sts-1", expires_in: int | None = 3600) -> SecretResult:
    return SecretResult(
        source="piper_sts",
        value=token,
        token_type="Bearer",
        expires_in=expires_in,
        piper_credential_id="cred",
        variable_name="OpenAI API Key",
    )


def test_a_token_is_reused_within_the_window_with_its_life_counted_down() -> None:
    clock = Clock()
    cache = StsTokenCache(30, clock=clock)
    cache.put("OpenAI API Key", sts())
    clock.now += 29.5
    kept = cache.get("openai_api_key")
    assert kept is not None
    assert (kept.value, kept.expires_in, kept.variable_name) == (
        "piper-sts-1",
        3570,
        "openai_api_key",
    )
    clock.now += 0.5
    assert cache.get("OpenAI API Key") is None


def test_a_token_is_never_reused_in_its_last_minute() -> None:
    clock = Clock()
    cache = StsTokenCache(3600, clock=clock)
    cache.put("db", sts(expires_in=90))
    clock.now += 30
    assert cache.get("db") is not None
    clock.now += 0.5
    assert cache.get("db") is None


def test_a_token_without_an_expiry_lives_for_the_window() -> None:
    clock = Clock()
    cache = StsTokenCache(10, clock=clock)
    cache.put("db", sts(expires_in=None))
    clock.now += 9
    kept = cache.get("db")
    assert kept is not None and kept.expires_in is None
    clock.now += 1
    assert cache.get("db") is None


def test_a_window_of_zero_keeps_nothing() -> None:
    cache = StsTokenCache(0, clock=Clock())
    cache.put("db", sts())
    assert cache.get("db") is None


def test_forgetting_drops_only_the_refused_token() -> None:
    cache = StsTokenCache(30, clock=Clock())
    cache.put("db", sts("piper-sts-new"))
    cache.forget("db", "piper-sts-old")  # a late report about an older token
    assert cache.get("db") is not None
    cache.forget("DB", "piper-sts-new")
    assert cache.get("db") is None


def test_discard_drops_whatever_is_kept() -> None:
    cache = StsTokenCache(30, clock=Clock())
    cache.put("db", sts())
    cache.discard("db")
    assert cache.get("db") is None
