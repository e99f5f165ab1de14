"""The operator console: a static single-page application served at ``/console``.

Its files are package data (``static/``: HTML, CSS and plain ES modules; no build step,
nothing fetched from elsewhere). The page holds no data: every figure it shows comes from
the authenticated JSON endpoints (``/v1/admin/...``, ``/v1/documents``, ``/v1/search``),
called with the credential the operator typed in, kept in the tab's ``sessionStorage``
and sent as a header. There are no cookies, so there is no CSRF surface.

Every response carries a Content-Security-Policy that allows scripts, styles and
connections to this origin only (no inline script or style), and headers that keep the
page out of frames and its address out of referrers. ``EMBEDSTREAM_CONSOLE`` turns it
on or off (on by default outside production).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).with_name("static")
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


class WithSecurityHeaders:
    """Adds ``SECURITY_HEADERS`` (and ``Cache-Control: no-cache``: a new version of the
    console is picked up at once, revalidated by ETag) to every response of ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                extra = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
                headers += [
                    (name.lower().encode(), value.encode())
                    for name, value in extra.items()
                    if name.lower().encode() not in present
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def console_page(request: Request) -> Response:
    headers = SECURITY_HEADERS | {"Cache-Control": "no-cache"}
    return FileResponse(STATIC / "index.html", headers=headers)


async def console_redirect(request: Request) -> Response:
    # the page's relative links (static/..., ../v1/...) resolve from /console/; a relative
    # Location keeps whatever prefix a proxy put in front
    return RedirectResponse("console/", status_code=308)


def mount_console(app: FastAPI) -> None:
    """Serve the console at ``/console/`` (``/console`` redirects there)."""
    app.add_route("/console", console_redirect, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_route("/console/", console_page, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount(
        "/console/static",
        WithSecurityHeaders(StaticFiles(directory=STATIC, follow_symlink=False)),
        name="console-static",
    )
