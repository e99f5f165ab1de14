"""``AuthenticatedRoute``: the credential is checked before anything reads the request
body.

FastAPI reads and decodes a route's body before it solves the route's dependencies, so
a credential checked by a dependency alone would let anyone make the server parse a
large body (and answer 422 rather than 401). Routes of this class check the credential
first, from the headers alone, when their dependencies include ``authenticate``: a
refusal (401, 429, 503) is raised before FastAPI's handler touches the body, and the
principal is kept on the request's state, where ``authenticate`` picks it up.

This is FastAPI's documented hook for custom request handling (a custom ``APIRoute``
with its own ``get_route_handler``), so routing (including routers included in others)
stays FastAPI's. Every router of the ingress uses it (``route_class=AuthenticatedRoute``),
and ``create_app`` sets it on the application's own router too.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from embedstream.api.security.guards import (
    Guards,
    authenticate,
    authenticate_headers,
    authorize,
    client_address,
    remember,
)


def needs_credential(dependant: Dependant) -> bool:
    """Whether ``authenticate`` is among these dependencies (at any depth)."""
    stack = [dependant]
    while stack:
        current = stack.pop()
        if current.call is authenticate:
            return True
        stack.extend(current.dependencies)
    return False


class AuthenticatedRoute(APIRoute):
    """An ``APIRoute`` that authenticates before its body is read (see the module doc)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not needs_credential(self.dependant):
            return handler

        async def authenticated_handler(request: Request) -> Response:
            # a test that overrides authentication gets what it asked for
            overrides = getattr(request.app, "dependency_overrides", None) or {}
            if authenticate not in overrides and authorize not in overrides:
                guards: Guards = request.app.state.guards
                # raises Unauthorized, TooManyFailedAttempts, CredentialStoreUnavailable:
                # the application's exception handlers answer, and the body stays unread
                principal = await authenticate_headers(
                    guards, request.headers, client_address(request.scope)
                )
                remember(request.scope.setdefault("state", {}), principal)
            return await handler(request)

        return authenticated_handler
