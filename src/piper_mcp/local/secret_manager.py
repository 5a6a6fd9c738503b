"""The Secret Manager REST subset: `GET /v1/projects/{p}/secrets/{s}/versions/{v}:access`.

Authorised by an STS token this backend issued (for the credentials it
covers) or, for `agent-secret-<id>`, by a registered Google service account's
self-signed JWT (what Application Default Credentials send). Answers are in
Google's shapes: an STS token of this backend's that no longer works (expired,
which it says as Google does with `ACCESS_TOKEN_EXPIRED`; dropped for room; or
issued before a restart) gets 401 UNAUTHENTICATED, so its holder asks Piper for
a new one; any other token that may not read the secret gets 403.
"""

from __future__ import annotations

import base64

from starlette.requests import Request
from starlette.responses import JSONResponse

from piper_mcp.checksum import crc32c
from piper_mcp.local.audit_writer import Caller
from piper_mcp.local.request_body import bearer_token
from piper_mcp.local.tokens import TokenIssuer
from piper_mcp.local.vault import SecretInfo, Vault

ACCESS_ROUTE = "/v1/projects/{project}/secrets/{secret}/versions/{version_access}"


INVALID_CREDENTIALS = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential."
)


def _google_error(
    code: int, status: str, message: str, *, reason: str | None = None
) -> JSONResponse:
    error: dict[str, object] = {"code": code, "message": message, "status": status}
    if reason is not None:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": "secretmanager.googleapis.com"},
            }
        ]
    return JSONResponse({"error": error}, status_code=code)


def _unauthenticated(tokens: TokenIssuer, token: str) -> JSONResponse:
    """Google's 401 for an STS token that no longer works: the holder asks for a new one."""
    if tokens.sts_token_expired(token):
        return _google_error(
            401,
            "UNAUTHENTICATED",
            f"{INVALID_CREDENTIALS} The access token expired: ask Piper for a new one.",
            reason="ACCESS_TOKEN_EXPIRED",
        )
    # Never issued, dropped to make room for newer tokens, or issued before a restart.
    return _google_error(
        401,
        "UNAUTHENTICATED",
        f"{INVALID_CREDENTIALS} The access token is not valid (expired or revoked): ask Piper "
        "for a new one.",
    )


def access(
    request: Request, vault: Vault, tokens: TokenIssuer, project_id: str, caller: Caller
) -> JSONResponse:
    project = request.path_params["project"]
    name = request.path_params["secret"]
    version, _, verb = request.path_params["version_access"].partition(":")
    caller.subject = name[:256]
    if verb != "access":
        return _google_error(404, "NOT_FOUND", "Only versions/{version}:access is served here.")
    token = bearer_token(request)
    if token is None:
        return _google_error(401, "UNAUTHENTICATED", "Request is missing a bearer token.")
    if tokens.sts_token(token) is None and tokens.has_sts_shape(token):
        return _unauthenticated(tokens, token)
    secret = vault.find_secret(name) if project == project_id else None
    if secret is None or not _may_read(token, secret, vault, tokens, caller):
        # The same answer whether or not the secret exists: a token learns nothing.
        return _google_error(
            403, "PERMISSION_DENIED", f"Permission denied on secret {name[:100]!r}."
        )
    value = vault.secret_value(secret.secret_id)
    if value is None or version not in ("latest", "1"):
        return _google_error(404, "NOT_FOUND", f"Secret [{name[:100]}] version not found.")
    data = value.encode("utf-8")
    return JSONResponse(
        {
            "name": f"projects/{project}/secrets/{name}/versions/1",
            "payload": {
                "data": base64.b64encode(data).decode("ascii"),
                "dataCrc32c": str(crc32c(data)),
            },
        }
    )


def _may_read(
    token: str, secret: SecretInfo, vault: Vault, tokens: TokenIssuer, caller: Caller
) -> bool:
    sts = tokens.sts_token(token)
    if sts is not None:
        caller.client_id, caller.user_id, caller.proven = sts.client_id, sts.user_id, True
        minted_under = sts.minted_under(secret.secret_id)
        return minted_under is not None and any(
            grant.active and grant.grant_id == minted_under
            for grant in vault.grants(sts.user_id, sts.client_id)
        )
    email = _service_account_email(token, vault)
    identity = vault.google_identity(email) if email else None
    caller.client_id, caller.proven = email, identity is not None
    return identity is not None and bool(
        {secret.name, secret.secret_id} & identity.readable_secrets
    )


def _service_account_email(token: str, vault: Vault) -> str | None:
    """The issuer of a valid self-signed JWT from a registered service account, else None."""
    if token.count(".") != 2:
        return None
    from google.auth import exceptions, jwt

    try:
        unverified = jwt.decode(token, verify=False)
    except (ValueError, exceptions.GoogleAuthError):
        return None
    email = unverified.get("iss")
    identity = vault.google_identity(email) if isinstance(email, str) else None
    if identity is None:
        return None
    try:
        jwt.decode(token, certs=[identity.public_key_pem], verify=True)
    except (ValueError, exceptions.GoogleAuthError):
        return None
    return identity.email
