"""Variable-name rules of the Piper protocol, as the published SDK applies them."""

from __future__ import annotations

import re
import unicodedata

from piper_mcp.piper.errors import PiperVariableNameError

# Long enough for any sensible logical name, short enough that a hostile
# caller cannot make us send megabytes to the backend.
MAX_VARIABLE_NAME_LENGTH = 256

_DASHES_AND_SPACE = re.compile(r"[-\s]+")
_NOT_WORD = re.compile(r"[^\w]")
_UNDERSCORES = re.compile(r"_+")
_NOT_ENV_CHAR = re.compile(r"[^A-Z0-9_]")
_LETTER_OR_DIGIT = re.compile(r"[^\W_]")


def checked_variable_name(variable_name: object) -> str:
    """The stripped name, or `PiperVariableNameError` saying what is wrong with it."""
    if not isinstance(variable_name, str):
        raise PiperVariableNameError(
            f"variable_name must be a string, not {type(variable_name).__name__}."
        )
    stripped = variable_name.strip()
    if not stripped:
        raise PiperVariableNameError("variable_name is empty.")
    if len(stripped) > MAX_VARIABLE_NAME_LENGTH:
        raise PiperVariableNameError(
            f"variable_name is {len(stripped)} characters long; "
            f"the limit is {MAX_VARIABLE_NAME_LENGTH}."
        )
    if not _LETTER_OR_DIGIT.search(normalize_variable_name(stripped)):
        raise PiperVariableNameError(f"variable_name {stripped[:40]!r} has no letters or digits.")
    return stripped


def normalize_variable_name(variable_name: str) -> str:
    """The name as sent to the API: `"OpenAI API Key"` → `"openai_api_key"`."""
    name = _DASHES_AND_SPACE.sub("_", variable_name.strip())
    name = _NOT_WORD.sub("", name)
    return _UNDERSCORES.sub("_", name).lower()


def env_var_name(
    variable_name: str, prefix: str = "", env_map: dict[str, str] | None = None
) -> str:
    """The environment variable the fallback reads: an exact map entry, else prefix + NAME."""
    if env_map and variable_name in env_map:
        return env_map[variable_name]
    name = _NOT_ENV_CHAR.sub("_", variable_name.upper())
    return prefix + _UNDERSCORES.sub("_", name)


def is_own_setting(env_name: str) -> bool:
    """`PIPER_*` (after Unicode normalization): piper-mcp's own configuration, never served
    as a secret nor handed to a program `exec` starts."""
    return unicodedata.normalize("NFKC", env_name).upper().startswith("PIPER_")


def declared_match(requested: str, declared: list[str]) -> str | None:
    """The declared variable `requested` names, exactly or in normalized form; else None."""
    if len(requested) > MAX_VARIABLE_NAME_LENGTH:
        return None
    wanted = normalize_variable_name(requested)
    for name in declared:
        if requested == name or (wanted and normalize_variable_name(name) == wanted):
            return name
    return None
