"""Validation errors said as sentences, naming the field or the environment variable to fix."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError, field_validator
from pydantic_settings import SettingsError

from piper_mcp.piper.settings import PiperSettings
from piper_mcp.server.settings import ServeSettings
from piper_mcp.validation import (
    env_var_name,
    first_problem,
    setting_problems,
    unparsable_setting,
)


class Body(BaseModel):
    credentialIds: list[str]
    note: str = ""

    @field_validator("note")
    @classmethod
    def _short(cls, value: str) -> str:
        if len(value) > 3:
            raise ValueError("keep it short")
        return value


def refusal(
    model: type[BaseModel] | type[PiperSettings], data: dict[str, object]
) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return caught.value


def test_a_body_problem_names_the_field_and_drops_pydantics_prefix() -> None:
    assert first_problem(refusal(Body, {"credentialIds": [1]})) == (
        "credentialIds.0: Input should be a valid string"
    )
    assert first_problem(refusal(Body, {"credentialIds": [], "note": "long"})) == (
        "note: keep it short"
    )


def test_a_settings_problem_names_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIPER_RETRY_ATTEMPTS", "0")
    with pytest.raises(ValidationError) as caught:
        PiperSettings()
    assert setting_problems(caught.value, PiperSettings) == [
        "PIPER_RETRY_ATTEMPTS: Input should be greater than or equal to 1"
    ]


def test_a_setting_read_under_an_alias_is_named_by_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPER_MCP_PORT", "70000")
    with pytest.raises(ValidationError) as caught:
        ServeSettings()
    assert setting_problems(caught.value, ServeSettings) == [
        "PIPER_MCP_PORT: Input should be less than or equal to 65535"
    ]
    assert env_var_name(ServeSettings, "variables") == "PIPER_VARIABLES"


def test_a_value_that_cannot_be_parsed_names_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIPER_ENV_MAP", "{not json")
    with pytest.raises(SettingsError) as caught:
        PiperSettings()
    assert unparsable_setting(caught.value, PiperSettings) == "PIPER_ENV_MAP"
    assert unparsable_setting(SettingsError("no field named"), ServeSettings) == (
        "a PIPER_MCP_* setting"
    )
