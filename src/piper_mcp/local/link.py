"""The Piper Link context endpoint: which user this machine is signed in as."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from piper_mcp.network import is_loopback_host
from piper_mcp.piper.protocol import LinkContext, error_body
from piper_mcp.piper.protocol_names import LINK_CONTEXT_PATH


def link_app(instance_id: str) -> Starlette:
    """Answers `GET /piper-link-context` to callers on this machine only."""

    async def context(request: Request) -> Response:
        if request.client is None or not is_loopback_host(request.client.host):
            return JSONResponse(
                error_body("permission_denied", "Piper Link answers this machine only."),
                status_code=403,
            )
        return JSONResponse(LinkContext(instanceId=instance_id).model_dump())

    return Starlette(routes=[Route(LINK_CONTEXT_PATH, context, methods=["GET"])])
