"""Pydantic validation errors said as sentences: what is wrong, and where a person fixes it.

Shared by every package: a request body names its field (`credentialIds: ...`),
a settings model names the environment variable a person sets (`PIPER_REGION: ...`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pydantic import AliasChoices, ValidationError
from pydantic_settings import BaseSettings, SettingsError

Location = tuple[int | str, ...]


def dotted(location: Location) -> str:
    """A field's place in a body: `credentialIds.0`."""
    return ".".join(str(part) for part in location)


def problems(
    error: ValidationError,
    *,
    where: Callable[[Location], str] = dotted,
    whole: str | None = "body",
) -> list[str]:
    """Each problem as `place: what is wrong`; `whole` names a problem of the whole model
    (None: say only what is wrong)."""
    said = []
    for item in error.errors(include_url=False, include_input=False):
        message = item["msg"].removeprefix("Value error, ")
        place = where(item["loc"]) if item["loc"] else whole
        said.append(f"{place}: {message}" if place else message)
    return said


def first_problem(
    error: ValidationError,
    *,
    where: Callable[[Location], str] = dotted,
    whole: str | None = "body",
) -> str:
    return problems(error, where=where, whole=whole)[0]


def env_var_name(settings: type[BaseSettings], field: str) -> str:
    """The environment variable pydantic-settings reads for `field`: prefix + name, upper
    case, or the field's own alias (`variables` is read as PIPER_VARIABLES)."""
    for name, info in settings.model_fields.items():
        aliases = _aliases(info.validation_alias)
        if field == name or field in aliases:
            named = [alias for alias in aliases if alias != name]
            if named:
                return named[0].upper()
    return f"{settings.model_config.get('env_prefix', '')}{field}".upper()


def _aliases(alias: object) -> list[str]:
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    return []


def setting_problems(error: ValidationError, settings: type[BaseSettings]) -> list[str]:
    """Each problem of a settings model, named by the environment variable to fix."""
    return problems(error, where=lambda loc: env_var_name(settings, str(loc[0])), whole=None)


def unparsable_setting(error: SettingsError, settings: type[BaseSettings]) -> str:
    """The environment variable pydantic-settings could not even parse (e.g. not JSON)."""
    field = re.search(r'field "(\w+)"', str(error))
    if field is None:
        return f"a {settings.model_config.get('env_prefix', '')}* setting"
    return env_var_name(settings, field.group(1))
