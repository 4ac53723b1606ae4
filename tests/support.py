"""Helpers shared by tests: a live server in a thread, tenants, GraphQL calls, websockets."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import uvicorn
import websockets

from gateway.runtime import Runtime

if TYPE_CHECKING:
    from gateway.markets.clock import ManualClock

JWT_SECRET = "test-jwt-secret-that-is-long-enough-for-hs256"


def with_clock(runtime: Runtime, clock: ManualClock) -> Runtime:
    """The runtime with markets and an order service of their own on `clock` (its simulated
    venues empty, as in a process that starts afresh) and no embedded worker: orders fill at the
    time the test sets."""
    from gateway.markets.service import MarketsService
    from gateway.trading.service import OrderService

    markets = MarketsService(runtime.markets.directory, clock)
    orders = OrderService(runtime.db, runtime.outbox.committed_bus(), markets, runtime.market_data,
                          runtime.plugins,
                          runtime.audit, max_page_size=runtime.settings.max_page_size,
                          market_state=runtime.market_state)
    return Runtime(**{**runtime.__dict__, "markets": markets, "orders": orders,
                      "settings": runtime.settings.with_(embedded_worker="off")})


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class TenantHandle:
    id: str
    slug: str
    admin_id: str
    key: str


def onboard(runtime: Runtime, slug: str | None = None) -> TenantHandle:
    slug = slug or unique()
    tenant, admin, (_, key) = runtime.tenancy.onboard(slug, f"Tenant {slug}", f"admin@{slug}.test")
    return TenantHandle(tenant.id, tenant.slug, admin.id, key)


def user_key(runtime: Runtime, tenant: TenantHandle, *roles: str) -> tuple[str, str]:
    """A new user of `tenant` with `roles`; returns (user id, API key). Made as the platform
    (like the CLI): a tenant admin could not grant vendor, it would request it."""
    user = runtime.tenancy.create_user(tenant.id, f"{unique('u')}@{tenant.slug}.test", roles=list(roles),
                                       by_platform=True)
    _, key = runtime.tenancy.create_api_key(tenant.id, user.id, "test", by_platform=True)
    return user.id, key


class LiveServer:
    """The app on a real socket, served by uvicorn in a thread."""

    def __init__(self, app: Any) -> None:
        runtime = getattr(getattr(app, "state", None), "runtime", None)
        compression = runtime.settings.websocket_compression if runtime is not None else False
        self.server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", ws="websockets-sansio",
            ws_per_message_deflate=compression, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("live server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/graphql"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


class GraphQLClient:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def post(self, query: str, variables: dict[str, Any] | None = None, *, key: str | None = None,
             headers: dict[str, str] | None = None, operation_name: str | None = None
             ) -> httpx.Response:
        all_headers = {"content-type": "application/json"}
        if key is not None:
            all_headers["authorization"] = f"Bearer {key}"
        all_headers.update(headers or {})
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = variables
        if operation_name is not None:
            body["operationName"] = operation_name
        return self.http.post("/graphql", content=json.dumps(body), headers=all_headers)

    def __call__(self, query: str, variables: dict[str, Any] | None = None, *, key: str
                 ) -> dict[str, Any]:
        """Execute and return the JSON body (status 200 expected)."""
        response = self.post(query, variables, key=key)
        assert response.status_code == 200, response.text
        return response.json()

    def data(self, query: str, variables: dict[str, Any] | None = None, *, key: str) -> dict[str, Any]:
        body = self(query, variables, key=key)
        assert "errors" not in body, body["errors"]
        return body["data"]


def error_codes(body: dict[str, Any]) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in body.get("errors", [])]


class TransportWS:
    """A graphql-transport-ws client on a real websocket."""

    def __init__(self, url: str, key: str | None) -> None:
        self.url = url
        self.key = key
        self.ws: Any = None
        self.ack: dict[str, Any] | None = None

    async def __aenter__(self) -> TransportWS:
        self.ws = await websockets.connect(self.url, subprotocols=["graphql-transport-ws"])
        payload = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        await self.ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        self.ack = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def subscribe(self, op_id: str, query: str, variables: dict[str, Any] | None = None) -> None:
        await self.ws.send(json.dumps({"id": op_id, "type": "subscribe",
                                       "payload": {"query": query, "variables": variables or {}}}))

    async def next(self, timeout: float = 15, op_id: str | None = None) -> dict[str, Any]:
        """The next message (for operation `op_id` if given), answering pings on the way."""
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if message["type"] == "ping":
                await self.ws.send(json.dumps({"type": "pong"}))
                continue
            if op_id is not None and message.get("id") != op_id:
                continue
            return message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start `alphintra …` in its own process with these ALPHINTRA_* settings."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHINTRA_")}
    full_env.update(env)
    return subprocess.Popen([sys.executable, "-m", "gateway", *args], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


async def subscribed(runtime: Runtime, *topics: str, timeout: float = 15) -> None:
    """Wait until each topic has a subscriber on the runtime's bus (on Redis, until the server's
    SUBSCRIBE has reached Redis): an event published before that is lost to a fresh subscription."""
    for topic in topics:
        await asyncio.to_thread(wait_for, lambda t=topic: runtime.bus.subscribers(t), timeout)


# Plugin wheels built in tests (the marketplace and sandbox suites).

WHEEL = b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(files: dict[str, bytes], dist: str, version: str, plugin_id: str, entry_point: str) -> bytes:
    """A real wheel (WHEEL, METADATA, entry_points.txt, RECORD with every file's hash)."""
    info = f"{dist}-{version}.dist-info"
    files = dict(files)
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = WHEEL
    files[f"{info}/entry_points.txt"] = f"[alphintra.plugins]\n{plugin_id} = {entry_point}\n".encode()
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def plugin_wheel(code: str, manifest: dict[str, Any], *, extra: dict[str, bytes] | None = None) -> bytes:
    """A one-module plugin (`<package>/plugin.py` holding `code`) as a wheel for `manifest`."""
    package = manifest["entry_point"].split(".")[0]
    files = {f"{package}/__init__.py": b"", f"{package}/plugin.py": code.encode(),
             f"{package}/alphintra_manifest.json": json.dumps(manifest).encode(), **(extra or {})}
    dist = manifest["id"].replace(".", "_").replace("-", "_")
    return make_wheel(files, dist, manifest["version"], manifest["id"], manifest["entry_point"])


class PluginVendor:
    """A fresh tenant registered as a vendor (the platform's path), publishing signed wheels:
    PRIVATE ones are approved at once; others are reviewed and approved here as the platform."""

    def __init__(self, runtime: Runtime, name: str = "Vendor") -> None:
        from marketplace.signing import generate_key

        self.runtime = runtime
        self.tenant = onboard(runtime)
        self.private, public = generate_key()
        runtime.marketplace_publishing.register_vendor_key(self.tenant.id, self.tenant.admin_id, public, name)

    def publish(self, wheel: bytes, manifest: dict[str, Any], tier: str = "PRIVATE") -> Any:
        from marketplace.signing import sign

        pub = self.runtime.marketplace_publishing
        signature = sign(wheel, manifest, self.private)
        version = pub.publish(self.tenant.id, self.tenant.admin_id, wheel, signature, tier).version
        if tier != "PRIVATE":
            pub.review(None, version.id, "IN_REVIEW")
            pub.review(None, version.id, "APPROVED")
        return version

    def publish_code(self, code: str, manifest: dict[str, Any], tier: str = "PRIVATE") -> Any:
        return self.publish(plugin_wheel(code, manifest), manifest, tier)


INSTALL_PLUGIN = "mutation($input: InstallPluginInput!) { installPlugin(input: $input) { version active } }"


def install_plugin(gql: GraphQLClient, key: str, plugin_id: str, config: dict[str, Any] | None = None,
                   version: str = "1.0.0") -> dict[str, Any]:
    """installPlugin through GraphQL; the whole answer (errors included)."""
    payload = {"pluginId": plugin_id, "version": version, "config": config or {}}
    return gql(INSTALL_PLUGIN, {"input": payload}, key=key)
