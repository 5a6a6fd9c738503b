"""The tiers after Piper: an environment variable, then a local JSON file.

Each tier returns a `SecretResult` or a one-line account of what it tried,
so the final error can say what every tier did; `first_fallback` walks them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from piper_mcp.piper.names import env_var_name, normalize_variable_name
from piper_mcp.piper.result import SecretResult
from piper_mcp.piper.settings import PiperSettings


def first_fallback(
    variable_name: str,
    settings: PiperSettings,
    *,
    use_env: bool,
    override_env_name: str | None = None,
) -> tuple[SecretResult | None, list[str]]:
    """The first tier that has `variable_name` (environment when `use_env`, then the local
    file when one is configured), and what each tier before it tried."""
    tried: list[str] = []
    if use_env:
        found = from_environment(
            variable_name,
            prefix=settings.env_prefix,
            env_map=settings.env_map,
            override_name=override_env_name,
        )
        if isinstance(found, SecretResult):
            return found, tried
        tried.append(found)
    if settings.local_config_file:
        found = from_local_file(variable_name, settings.local_config_file)
        if isinstance(found, SecretResult):
            return found, tried
        tried.append(found)
    return None, tried


def from_environment(
    variable_name: str,
    *,
    prefix: str,
    env_map: Mapping[str, str],
    override_name: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> SecretResult | str:
    name = override_name or env_var_name(variable_name, prefix, dict(env_map))
    value = environ.get(name)
    if value is None:
        return f"environment variable {name}: not set"
    return SecretResult(
        source="environment_variable",
        value=value,
        env_var_name=name,
        token_type="DirectValue",
        expires_in=None,
        variable_name=variable_name,
    )


def from_local_file(variable_name: str, path: Path) -> SecretResult | str:
    """Look the name up in a JSON object file: exact key first, then the normalized name."""
    path = path.expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"local config file {path}: not found"
    except OSError as error:
        return f"local config file {path}: unreadable ({error.strerror})"
    except (ValueError, UnicodeDecodeError, RecursionError):
        return f"local config file {path}: not valid JSON"
    if not isinstance(data, dict):
        return f"local config file {path}: not a JSON object of name → value"
    for key in (variable_name, normalize_variable_name(variable_name)):
        if data.get(key) is not None:
            return SecretResult(
                source="local_config_file",
                value=data[key],
                config_file_path=str(path),
                variable_name=variable_name,
            )
    return f"local config file {path}: no entry {variable_name!r}"
