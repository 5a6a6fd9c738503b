"""How long the local vault keeps its audit table: `PIPER_LOCAL_AUDIT_*` environment variables.

Read by every process that opens the vault (`local serve`, `serve --local`,
the `local` commands), so they all prune to the same limits.
"""

from __future__ import annotations

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from piper_mcp.local.errors import VaultError

DEFAULT_AUDIT_MAX_ROWS = 100_000


class AuditRetention(BaseSettings):
    """See README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="PIPER_LOCAL_AUDIT_", extra="ignore", frozen=True)

    # The newest rows kept; older ones are dropped as new ones are written.
    max_rows: int = Field(default=DEFAULT_AUDIT_MAX_ROWS, ge=1)
    # Rows older than this many days are dropped as new ones are written; 0: no age limit.
    max_days: float = Field(default=0.0, ge=0)

    @property
    def max_age_seconds(self) -> float | None:
        return self.max_days * 86_400 if self.max_days else None


def audit_retention() -> AuditRetention:
    """The retention the environment asks for, or a one-line `VaultError` saying what is wrong."""
    try:
        return AuditRetention()
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        setting = f"PIPER_LOCAL_AUDIT_{str(first['loc'][0]).upper()}"
        raise VaultError(f"{setting}: {first['msg']}") from None
