"""A hostile plugin, published PRIVATE by a tenant that became a vendor and installed for that
tenant, tries every attack that worked when plugins ran inside the gateway. Each test shows
it contained, through GraphQL against the live server, and that the gateway and the other
tenants (their core fields and their own plugins) keep answering as usual (latency measured as
a ratio against a baseline taken in the same test)."""

from __future__ import annotations

import dataclasses
import http.server
import json
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.marketplace.install import build_installations
from schema.tenant import tenant_composer
from tests.support import PluginVendor, error_codes, install_plugin, onboard, wait_for

EVIL_CODE = '''
from __future__ import annotations

import gc
import json
import os
import socket
import time

import strawberry

from plugins import sdk
from plugins.sdk import PluginContext, SchemaExtension, Theme, current_context, hookimpl

UNDECLARED_CALLS = []

if current_context().config.get("hang_at_import"):
    time.sleep(40)

# Defined only outside inspection (a tenant is set): the manifest does not declare it.
if current_context().tenant_id is not None:
    @hookimpl
    def alphintra_white_label(context: PluginContext) -> Theme:
        UNDECLARED_CALLS.append(1)
        return Theme(name="evil", product_name="Evil", primary_colour="#ff0000",
                     secondary_colour="#ff0000")


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return "READ:" + f.read(200).decode("latin-1")
    except Exception as exc:
        return "DENIED:" + type(exc).__name__


@strawberry.type
class EvilQuery:
    @strawberry.field
    def evil_loot(self) -> str:
        cfg = current_context().config
        contexts = [o for o in gc.get_objects() if isinstance(o, PluginContext)]
        loot = {
            "my_tenant": current_context().tenant_id,
            "contexts": [{"tenant": c.tenant_id, "config": dict(c.config)} for c in contexts],
            "environ": dict(os.environ),
            "passwd": _read("/etc/passwd"),
            "files": {p: _read(p) for p in cfg.get("paths", [])},
            "uid": os.getuid(),
        }
        return json.dumps(loot, default=str)

    @strawberry.field
    def evil_socket(self) -> str:
        port = int(current_context().config.get("port", 1))
        try:
            s = socket.socket()
            s.connect(("127.0.0.1", port))
            return "CONNECTED"
        except Exception as exc:
            return "REFUSED:" + type(exc).__name__

    @strawberry.field
    def evil_egress(self, url: str) -> str:
        try:
            answer = sdk.http_request("GET", url, timeout_s=5)
            return f"{answer.status}:{answer.body.decode()}"
        except Exception as exc:
            return "REFUSED:" + type(exc).__name__ + ":" + str(exc)[:200]

    @strawberry.field
    def evil_exit(self) -> str:
        os._exit(3)

    @strawberry.field
    def evil_gil(self) -> str:
        return str(len(str(3 ** 24_000_000)))

    @strawberry.field
    def evil_memory(self) -> str:
        hoard = [bytearray(200 << 20) for _ in range(3)]
        return str(len(hoard))

    @strawberry.field
    async def evil_async(self) -> str:
        return "async:" + str(current_context().config.get("label", ""))

    @strawberry.field
    def evil_undeclared_calls(self) -> int:
        return len(UNDECLARED_CALLS)


@hookimpl
def alphintra_schema_extensions(context: PluginContext) -> list[SchemaExtension]:
    return [SchemaExtension(query=EvilQuery)]
'''

def evil_code(prefix: str) -> str:
    """The same plugin under other type and field names (two can be installed side by side)."""
    return EVIL_CODE.replace("EvilQuery", f"{prefix.title()}Query").replace("def evil_", f"def {prefix}_")


SECRET_CODE = '''
from __future__ import annotations

import strawberry

from plugins.sdk import PluginContext, SchemaExtension, current_context, hookimpl


@strawberry.type
class SecretQuery:
    @strawberry.field
    def secret_holder_ok(self) -> str:
        return "ok:" + str(len(str(current_context().config.get("api_key", ""))))


@hookimpl
def alphintra_schema_extensions(context: PluginContext) -> list[SchemaExtension]:
    return [SchemaExtension(query=SecretQuery)]
'''

# Installed by two tenants: module globals and slow calls of one must not reach the other.
SHARED_CODE = '''
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

import strawberry

from plugins.sdk import PluginContext, SchemaExtension, current_context, hookimpl

LAST_NOTE = ["nothing yet"]


@strawberry.type
class SharedQuery:
    @strawberry.field
    def shared_note(self) -> str:
        return LAST_NOTE[0]

    @strawberry.field
    def shared_slow(self, seconds: float) -> str:
        time.sleep(seconds)
        return "slow done"


@strawberry.type
class SharedMutation:
    @strawberry.mutation
    def shared_remember(self, note: str) -> str:
        LAST_NOTE[0] = note
        return note


@strawberry.type
class SharedSubscription:
    @strawberry.subscription
    async def shared_ticks(self, count: int) -> AsyncGenerator[str, None]:
        for n in range(count):
            await asyncio.sleep(0.01)
            yield f"{current_context().config.get('label')}:{n}"


@hookimpl
def alphintra_schema_extensions(context: PluginContext) -> list[SchemaExtension]:
    return [SchemaExtension(query=SharedQuery, mutation=SharedMutation, subscription=SharedSubscription)]
'''


def _manifest(plugin_id: str, package: str, **changes: Any) -> dict[str, Any]:
    manifest = {
        "id": plugin_id, "name": plugin_id, "vendor": "Tenant B", "version": "1.0.0",
        "gateway": ">=0.1,<1.0", "category": "analytics", "entry_point": f"{package}.plugin",
        "hooks": ["alphintra_schema_extensions"], "capabilities": ["schema:extend"],
        "config_schema": {"type": "object", "properties": {
            "api_key": {"type": "string", "x-secret": True}, "label": {"type": "string"},
            "paths": {"type": "array", "items": {"type": "string"}}, "port": {"type": "integer"},
            "hang_at_import": {"type": "boolean"}}},
        "pricing": {"model": "free"}, "licence": "MIT",
    }
    manifest.update(changes)
    return manifest


class _Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def echo() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module")
def world(runtime: Any, gql: Any, echo: int, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Tenant A holds a secret in its own plugin's configuration; tenant B is the attacker."""
    a = PluginVendor(runtime)
    a.publish_code(SECRET_CODE, _manifest("tenant-a.secret-holder", "secret_holder"))
    canary_dir = tmp_path_factory.mktemp("gateway-files")
    key_file = canary_dir / "secret.key"
    key_file.write_text("GATEWAY-KEY-FILE-CANARY")
    key_file.chmod(0o600)
    body = install_plugin(gql, a.tenant.key, "tenant-a.secret-holder", {"api_key": "TENANT-A-SECRET-9f3c"})
    assert "errors" not in body, body
    b = PluginVendor(runtime)
    evil_id = "tenant-b.evil"
    b.publish_code(EVIL_CODE, _manifest(evil_id, "evil_plugin",
                                   capabilities=["schema:extend", f"network:egress:127.0.0.1:{echo}"]))
    database = runtime.settings.database_url.removeprefix("sqlite:///")
    config = {"label": "b", "port": echo, "paths": [str(key_file), database, "/proc/1/environ",
                                                    str(Path.cwd() / ".alphintra-secret.key")]}
    body = install_plugin(gql, b.tenant.key, evil_id, config)
    assert "errors" not in body, body
    return {"a": a.tenant, "b": b.tenant, "evil": evil_id, "vendor_b": b}


def test_tenant_b_plugin_cannot_read_tenant_a_secrets(gql, runtime, world):
    loot = json.loads(gql.data("{ evilLoot }", key=world["b"].key)["evilLoot"])
    text = json.dumps(loot)
    # Memory: its process holds only its own tenant's context (the walk does find that one).
    assert {c["tenant"] for c in loot["contexts"]} == {world["b"].id}
    assert loot["contexts"][0]["config"]["label"] == "b"
    assert "TENANT-A-SECRET-9f3c" not in text
    # Environment: nothing of the gateway's (database URL, keys, ALPHINTRA_* settings).
    assert not [k for k in loot["environ"] if k.startswith("ALPHINTRA")]
    assert set(loot["environ"]) <= {"PATH", "LANG", "HOME", "TMPDIR", "PYTHONDONTWRITEBYTECODE",
                                    "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                    "PYTHONHASHSEED", "PWD"}
    # Files: no passwd, no key file, no database, no other process's environment.
    assert loot["passwd"].startswith("DENIED")
    assert all(v.startswith("DENIED") for v in loot["files"].values()), loot["files"]
    assert "GATEWAY-KEY-FILE-CANARY" not in text
    assert loot["uid"] != 0
    # Tenant A's own plugin still reads its secret (its worker has it).
    assert gql.data("{ secretHolderOk }", key=world["a"].key) == {"secretHolderOk": "ok:20"}


def test_a_socket_is_refused_and_egress_goes_only_to_granted_hosts(gql, runtime, world, echo):
    assert gql.data("{ evilSocket }", key=world["b"].key)["evilSocket"].startswith("REFUSED:")
    egress = runtime.marketplace.egress
    egress.allow_private = True  # the granted "remote" host is this machine in the test
    try:
        granted = gql.data(f'{{ evilEgress(url: "http://127.0.0.1:{echo}/quotes") }}', key=world["b"].key)
        assert granted["evilEgress"] == "200:hello from /quotes"
        other = gql.data('{ evilEgress(url: "http://127.0.0.1:9/") }', key=world["b"].key)
        assert other["evilEgress"].startswith("REFUSED:EgressRefused")
        assert "network:egress" in other["evilEgress"]
    finally:
        egress.allow_private = False
    # Off, a private address is refused even for a granted host.
    private = gql.data(f'{{ evilEgress(url: "http://127.0.0.1:{echo}/") }}', key=world["b"].key)
    assert private["evilEgress"].startswith("REFUSED:EgressRefused") and "non-public" in private["evilEgress"]


def test_an_undeclared_hook_is_never_called(gql, runtime, world):
    active = runtime.marketplace.view(world["b"].id).by_id[world["evil"]]
    assert "alphintra_white_label" in active.managed.worker.implemented  # it is there at run time
    assert "alphintra_white_label" not in active.hooks
    brand = gql.data("{ whiteLabel { productName } }", key=world["b"].key)
    assert brand["whiteLabel"]["productName"] != "Evil"
    assert gql.data("{ evilUndeclaredCalls }", key=world["b"].key) == {"evilUndeclaredCalls": 0}


def test_async_resolvers_work(gql, world):
    assert gql.data("{ evilAsync viewer { tenant { id } } }", key=world["b"].key) == {
        "evilAsync": "async:b", "viewer": {"tenant": {"id": world["b"].id}}}


def _p50(gql: Any, query: str, key: str, n: int = 15) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        body = gql(query, key=key)
        times.append(time.perf_counter() - started)
        assert "errors" not in body, body
    return statistics.median(times)


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["evilExit", "evilGil", "evilMemory"])
def test_a_crash_a_cpu_hog_or_a_memory_bomb_fails_only_its_own_field(gql, runtime, world, attack):
    a = world["a"].key
    core, plugin = "{ activeMarkets { mic } }", "{ secretHolderOk }"
    sandbox = runtime.marketplace.sandbox
    saved = sandbox.limits
    sandbox.limits = dataclasses.replace(saved, call_timeout_s=3.0)
    try:
        base_core, base_plugin = _p50(gql, core, a), _p50(gql, plugin, a)
        answers: list[dict[str, Any]] = []
        attacker = threading.Thread(target=lambda: answers.append(
            gql(f"{{ {attack} viewer {{ tenant {{ id }} }} }}", key=world["b"].key)))
        attacker.start()
        time.sleep(0.3)
        during_core, during_plugin = _p50(gql, core, a), _p50(gql, plugin, a)
        attacker.join(30)
    finally:
        sandbox.limits = saved
    body = answers[0]
    assert error_codes(body) == ["PLUGIN_FAILED"], body
    assert body["errors"][0]["extensions"]["plugin"] == world["evil"]
    assert body["data"]["viewer"]["tenant"]["id"] == world["b"].id  # the rest of its request answered
    # Other tenants keep their usual latency (generous: two cores, one shared with the attacker).
    assert during_core / base_core < 4, (base_core, during_core)
    assert during_plugin / base_plugin < 4, (base_plugin, during_plugin)
    # The attacker's plugin comes back for its next call (a new worker).
    wait_for(lambda: "errors" not in gql("{ evilAsync }", key=world["b"].key), timeout=15)


def test_a_crash_loop_is_quarantined_and_announced(gql, runtime, world, monkeypatch):
    vendor = world["vendor_b"]
    vendor.publish_code(evil_code("crasher"), _manifest("tenant-b.crasher", "crasher"))
    stranger = onboard(runtime)
    # PRIVATE: its vendor's own tenant only
    assert error_codes(install_plugin(gql, stranger.key, "tenant-b.crasher", {})) == ["PLUGIN_NOT_FOUND"]
    assert "errors" not in install_plugin(gql, world["b"].key, "tenant-b.crasher", {})
    published: list[tuple[str, dict[str, Any]]] = []
    real_publish = runtime.bus.publish

    def record(topic: str, payload: dict[str, Any]) -> Any:
        published.append((topic, payload))
        return real_publish(topic, payload)

    real_publish_many = runtime.bus.publish_many

    def record_many(items: list[tuple[str, dict[str, Any]]]) -> Any:
        published.extend(items)  # a committed event goes out through publish_many
        return real_publish_many(items)

    monkeypatch.setattr(runtime.bus, "publish", record)
    monkeypatch.setattr(runtime.bus, "publish_many", record_many)
    codes: list[str] = []

    def crash() -> bool:
        codes.extend(error_codes(gql("{ crasherExit }", key=world["b"].key)))
        return codes[-1] == "PLUGIN_QUARANTINED"

    wait_for(crash, timeout=60, interval=0.3)
    assert codes.count("PLUGIN_FAILED") >= 4
    managed = runtime.marketplace.view(world["b"].id).by_id["tenant-b.crasher"].managed
    assert managed.quarantined is not None
    # Quarantined: no new worker is started, the call answers at once.
    started = time.perf_counter()
    assert error_codes(gql("{ crasherAsync }", key=world["b"].key)) == ["PLUGIN_QUARANTINED"]
    assert time.perf_counter() - started < 1.0
    # The tenant is told (its vendor is the same tenant here).
    told = [p for t, p in published if t == f"marketplace.plugin-events.{world['b'].id}"
            and p.get("action") == "QUARANTINED"]
    assert told and told[0]["plugin_id"] == "tenant-b.crasher"
    # Reinstalling (or configuring) starts afresh.
    gql.data('mutation { uninstallPlugin(pluginId: "tenant-b.crasher") { id } }', key=world["b"].key)


@pytest.mark.slow
def test_an_import_hang_fails_only_that_install_and_never_blocks_start_up(gql, runtime, world):
    vendor = world["vendor_b"]
    vendor.publish_code(evil_code("hanger"), _manifest("tenant-b.hanger", "hanger"))
    other_vendor = PluginVendor(runtime)
    other_vendor.publish_code(SECRET_CODE, _manifest("tenant-c.quick", "quick"))
    sandbox = runtime.marketplace.sandbox
    saved = sandbox.limits
    sandbox.limits = dataclasses.replace(saved, start_timeout_s=4.0)
    results: dict[str, Any] = {}

    def hang() -> None:
        started = time.perf_counter()
        results["hang"] = install_plugin(gql, world["b"].key, "tenant-b.hanger", {"hang_at_import": True})
        results["hang_s"] = time.perf_counter() - started

    try:
        thread = threading.Thread(target=hang)
        thread.start()
        time.sleep(0.5)
        started = time.perf_counter()
        quick = install_plugin(gql, other_vendor.tenant.key, "tenant-c.quick", {"api_key": "c"})
        quick_s = time.perf_counter() - started
        thread.join(30)
    finally:
        sandbox.limits = saved
    assert "errors" not in quick and quick_s < 3.5, (quick, quick_s)  # not behind the hang
    assert error_codes(results["hang"]) == ["PLUGIN_FAILED"]
    assert "importing" in results["hang"]["errors"][0]["message"]
    assert results["hang_s"] < 10
    assert gql.data("{ installedPlugins { pluginId } }", key=world["b"].key)["installedPlugins"] == [
        {"pluginId": world["evil"]}]

    # A gateway restarting with a plugin that now hangs at import starts on time.
    assert "errors" not in install_plugin(gql, world["b"].key, "tenant-b.hanger", {"hang_at_import": False})
    from sqlmodel import select

    from gateway.marketplace.install_models import PluginInstallation
    with runtime.db.tenant_session(world["b"].id) as session:
        row = session.exec(select(PluginInstallation).where(
            PluginInstallation.plugin_id == "tenant-b.hanger")).one()
        row.config = {"hang_at_import": True}
        session.add(row)
        session.commit()
    fresh = build_installations(dataclasses.replace(runtime.settings, plugin_start_timeout_s=20.0),
                                runtime.db, runtime.bus, runtime.secrets, runtime.audit)
    fresh.bind_composer(tenant_composer(runtime.settings))
    try:
        started = time.perf_counter()
        fresh.restore(wait_s=2.0)
        assert time.perf_counter() - started < 4
        # Other tenants' plugins were restored meanwhile.
        wait_for(lambda: fresh.view(world["a"].id) is not None, timeout=15)
    finally:
        fresh.stop()
    gql.data('mutation { uninstallPlugin(pluginId: "tenant-b.hanger") { id } }', key=world["b"].key)


def test_every_worker_runs_with_the_minimum_layers(runtime, world):
    active = runtime.marketplace.view(world["b"].id).by_id[world["evil"]]
    layers = active.managed.worker.layers
    assert {"uid", "rlimits", "seccomp"} <= set(layers)
    assert any(layer.startswith("landlock") for layer in layers)
    assert runtime.marketplace.sandbox.layers.missing_minimum() == []


def test_one_plugin_two_tenants_share_nothing(gql, server, runtime, world):
    """Module globals, slow calls and subscriptions of tenant X's copy never reach tenant Y's."""
    import asyncio

    from tests.support import TransportWS

    world["vendor_b"].publish_code(SHARED_CODE, _manifest("tenant-b.shared", "shared_plugin"), "COMMUNITY")
    x, y = onboard(runtime), onboard(runtime)
    for t, label in ((x, "x"), (y, "y")):
        assert "errors" not in install_plugin(gql, t.key, "tenant-b.shared", {"label": label})
    gql.data('mutation { sharedRemember(note: "X private note") }', key=x.key)
    assert gql.data("{ sharedNote }", key=x.key) == {"sharedNote": "X private note"}
    assert gql.data("{ sharedNote }", key=y.key) == {"sharedNote": "nothing yet"}
    sandbox = runtime.marketplace.sandbox
    saved = sandbox.limits
    sandbox.limits = dataclasses.replace(saved, call_timeout_s=1.0)
    try:
        slow = threading.Thread(target=lambda: gql("{ sharedSlow(seconds: 5) }", key=x.key))
        slow.start()
        time.sleep(0.2)
        started = time.perf_counter()
        assert gql.data("{ sharedNote }", key=y.key) == {"sharedNote": "nothing yet"}
        assert time.perf_counter() - started < 0.9  # not behind X's slow call
        slow.join(10)
    finally:
        sandbox.limits = saved

    async def ticks(key: str) -> list[str]:
        async with TransportWS(server.ws_url, key) as ws:
            await ws.subscribe("t", "subscription { sharedTicks(count: 3) }")
            return [(await ws.next(op_id="t"))["payload"]["data"]["sharedTicks"] for _ in range(3)]

    assert asyncio.run(ticks(y.key)) == ["y:0", "y:1", "y:2"]
    for t in (x, y):
        gql.data('mutation { uninstallPlugin(pluginId: "tenant-b.shared") { id } }', key=t.key)
