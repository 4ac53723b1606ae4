"""CORS and WebSocket origin allow-lists (issue 16)."""

from __future__ import annotations

import asyncio
import logging

import pytest
import websockets

from gateway.app import create_app
from gateway.runtime import Runtime
from tests.support import LiveServer, TransportWS

ALLOWED = "https://app.example.com"


def _app(runtime: Runtime, **changes):
    settings = runtime.settings.with_(embedded_worker="off", **changes)
    return create_app(runtime=Runtime(**{**runtime.__dict__, "settings": settings}))


@pytest.fixture(scope="module")
def guarded(runtime):
    with LiveServer(_app(runtime, cors_origins=(ALLOWED,), websocket_origins=(ALLOWED,))) as live:
        yield live


def test_preflight_is_answered_for_allowed_origins_only(guarded, gql):
    import httpx

    preflight = {"access-control-request-method": "POST",
                 "access-control-request-headers": "authorization,content-type"}
    ok = httpx.options(guarded.url + "/graphql", headers={"origin": ALLOWED, **preflight})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    other = httpx.options(guarded.url + "/graphql", headers={"origin": "https://evil.example", **preflight})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    # without the setting, no cross-origin access at all (the default)
    plain = gql.http.options("/graphql", headers={"origin": ALLOWED, **preflight})
    assert plain.status_code == 405 and "access-control-allow-origin" not in plain.headers


def test_websocket_origin_allow_list(guarded, tenant):
    async def connect(origin: str | None):
        headers = {"Origin": origin} if origin else None
        ws = TransportWS(guarded.ws_url, tenant.key)
        ws.ws = await websockets.connect(guarded.ws_url, subprotocols=["graphql-transport-ws"],
                                         additional_headers=headers, origin=None)
        await ws.ws.close()

    asyncio.run(connect(ALLOWED))
    asyncio.run(connect(None))  # not a browser: no ambient credentials to abuse
    with pytest.raises(websockets.InvalidStatus) as refused:
        asyncio.run(connect("https://evil.example"))
    assert refused.value.response.status_code == 403


def test_a_wildcard_origin_warns_in_production(runtime, caplog):
    caplog.set_level(logging.INFO)
    _app(runtime, cors_origins=("*",), environment="production")
    warned = [r for r in caplog.records if "CORS allows every origin" in r.getMessage()]
    assert warned and warned[0].levelno == logging.WARNING
    caplog.clear()
    _app(runtime, cors_origins=("*",))
    assert all(r.levelno < logging.WARNING for r in caplog.records
               if "CORS allows every origin" in r.getMessage())
