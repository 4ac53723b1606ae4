"""The web console (frontend/, built into `console_dist/` beside this module) and GraphiQL.

`/console` and every `/console/<page>` answer the console's page (a single-page app: the
browser's router picks the page); `/console/assets/*` are the built files, named by content
hash, so they are cached for a year; `/` redirects to the console. GraphiQL at `/graphql`
(a browser's GET) is the same build's `graphiql.html`: nothing is loaded from a CDN.

Pages carry a Content-Security-Policy that allows scripts, styles, fonts and connections to
this origin only (`connect-src 'self'` covers the same-origin graphql-ws WebSocket), images
also from https (a tenant's white-label logo is an https URL), and no framing, plugins or
inline scripts; and the usual companion headers.

`/white-label` is public: the branding of the tenant whose partner domain the request came on
(`ALPHINTRA_CONSOLE_HOSTS`, host=tenant-slug pairs), or the default; it answers the theme's
colours, names and logo and nothing else, so the console is branded before anyone signs in.

The build is checked against its sources by `source_hash` (the same selection and hash as
frontend/scripts/manifest.mjs): tests/test_console.py fails when they differ (docs/console.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.errors import NotFound
from gateway.http.encoding import JSONResponse
from gateway.runtime import Runtime

log = logging.getLogger(__name__)

DIST = Path(__file__).with_name("console_dist")
FRONTEND = Path(__file__).resolve().parents[2] / "frontend"
# The files of frontend/ that shape the build (frontend/scripts/manifest.mjs: TOP and DIRS).
TOP = ("graphiql.html", "index.html", "package-lock.json", "package.json", "tsconfig.json", "vite.config.ts")
DIRS = ("public", "scripts", "src")

CSP = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",  # style attributes set by React, charts and GraphiQL
    "img-src 'self' data: https:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "worker-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
PAGE_CACHE = "no-cache"  # the page names the current assets: always revalidated
ASSET_CACHE = "public, max-age=31536000, immutable"
THEME_FIELDS = ("name", "product_name", "primary_colour", "secondary_colour", "background_colour",
                "text_colour", "logo_url")


def source_hash(root: Path = FRONTEND) -> tuple[str, list[str]]:
    """sha256 over frontend/'s build inputs: for each file (sorted by its path relative to
    `root`, test files left out) the line `<path>\\0<sha256 of its bytes>\\n`."""
    files = [root / name for name in TOP if (root / name).is_file()]
    for folder in DIRS:
        if (root / folder).is_dir():
            files += [p for p in (root / folder).rglob("*")
                      if p.is_file() and not p.name.endswith((".test.ts", ".test.tsx"))]
    names = sorted(p.relative_to(root).as_posix() for p in files)
    outer = hashlib.sha256()
    for name in names:
        outer.update(f"{name}\0{hashlib.sha256((root / name).read_bytes()).hexdigest()}\n".encode())
    return outer.hexdigest(), names


def manifest(dist: Path = DIST) -> dict[str, Any]:
    return json.loads((dist / "manifest.json").read_text())


@cache
def _page(name: str) -> str | None:
    path = DIST / name
    return path.read_text() if path.is_file() else None


def page_response(name: str, status: int = 200) -> Response:
    html = _page(name)
    if html is None:
        return HTMLResponse("<!doctype html><title>Console not built</title><p>The console is not built: "
                            "run <code>make frontend</code>.</p>", status_code=503,
                            headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})
    return HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, "Cache-Control": PAGE_CACHE})


def graphiql_page(request: Request) -> Response:
    """GraphiQL, bundled: for GraphQLEndpoint's browser GET."""
    return page_response("graphiql.html")


async def console_page(request: Request) -> Response:
    return page_response("index.html")


async def console_asset(request: Request) -> Response:
    name = request.path_params["name"]
    assets = (DIST / "assets").resolve()
    path = (assets / name).resolve()
    if "/" in name or "\\" in name or path.parent != assets or not path.is_file():
        return Response("not found", status_code=404, media_type="text/plain", headers=dict(SECURITY_HEADERS))
    return FileResponse(path, headers={**SECURITY_HEADERS, "Cache-Control": ASSET_CACHE})


async def console_redirect(request: Request) -> Response:
    return RedirectResponse("/console/", status_code=307)


def parse_hosts(items: Iterable[str]) -> dict[str, str]:
    """`ALPHINTRA_CONSOLE_HOSTS`: "partner.example.com=demo,desk.acme.test=acme" as host → slug
    (host names lowercased, ports ignored)."""
    hosts: dict[str, str] = {}
    for item in items:
        host, sep, slug = item.strip().partition("=")
        if sep and host.strip() and slug.strip():
            hosts[host.strip().lower().split(":")[0]] = slug.strip()
    return hosts


def white_label_route(runtime: Runtime, hosts: Mapping[str, str]) -> Callable[[Request], Any]:
    from plugins.sdk import DEFAULT_THEME

    def theme_for(host: str) -> dict[str, Any]:
        slug = hosts.get(host)
        theme = DEFAULT_THEME
        if slug is not None:
            try:
                tenant = runtime.tenancy.tenant_by_slug(slug)
                theme, _ = runtime.marketplace.white_label(tenant.id)
            except NotFound:
                log.warning("ALPHINTRA_CONSOLE_HOSTS names tenant %r, which does not exist", slug)
        camel = {"product_name": "productName", "primary_colour": "primaryColour",
                 "secondary_colour": "secondaryColour", "background_colour": "backgroundColour",
                 "text_colour": "textColour", "logo_url": "logoUrl"}
        body: dict[str, Any] = {camel.get(f, f): getattr(theme, f) for f in THEME_FIELDS}
        body["supportLinks"] = [{"label": link.label, "url": link.url}
                                for link in theme.usable_support_links()]
        return body

    async def white_label(request: Request) -> Response:
        host = (request.headers.get("host") or "").lower().split(":")[0]
        body = await run_in_threadpool(theme_for, host)
        return JSONResponse(body, headers={"Cache-Control": "no-cache", "Vary": "Host",
                                           "X-Content-Type-Options": "nosniff"})

    return white_label


def console_routes(runtime: Runtime) -> list[BaseRoute]:
    hosts = parse_hosts(runtime.settings.console_hosts)
    return [
        Route("/", console_redirect),
        Route("/console", console_redirect),
        Route("/console/", console_page),
        Route("/console/assets/{name:path}", console_asset),
        Route("/console/{page:path}", console_page),
        Route("/white-label", white_label_route(runtime, hosts)),
    ]
