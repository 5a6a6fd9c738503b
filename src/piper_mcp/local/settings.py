"""How long the local vault keeps its audit table: `PIPER_LOCAL_AUDIT_*` environment variables.

Read by every process that opens the vault (`local serve`, `serve --local`,
the `local` commands), so they all prune to the same limits.
"""

from __future__ import annotations

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from piper_mcp.local.errors import VaultError
from piper_mcp.validation import setting_problems

DEFAULT_AUDIT_MAX_ROWS = 100_000


class AuditRetention(BaseSettings):
    """See the configuration table in docs/configuration.md."""

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
        raise VaultError(setting_problems(error, AuditRetention)[0]) from None
