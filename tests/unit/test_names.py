"""Variable-name rules (PIPER_PROTOCOL.md, "Variable names")."""

from __future__ import annotations

import pytest

from piper_mcp.piper import PiperConfigError, PiperVariableNameError
from piper_mcp.piper.names import (
    MAX_VARIABLE_NAME_LENGTH,
    checked_variable_name,
    env_var_name,
    normalize_variable_name,
)


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("OpenAI API Key", "openai_api_key"),
        ("my-api--key", "my_api_key"),
        ("  padded name  ", "padded_name"),
        ("tabs\tand\nnewlines", "tabs_and_newlines"),
        ("a - b", "a_b"),
        ("dots.and/slashes!", "dotsandslashes"),
        ("__already__snake__", "_already_snake_"),
        ("MiXeD123", "mixed123"),
        ("Ünïcödé Kéy", "ünïcödé_kéy"),
        ("!!!", ""),
    ],
)
def test_normalization_table(given: str, sent: str) -> None:
    assert normalize_variable_name(given) == sent


@pytest.mark.parametrize(
    ("variable", "prefix", "env_map", "expected"),
    [
        ("My API Key", "MYAPP_", None, "MYAPP_MY_API_KEY"),
        ("My API Key", "", None, "MY_API_KEY"),
        ("my-api--key", "", None, "MY_API_KEY"),
        ("db.url/primary", "X_", None, "X_DB_URL_PRIMARY"),
        ("My API Key", "MYAPP_", {"My API Key": "EXACT_NAME"}, "EXACT_NAME"),
        ("Other", "MYAPP_", {"My API Key": "EXACT_NAME"}, "MYAPP_OTHER"),
    ],
)
def test_env_names_exact_map_beats_prefix(
    variable: str, prefix: str, env_map: dict[str, str] | None, expected: str
) -> None:
    assert env_var_name(variable, prefix, env_map) == expected


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("", "empty"),
        ("   \t\n ", "empty"),
        (None, "must be a string"),
        (42, "must be a string"),
        (b"bytes", "must be a string"),
        ("x" * 10_000, "10000 characters"),
        ("!!! ...", "no letters"),
        ("___", "no letters"),
    ],
)
def test_bad_names_are_clear_config_and_value_errors(bad: object, says: str) -> None:
    with pytest.raises(PiperVariableNameError, match=says) as caught:
        checked_variable_name(bad)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, PiperConfigError)
    assert "letters" in caught.value.advice
    assert "letters" in str(caught.value)


def test_longest_allowed_name_passes_and_is_stripped() -> None:
    name = "k" * MAX_VARIABLE_NAME_LENGTH
    assert checked_variable_name(f"  {name}  ") == name
