"""What `get_secret` returns: the SDK's dict, as a typed object."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

Source = Literal["piper_sts", "piper_raw_secret", "environment_variable", "local_config_file"]


class SecretResult(BaseModel):
    """A credential and where it came from.

    Field names are the published SDK's dict keys; `result["value"]`,
    `result.get("source")` and `result.as_dict()` work as they do on its dict.
    The value never appears in `repr()`.
    """

    model_config = ConfigDict(frozen=True)

    source: Source
    value: JsonValue = Field(repr=False)
    token_type: str | None = None
    expires_in: int | None = None
    piper_credential_id: str | None = None
    piper_instance_id: str | None = None
    env_var_name: str | None = None
    config_file_path: str | None = None
    variable_name: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The SDK's dict: only the keys that belong to this source."""
        return self.model_dump(exclude_unset=True)

    def __getitem__(self, key: str) -> Any:
        data = self.as_dict()
        if key not in data:
            raise KeyError(key)
        return data[key]

    def __contains__(self, key: object) -> bool:
        return key in self.as_dict()

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_dict().get(key, default)

    def keys(self) -> list[str]:
        return list(self.as_dict())
