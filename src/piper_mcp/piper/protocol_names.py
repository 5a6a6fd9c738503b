"""The Piper wire protocol's names: its functions, the Link path and port, its error codes.

Plain strings, apart from the data shapes in `protocol` (pydantic): a command that
must start fast (`exec`, `local`) and the vault read these without loading pydantic.
"""

from __future__ import annotations

# Cloud Run function names; the cloud puts each on its own host, the local
# backend serves each at `/<function name>` on one port.
TOKEN_FUNCTION = "piper-token-endpoint"
RESOLVE_MAPPING_FUNCTION = "piper-resolve-variable-mapping"
GET_SCOPED_FUNCTION = "getscopedgcpcredentials"
EXCHANGE_SECRET_FUNCTION = "piper-exchange-sts-for-secret"
LINK_CONTEXT_PATH = "/piper-link-context"

DEFAULT_LINK_PORT = 31477

# Error codes the protocol names.
INVALID_CLIENT = "invalid_client"
INVALID_REQUEST = "invalid_request"
INVALID_TOKEN = "invalid_token"
UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
MAPPING_NOT_FOUND = "mapping_not_found"
PERMISSION_DENIED = "permission_denied"
PERMISSION_DENIED_FOR_ALL_IDS = "permission_denied_for_all_ids"
NOT_FOUND = "not_found"
TOO_MANY_REQUESTS = "too_many_requests"
# The local backend's own: its vault is full, read-only, locked or damaged. The
# description names the cause, the file and what to do.
STORAGE_UNAVAILABLE = "storage_unavailable"
