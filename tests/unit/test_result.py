"""`SecretResult` keeps the published SDK's dict shape."""

from __future__ import annotations

from piper_mcp.piper import SecretResult


def sts_result() -> SecretResult:
    return SecretResult(
        source="piper_sts",
        value="sts-token-canary",
        token_type="Bearer",
        expires_in=3600,
        piper_credential_id="cred",
        piper_instance_id="inst",
        variable_name="key",
    )


def test_reads_like_the_sdk_dict() -> None:
    result = sts_result()
    assert result["value"] == "sts-token-canary"
    assert result.get("source") == "piper_sts"
    assert result.get("env_var_name") is None
    assert result.get("missing", "default") == "default"
    assert "piper_credential_id" in result
    assert result.as_dict() == {
        "source": "piper_sts",
        "value": "sts-token-canary",
        "token_type": "Bearer",
        "expires_in": 3600,
        "piper_credential_id": "cred",
        "piper_instance_id": "inst",
        "variable_name": "key",
    }


def test_environment_result_has_exactly_the_environment_keys() -> None:
    result = SecretResult(
        source="environment_variable",
        value="v",
        env_var_name="MY_KEY",
        token_type="DirectValue",
        expires_in=None,
    )
    assert result.keys() == ["source", "value", "token_type", "expires_in", "env_var_name"]
    assert result["expires_in"] is None


def test_the_value_never_shows_in_repr_or_str() -> None:
    result = sts_result()
    assert "sts-token-canary" not in repr(result)
    assert "sts-token-canary" not in str(result)
