"""``DirectRoute``: the document write routes without FastAPI's generic request handling
where it is pure overhead.

FastAPI solves a route's dependency tree on every request (a dozen small dependencies
for a write: the credential schemes, the guards, the settings, the tracker, the trace
context, the headers), then validates the endpoint's return value against its response
model and serializes it again. For ``POST /v1/documents`` that was most of the
ingress's CPU per request (``python -m bench.ingress``).

A route of this class keeps everything FastAPI builds from the endpoint (the OpenAPI
operation, its parameters, responses and security, ``url_path_for``), and its generic
handler, but answers the common case itself through a *direct handler* registered for
the endpoint (``direct_handler``):

1. the credential, from the headers, before the body is read (as ``AuthenticatedRoute``);
2. the direct handler reads and checks the request. Whenever anything is unusual (a
   body that is not plain JSON, a validation error, an ill-formed header) it returns
   None *before any check with a side effect* (the rate limit), and the route runs
   FastAPI's generic handler on the same request (the body is cached; the principal is
   on the request's state): refusals keep exactly their generic order, status and
   message;
3. otherwise the direct handler runs the same checks in the same order as the route's
   dependencies (scope, rate limit, backlog) and answers with a ``Response`` of its own.

When the application has dependency overrides (tests) the generic handler answers every
request, as on an ``AuthenticatedRoute``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from embedstream.api.security.guards import (
    Guards,
    authenticate_headers,
    client_address,
    remember,
)
from embedstream.api.security.principal import Principal
from embedstream.api.security.route import AuthenticatedRoute, needs_credential

DirectHandler = Callable[[Request, Principal], Awaitable[Response | None]]
"""Answers a request whose caller is known, or returns None for the generic handler
(before any check with a side effect)."""

E = TypeVar("E", bound=Callable[..., Any])

_DIRECT: dict[Callable[..., Any], DirectHandler] = {}


def direct_handler(handler: DirectHandler) -> Callable[[E], E]:
    """Register ``handler`` as the direct handler of the decorated endpoint (put it under
    the route decorator: the route is built with the endpoint it returns)."""

    def register(endpoint: E) -> E:
        _DIRECT[endpoint] = handler
        return endpoint

    return register


class DirectRoute(AuthenticatedRoute):
    """An ``AuthenticatedRoute`` whose endpoint's direct handler answers the common case
    (see the module doc)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        authenticated = super().get_route_handler()
        direct = _DIRECT.get(self.endpoint)
        if direct is None or not needs_credential(self.dependant):
            return authenticated
        generic = APIRoute.get_route_handler(self)  # FastAPI's own, no credential check

        async def direct_route_handler(request: Request) -> Response:
            if getattr(request.app, "dependency_overrides", None):
                return await authenticated(request)
            guards: Guards = request.app.state.guards
            principal = await authenticate_headers(
                guards, request.headers, client_address(request.scope)
            )
            remember(request.scope.setdefault("state", {}), principal)
            response = await direct(request, principal)
            if response is None:
                return await generic(request)
            return response

        return direct_route_handler
