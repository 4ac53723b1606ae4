"""Installing plugins per tenant, end to end through GraphQL: the example plugins in
marketplace/examples/ (and a misbehaving one defined here) are packed as real wheels, signed
with a vendor's Ed25519 key, published and approved through the publication service, then
installed, configured, upgraded, rolled back, delisted and uninstalled over HTTP and
WebSocket against the live server."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from gateway.marketplace.install import events_topic
from gateway.marketplace.install_models import PluginInstallation, PluginUsage
from gateway.marketplace.models import PluginVersion
from marketplace.signing import generate_key, sign
from tests.support import TransportWS, error_codes, make_wheel, onboard, subscribed, user_key, wait_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "marketplace" / "examples"

FLAKY_CODE = '''
from __future__ import annotations

import time

import strawberry

from plugins.sdk import PluginContext, SchemaExtension, current_context, hookimpl


@strawberry.type
class FlakyThing:
    name: str


@strawberry.type
class FlakyQuery:
    @strawberry.field
    def flaky_ok(self) -> str:
        return "ok:" + str(current_context().config.get("label", ""))

    @strawberry.field
    def flaky_boom(self) -> str:
        raise RuntimeError("boom with internal details")

    @strawberry.field
    def flaky_hang(self) -> str:
        time.sleep(float(current_context().config.get("hang_s", 2)))
        return "late"

    @strawberry.field
    def flaky_shape(self) -> FlakyThing:
        return 42  # the wrong shape


@hookimpl
def alphintra_schema_extensions(context: PluginContext) -> list[SchemaExtension]:
    return [SchemaExtension(query=FlakyQuery)]


@hookimpl
def alphintra_activated(context: PluginContext) -> None:
    if context.config.get("fail_activation"):
        raise RuntimeError("refusing to activate")
'''

FLAKY_MANIFEST = {
    "id": "acme.flaky", "name": "Flaky analytics", "vendor": "Acme Data", "version": "1.0.0",
    "gateway": ">=0.1,<1.0", "category": "analytics", "entry_point": "acme_flaky.plugin",
    "hooks": ["alphintra_schema_extensions", "alphintra_activated"],
    "capabilities": ["schema:extend"],
    "config_schema": {"type": "object", "additionalProperties": False, "properties": {
        "label": {"type": "string"}, "hang_s": {"type": "number"},
        "fail_activation": {"type": "boolean"}, "token": {"type": "string", "x-secret": True}}},
    "pricing": {"model": "flat", "amount": "10.00", "currency": "EUR"}, "licence": "MIT",
}

# A plugin that reads its configuration when its schema is built (closes over it), as the SDK
# allows: tenants with different configurations must not share its schema objects.
CAPTIVE_CODE = '''
from __future__ import annotations

import strawberry

from plugins.sdk import PluginContext, SchemaExtension, hookimpl


@hookimpl
def alphintra_schema_extensions(context: PluginContext) -> list[SchemaExtension]:
    label = str(context.config.get("label", ""))

    @strawberry.type
    class CaptiveQuery:
        @strawberry.field
        def captive_label(self) -> str:
            return label

    return [SchemaExtension(query=CaptiveQuery)]
'''

CAPTIVE_MANIFEST = {
    **FLAKY_MANIFEST, "id": "acme.captive", "name": "Captive", "entry_point": "acme_captive.plugin",
    "hooks": ["alphintra_schema_extensions"],
    "config_schema": {"type": "object", "maxProperties": 3, "properties": {
        "label": {"type": "string"}, "token": {"type": "string", "x-secret": True}}},
}

# v1.1.0 of the news plugin adds a root field, so an upgrade and its rollback show in the schema.
NEWS_V11_EXTRA = '''

@strawberry.type
class AcmeTickersQuery:
    @strawberry.field(description="The tickers this tenant follows.")
    def acme_news_tickers(self) -> list[str]:
        return list(current_context().config.get("tickers") or DEFAULT_TICKERS)


@hookimpl
def alphintra_schema_extensions(context: PluginContext) -> list[SchemaExtension]:
    return [SchemaExtension(query=AcmeSentimentQuery), SchemaExtension(query=AcmeTickersQuery)]
'''


def example_wheel(example: str, package: str, *, version: str | None = None,
                  plugin_id: str | None = None, manifest: dict[str, Any] | None = None,
                  extra_code: str = "") -> tuple[bytes, dict[str, Any]]:
    source = EXAMPLES / example / package
    files: dict[str, bytes] = {}
    for path in sorted(source.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files[f"{package}/{path.relative_to(source).as_posix()}"] = path.read_bytes()
    data = json.loads(files[f"{package}/alphintra_manifest.json"])
    data.update(manifest or {})
    if version:
        data["version"] = version
    if plugin_id:
        data["id"] = plugin_id
    files[f"{package}/alphintra_manifest.json"] = json.dumps(data, indent=2).encode()
    if extra_code:
        files[f"{package}/plugin.py"] += extra_code.encode()
    dist = data["id"].replace(".", "_").replace("-", "_")
    return make_wheel(files, dist, data["version"], data["id"], data["entry_point"]), data


def flaky_wheel() -> tuple[bytes, dict[str, Any]]:
    files = {"acme_flaky/__init__.py": b"", "acme_flaky/plugin.py": FLAKY_CODE.encode(),
             "acme_flaky/alphintra_manifest.json": json.dumps(FLAKY_MANIFEST).encode()}
    wheel = make_wheel(files, "acme_flaky", "1.0.0", FLAKY_MANIFEST["id"], FLAKY_MANIFEST["entry_point"])
    return wheel, FLAKY_MANIFEST


def captive_wheel(**changes: Any) -> tuple[bytes, dict[str, Any]]:
    manifest = {**CAPTIVE_MANIFEST, **changes}
    files = {"acme_captive/__init__.py": b"", "acme_captive/plugin.py": CAPTIVE_CODE.encode(),
             "acme_captive/alphintra_manifest.json": json.dumps(manifest).encode()}
    dist = manifest["id"].replace(".", "_").replace("-", "_")
    wheel = make_wheel(files, dist, manifest["version"], manifest["id"], manifest["entry_point"])
    return wheel, manifest


# 2.0.0 of the strict plugin needs a field 1.0.0 refuses (additionalProperties: false).
STRICT_V1 = {"type": "object", "additionalProperties": False, "required": ["token"], "properties": {
    "label": {"type": "string"}, "token": {"type": "string", "x-secret": True}}}
STRICT_V2 = {**STRICT_V1, "required": ["token", "region"],
             "properties": {**STRICT_V1["properties"], "region": {"type": "string"}}}


@pytest.fixture(scope="module")
def published(runtime: Any) -> dict[str, Any]:
    """A vendor tenant publishes every plugin the tests install; a platform reviewer approves."""
    vendor = onboard(runtime)
    private_key, public_key = generate_key()
    pub = runtime.marketplace_publishing
    pub.register_vendor_key(vendor.id, vendor.admin_id, public_key, "Acme Data")
    versions: dict[str, str] = {}

    def publish(wheel: bytes, manifest: dict[str, Any], tier: str = "COMMUNITY",
                approve: bool = True) -> None:
        done = pub.publish(vendor.id, vendor.admin_id, wheel, sign(wheel, manifest, private_key), tier)
        version = done.version
        if approve and tier != "PRIVATE":
            pub.review(None, version.id, "IN_REVIEW")
            pub.review(None, version.id, "APPROVED")
        versions[f"{manifest['id']}@{manifest['version']}"] = version.id

    publish(*example_wheel("news_sentiment", "acme_news"))
    publish(*example_wheel("news_sentiment", "acme_news", version="1.1.0", extra_code=NEWS_V11_EXTRA))
    publish(*example_wheel("news_sentiment", "acme_news", version="1.2.0"), approve=False)
    publish(*example_wheel("news_sentiment", "acme_news", version="2.0.0",
                           manifest={"gateway": ">=9.0,<10"}))
    # The same code under another id: its types collide with the original's.
    publish(*example_wheel("news_sentiment", "acme_news", plugin_id="acme.news-sentiment-copy"))
    publish(*example_wheel("harbour_theme", "harbour_theme"))
    publish(*example_wheel("harbour_theme", "harbour_theme", plugin_id="acme.private-theme"), tier="PRIVATE")
    publish(*flaky_wheel())
    publish(*captive_wheel())
    publish(*captive_wheel(id="acme.strict", config_schema=STRICT_V1))
    publish(*captive_wheel(id="acme.strict", version="2.0.0", config_schema=STRICT_V2))
    publish(*captive_wheel(id="acme.doomed"))  # delisted while an install is under way
    publish(*captive_wheel(id="acme.doomed-two"))
    return {"vendor": vendor, "versions": versions}


INSTALL = """mutation($input: InstallPluginInput!) { installPlugin(input: $input) {
  id pluginId version active config secretFields { path configured } } }"""
FIELDS = '{ __type(name: "Query") { fields { name } } }'
NEWS_CONFIG = {"api_key": "very-secret-key-123", "tickers": ["AAPL.XNAS", "VOD.XLON"]}


def install(gql: Any, key: str, plugin_id: str, version: str, config: dict[str, Any] | None = None,
            idempotency_key: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"pluginId": plugin_id, "version": version, "config": config or {}}
    if idempotency_key:
        payload["idempotencyKey"] = idempotency_key
    return gql(INSTALL, {"input": payload}, key=key)


def query_fields(gql: Any, key: str) -> set[str]:
    return {f["name"] for f in gql.data(FIELDS, key=key)["__type"]["fields"]}


def test_install_for_one_tenant_grows_only_its_schema(gql, runtime, published, tenant, other_tenant):
    a, b = tenant, other_tenant
    body = install(gql, a.key, "acme.news-sentiment", "1.0.0", NEWS_CONFIG, idempotency_key="news-1")
    assert "errors" not in body, body
    installed = body["data"]["installPlugin"]
    assert installed["version"] == "1.0.0" and installed["active"] is True
    assert installed["config"] == {"tickers": ["AAPL.XNAS", "VOD.XLON"]}
    assert installed["secretFields"] == [{"path": "$.api_key", "configured": True}]

    assert "acmeNewsSentiment" in query_fields(gql, a.key)
    assert "acmeNewsSentiment" not in query_fields(gql, b.key)
    reading = gql.data('{ acmeNewsSentiment(ticker: "AAPL.XNAS") { ticker index articles } }',
                       key=a.key)["acmeNewsSentiment"]
    assert reading["ticker"] == "AAPL.XNAS" and 0 <= float(reading["index"]) <= 100
    # The field is in the federated schema (an approved plugin), not in B's: B is told so.
    assert error_codes(gql('{ acmeNewsSentiment(ticker: "AAPL.XNAS") { index } }', key=b.key)) == [
        "PLUGIN_NOT_INSTALLED"]

    # The same idempotency key answers the same installation; nothing new is stored.
    again = install(gql, a.key, "acme.news-sentiment", "1.0.0", NEWS_CONFIG, idempotency_key="news-1")
    assert again["data"]["installPlugin"]["id"] == installed["id"]

    # Secrets: sealed at rest, never in any answer.
    everything = gql("""{ installedPlugins { pluginId config secretFields { path configured }
        history { action version } }
        marketplace { plugin(id: "acme.news-sentiment") { installCount usage { calls bytes version }
          installation { version config } } } }""", key=a.key)
    assert "very-secret-key-123" not in json.dumps(everything)
    data = everything["data"]
    assert data["installedPlugins"][0]["history"] == [{"action": "INSTALLED", "version": "1.0.0"}]
    plugin = data["marketplace"]["plugin"]
    assert plugin["installCount"] >= 1
    assert plugin["usage"][0]["calls"] >= 1 and plugin["usage"][0]["bytes"] > 0
    with runtime.db.tenant_session(a.id) as session:
        row = session.exec(select(PluginInstallation)).one()
    assert "very-secret-key-123" not in json.dumps(row.config) + (row.sealed_secrets or "")
    assert json.loads(runtime.secrets.open(row.sealed_secrets, f"plugin-config:{a.id}:acme.news-sentiment")
                      ) == {"$.api_key": "very-secret-key-123"}


def test_the_plugin_reads_its_own_tenant_configuration(gql, published, tenant, other_tenant):
    install(gql, tenant.key, "acme.news-sentiment", "1.0.0",
            {"api_key": "key-of-tenant-a", "tickers": ["MSFT.XNAS"]})
    install(gql, other_tenant.key, "acme.news-sentiment", "1.0.0", {"api_key": "key-of-tenant-b"})
    # A follows only MSFT; B the defaults (AAPL among them).
    assert error_codes(gql('{ acmeNewsSentiment(ticker: "AAPL.XNAS") { index } }', key=tenant.key)) == [
        "PLUGIN_FAILED"]
    assert gql.data('{ acmeNewsSentiment(ticker: "AAPL.XNAS") { ticker } }', key=other_tenant.key)


def test_upgrade_and_rollback_swap_the_schema(gql, runtime, published, tenant):
    key = tenant.key
    assert "errors" not in install(gql, key, "acme.news-sentiment", "1.0.0", NEWS_CONFIG)
    upgraded = gql.data('mutation { upgradePlugin(pluginId: "acme.news-sentiment", version: "1.1.0") '
                        '{ version previousVersion secretFields { path } } }', key=key)["upgradePlugin"]
    assert upgraded == {"version": "1.1.0", "previousVersion": "1.0.0",
                        "secretFields": [{"path": "$.api_key"}]}
    assert "acmeNewsTickers" in query_fields(gql, key)
    assert gql.data("{ acmeNewsTickers }", key=key)["acmeNewsTickers"] == ["AAPL.XNAS", "VOD.XLON"]
    # Plugin code runs in the tenant's worker only: the gateway never imports a wheel.
    assert not [name for name in sys.modules if name.startswith("alphintra_wheels")]

    rolled = gql.data('mutation { rollbackPlugin(pluginId: "acme.news-sentiment") { version previousVersion '
                      'history { action version } } }', key=key)["rollbackPlugin"]
    assert rolled["version"] == "1.0.0" and rolled["previousVersion"] == "1.1.0"
    assert [h["action"] for h in rolled["history"]] == ["INSTALLED", "UPGRADED", "ROLLED_BACK"]
    fields = query_fields(gql, key)
    assert "acmeNewsTickers" not in fields and "acmeNewsSentiment" in fields
    # The secret survived both moves (the plugin still gets it).
    assert gql.data('{ acmeNewsSentiment(ticker: "VOD.XLON") { ticker } }', key=key)

    gone = gql.data('mutation { uninstallPlugin(pluginId: "acme.news-sentiment") { active } }', key=key)
    assert gone["uninstallPlugin"]["active"] is False
    assert "acmeNewsSentiment" not in query_fields(gql, key)
    assert gql.data("{ installedPlugins { pluginId } }", key=key)["installedPlugins"] == []


def test_tenants_with_the_same_set_share_one_schema(gql, runtime, published, tenant, other_tenant):
    for t in (tenant, other_tenant):
        assert "errors" not in install(gql, t.key, "harbour.theme", "1.0.0")
        assert "errors" not in install(gql, t.key, "acme.flaky", "1.0.0", {"label": "x"})
    first = runtime.marketplace.schema_for(tenant.id)
    assert first is not None and first is runtime.marketplace.schema_for(other_tenant.id)


def test_a_shared_schema_still_answers_each_tenant_from_its_own_worker(
        gql, runtime, published, tenant, other_tenant):
    """Same plugin, different configurations (secrets included): the composed schema holds no
    tenant's data (it forwards to the calling tenant's own worker), so tenants whose plugins
    report the same SDL share it, and each still gets its own configuration's answers."""
    captive = '{ captiveLabel }'
    assert "errors" not in install(gql, tenant.key, "acme.captive", "1.0.0", {"label": "A", "token": "ta"})
    assert "errors" not in install(gql, other_tenant.key, "acme.captive", "1.0.0",
                                   {"label": "B", "token": "tb"})
    assert gql.data(captive, key=tenant.key) == {"captiveLabel": "A"}
    assert gql.data(captive, key=other_tenant.key) == {"captiveLabel": "B"}
    first = runtime.marketplace.schema_for(tenant.id)
    assert first is runtime.marketplace.schema_for(other_tenant.id)
    a_worker = runtime.marketplace.view(tenant.id).by_id["acme.captive"].managed
    b_worker = runtime.marketplace.view(other_tenant.id).by_id["acme.captive"].managed
    assert a_worker is not b_worker and a_worker.worker.process.pid != b_worker.worker.process.pid

    configure = 'mutation($c: JSON!) { configurePlugin(pluginId: "acme.captive", config: $c) { id } }'
    gql.data(configure, {"c": {"label": "A2"}}, key=tenant.key)
    assert gql.data(captive, key=tenant.key) == {"captiveLabel": "A2"}
    assert gql.data(captive, key=other_tenant.key) == {"captiveLabel": "B"}
    # A configuration change is a new worker; the old one stops (after requests in flight).
    assert runtime.marketplace.view(tenant.id).by_id["acme.captive"].managed is not a_worker
    assert a_worker.stopped
    for t in (tenant, other_tenant):
        gql.data('mutation { uninstallPlugin(pluginId: "acme.captive") { id } }', key=t.key)


def test_a_directory_planted_under_the_wheels_hash_is_never_imported(tmp_path):
    """The unpack root is predictable (the system temporary directory); code someone planted
    there under a verified wheel's hash, sources or bytecode, is not what gets imported."""
    from gateway.marketplace.wheels import WheelStore

    manifest = {**FLAKY_MANIFEST, "id": "acme.planted", "entry_point": "acme_planted.plugin"}
    files = {"acme_planted/__init__.py": b"", "acme_planted/plugin.py": b"WHO = 'signed code'\n",
             "acme_planted/alphintra_manifest.json": json.dumps(manifest).encode()}
    wheel = make_wheel(files, "acme_planted", "1.0.0", manifest["id"], manifest["entry_point"])
    sha = hashlib.sha256(wheel).hexdigest()
    planted = tmp_path / sha / "acme_planted"
    planted.mkdir(parents=True)
    (planted / "__init__.py").write_text("")
    (planted / "plugin.py").write_text("WHO = 'planted, unsigned code'\n")
    private_key, public_key = generate_key()
    store = WheelStore(tmp_path)
    try:
        unpacked = store.load(plugin_id=manifest["id"], wheel=wheel, wheel_sha256=sha, manifest=manifest,
                              signature=sign(wheel, manifest, private_key), public_key=public_key)
        assert (unpacked.directory / "acme_planted" / "plugin.py").read_text() == "WHO = 'signed code'\n"
        # Others may traverse to a wheel they are told of (the workers), never list the store.
        assert unpacked.directory.parent != tmp_path
        assert unpacked.directory.parent.stat().st_mode & 0o077 == 0o011
        assert not list(unpacked.directory.rglob("*.pyc"))
    finally:
        store.close()


def test_an_invalid_configuration_never_echoes_a_secret(gql, runtime, published, tenant, other_tenant):
    """Errors on the whole configuration object (maxProperties here) are reported by path and
    keyword only: jsonschema's own messages quote the object, secrets included, and on configure
    the stored secret is merged in before validation."""
    body = install(gql, other_tenant.key, "acme.captive", "1.0.0",
                   {"label": "x", "token": "tok-NEW-SECRET-1", "a": 1, "b": 2})
    assert error_codes(body) == ["PLUGIN_CONFIG_INVALID"]
    assert "tok-NEW-SECRET-1" not in json.dumps(body)
    assert body["errors"][0]["extensions"]["errors"] == [
        {"path": "$", "message": "does not satisfy maxProperties 3"}]

    assert "errors" not in install(gql, tenant.key, "acme.captive", "1.0.0",
                                   {"label": "x", "token": "tok-STORED-SECRET-2"})
    configure = 'mutation($c: JSON!) { configurePlugin(pluginId: "acme.captive", config: $c) { id } }'
    body = gql(configure, {"c": {"label": "y", "a": 1, "b": 2}}, key=tenant.key)
    assert error_codes(body) == ["PLUGIN_CONFIG_INVALID"] and "tok-STORED-SECRET-2" not in json.dumps(body)
    gql.data('mutation { uninstallPlugin(pluginId: "acme.captive") { id } }', key=tenant.key)


def test_rollback_restores_the_configuration_the_previous_version_ran_with(gql, runtime, published, tenant):
    """2.0.0 requires `region`, which 1.0.0 refuses: the rollback brings back 1.0.0's own
    configuration (its secret too) instead of revalidating 2.0.0's against 1.0.0's schema."""
    key = tenant.key
    assert "errors" not in install(gql, key, "acme.strict", "1.0.0", {"label": "one", "token": "tok-v1"})
    upgraded = gql('mutation($c: JSON) { upgradePlugin(pluginId: "acme.strict", version: "2.0.0", '
                   'config: $c) { version config } }',
                   {"c": {"label": "two", "region": "eu", "token": "tok-v2"}}, key=key)
    assert upgraded["data"]["upgradePlugin"] == {"version": "2.0.0",
                                                 "config": {"label": "two", "region": "eu"}}
    rolled = gql('mutation { rollbackPlugin(pluginId: "acme.strict") { version config '
                 'secretFields { path } } }', key=key)
    assert "errors" not in rolled, rolled
    assert rolled["data"]["rollbackPlugin"] == {"version": "1.0.0", "config": {"label": "one"},
                                                "secretFields": [{"path": "$.token"}]}
    assert runtime.marketplace.view(tenant.id).by_id["acme.strict"].managed.spec.config == {
        "label": "one", "token": "tok-v1"}
    assert gql.data("{ captiveLabel }", key=key) == {"captiveLabel": "one"}
    # Rolling back again returns to 2.0.0 with the configuration it had.
    again = gql.data('mutation { rollbackPlugin(pluginId: "acme.strict") { version config } }', key=key)
    assert again["rollbackPlugin"] == {"version": "2.0.0", "config": {"label": "two", "region": "eu"}}
    assert runtime.marketplace.view(tenant.id).by_id["acme.strict"].managed.spec.config["token"] == "tok-v2"
    # Or the caller names the configuration to roll back with (the secret left out is kept).
    chosen = gql.data('mutation($c: JSON) { rollbackPlugin(pluginId: "acme.strict", config: $c) '
                      '{ version config } }', {"c": {"label": "three"}}, key=key)
    assert chosen["rollbackPlugin"] == {"version": "1.0.0", "config": {"label": "three"}}
    assert runtime.marketplace.view(tenant.id).by_id["acme.strict"].managed.spec.config["token"] == "tok-v1"
    gql.data('mutation { uninstallPlugin(pluginId: "acme.strict") { id } }', key=key)


def test_bad_configuration_is_refused_and_nothing_stored(gql, runtime, published, tenant):
    body = install(gql, tenant.key, "acme.news-sentiment", "1.0.0", {"tickers": ["aapl", 3], "colour": "red"})
    assert error_codes(body) == ["PLUGIN_CONFIG_INVALID"]
    paths = {e["path"] for e in body["errors"][0]["extensions"]["errors"]}
    assert {"$", "$.tickers[0]", "$.tickers[1]"} <= paths
    secret = install(gql, tenant.key, "acme.news-sentiment", "1.0.0", {"api_key": "short"})
    assert error_codes(secret) == ["PLUGIN_CONFIG_INVALID"] and "short" not in json.dumps(secret)
    assert gql.data("{ installedPlugins { pluginId } }", key=tenant.key)["installedPlugins"] == []
    assert runtime.marketplace.schema_for(tenant.id) is None
    with runtime.db.tenant_session(tenant.id) as session:
        assert session.exec(select(PluginInstallation)).all() == []


def test_unapproved_incompatible_unknown_and_private_versions_are_refused(gql, published, tenant):
    key = tenant.key
    assert error_codes(install(gql, key, "acme.news-sentiment", "1.2.0", NEWS_CONFIG)) == [
        "PLUGIN_VERSION_NOT_APPROVED"]
    assert error_codes(install(gql, key, "acme.news-sentiment", "2.0.0", NEWS_CONFIG)) == [
        "PLUGIN_INCOMPATIBLE"]
    assert error_codes(install(gql, key, "acme.news-sentiment", "9.9.9", NEWS_CONFIG)) == [
        "PLUGIN_VERSION_NOT_FOUND"]
    assert error_codes(install(gql, key, "acme.private-theme", "1.0.0")) == ["PLUGIN_NOT_FOUND"]
    assert error_codes(gql('{ marketplace { plugin(id: "acme.private-theme") { id } } }', key=key)) == [
        "PLUGIN_NOT_FOUND"]
    assert gql.data("{ installedPlugins { pluginId } }", key=key)["installedPlugins"] == []


def test_the_vendor_installs_its_own_private_plugin(gql, published):
    vendor = published["vendor"]
    body = install(gql, vendor.key, "acme.private-theme", "1.0.0", {"product_name": "Acme Desk"})
    assert "errors" not in body, body
    assert gql.data("{ whiteLabel { productName pluginId } }", key=vendor.key)["whiteLabel"] == {
        "productName": "Acme Desk", "pluginId": "acme.private-theme"}
    gql.data('mutation { uninstallPlugin(pluginId: "acme.private-theme") { id } }', key=vendor.key)


def test_only_tenant_admins_install(gql, runtime, published, tenant):
    _, viewer = user_key(runtime, tenant, "viewer")
    assert error_codes(install(gql, viewer, "harbour.theme", "1.0.0")) == ["FORBIDDEN"]
    assert gql.data("{ installedPlugins { pluginId } }", key=viewer)["installedPlugins"] == []
    assert gql.data('{ marketplace { plugins(search: "harbour") { edges { node { id } } } } }', key=viewer)


def test_two_plugins_defining_one_type_are_refused(gql, runtime, published, tenant):
    assert "errors" not in install(gql, tenant.key, "acme.news-sentiment", "1.0.0", NEWS_CONFIG)
    body = install(gql, tenant.key, "acme.news-sentiment-copy", "1.0.0", NEWS_CONFIG)
    assert error_codes(body) == ["PLUGIN_SCHEMA_CONFLICT"]
    assert body["errors"][0]["extensions"]["plugin"] == "acme.news-sentiment-copy"
    rows = gql.data("{ installedPlugins { pluginId } }", key=tenant.key)["installedPlugins"]
    assert rows == [{"pluginId": "acme.news-sentiment"}]


def test_a_plugin_that_raises_hangs_or_answers_the_wrong_shape_fails_alone(gql, runtime, published, tenant,
                                                                           single_execution):
    assert "errors" not in install(gql, tenant.key, "acme.flaky", "1.0.0", {"label": "fine", "hang_s": 2})
    sandbox = runtime.marketplace.sandbox
    saved = sandbox.limits
    sandbox.limits = dataclasses.replace(saved, call_timeout_s=0.5)
    try:
        started = time.monotonic()
        body = gql("{ flakyOk flakyBoom flakyHang flakyShape { name } viewer { tenant { id } } }",
                   key=tenant.key)
        # the hang costs its deadline and a new worker for the next field, nothing more
        assert time.monotonic() - started < 0.5 + 2 * saved.start_timeout_s
    finally:
        sandbox.limits = saved
    assert body["data"]["flakyOk"] == "ok:fine"
    assert body["data"]["viewer"]["tenant"]["id"] == tenant.id
    by_field = {e["path"][0]: e for e in body["errors"]}
    assert set(by_field) == {"flakyBoom", "flakyHang", "flakyShape"}
    for error in by_field.values():
        assert error["extensions"]["code"] == "PLUGIN_FAILED"
        assert error["extensions"]["plugin"] == "acme.flaky"
        assert "internal details" not in error["message"]
    # The gateway keeps serving, this tenant included.
    assert gql.data("{ viewer { tenant { id } } flakyOk }", key=tenant.key)["flakyOk"] == "ok:fine"


def test_a_plugin_failing_activation_installs_nothing(gql, runtime, published, tenant):
    body = install(gql, tenant.key, "acme.flaky", "1.0.0", {"fail_activation": True, "token": "t0ken"})
    assert error_codes(body) == ["PLUGIN_FAILED"]
    assert gql.data("{ installedPlugins { pluginId } }", key=tenant.key)["installedPlugins"] == []
    assert "flakyOk" not in query_fields(gql, tenant.key)


def test_white_label_and_feature_flags(gql, published, tenant, other_tenant):
    default = gql.data("{ whiteLabel { name productName pluginId } }", key=other_tenant.key)["whiteLabel"]
    assert default == {"name": "alphintra", "productName": "Alphintra", "pluginId": None}
    body = install(gql, tenant.key, "harbour.theme", "1.0.0", {"product_name": "Blue Harbour"})
    assert "errors" not in body
    theme = gql.data("{ whiteLabel { name productName primaryColour logoUrl pluginId } }",
                     key=tenant.key)["whiteLabel"]
    assert theme["name"] == "harbour" and theme["productName"] == "Blue Harbour"
    assert theme["pluginId"] == "harbour.theme" and theme["logoUrl"].startswith("https://")
    flags = gql.data("{ marketplace { featureFlags { name enabled pluginId } } }", key=tenant.key)
    assert flags["marketplace"]["featureFlags"] == [
        {"name": "show_vendor_badge", "enabled": False, "pluginId": "harbour.theme"}]
    assert gql.data("{ whiteLabel { name } }", key=other_tenant.key)["whiteLabel"]["name"] == "alphintra"
    configured = gql.data('mutation { configurePlugin(pluginId: "harbour.theme", config: '
                          '{product_name: "Red Harbour"}) { config } }', key=tenant.key)
    assert configured["configurePlugin"]["config"] == {"product_name": "Red Harbour"}
    theme = gql.data("{ whiteLabel { productName } }", key=tenant.key)["whiteLabel"]
    assert theme["productName"] == "Red Harbour"


def test_catalogue_search_and_ratings(gql, published, tenant):
    page = gql.data('{ marketplace { plugins(category: "data-source", capability: "schema:extend", first: 1) '
                    '{ edges { cursor node { id versions { version status } '
                    'pricing { model amount currency } } } '
                    'pageInfo { hasNextPage endCursor } } } }', key=tenant.key)["marketplace"]["plugins"]
    first = page["edges"][0]["node"]
    assert first["id"] in {"acme.news-sentiment", "acme.news-sentiment-copy"}
    assert all(v["status"] == "APPROVED" for v in first["versions"])
    assert page["pageInfo"]["hasNextPage"] is True
    rest = gql.data('query($after: String) { marketplace { plugins(category: "data-source", after: $after) '
                    '{ edges { node { id } } } } }', {"after": page["pageInfo"]["endCursor"]}, key=tenant.key)
    ids = [e["node"]["id"] for e in rest["marketplace"]["plugins"]["edges"]]
    assert first["id"] not in ids and len(ids) >= 1
    assert gql.data('{ marketplace { plugins(search: "harbour") { edges { node { id } } } } }',
                    key=tenant.key)["marketplace"]["plugins"]["edges"] == [{"node": {"id": "harbour.theme"}}]
    assert "errors" not in install(gql, tenant.key, "harbour.theme", "1.0.0")  # only installers rate
    rated = gql.data('mutation { ratePlugin(pluginId: "harbour.theme", rating: 4, comment: "tidy") '
                     '{ average count } }', key=tenant.key)["ratePlugin"]
    assert rated["count"] >= 1
    assert error_codes(gql('mutation { ratePlugin(pluginId: "harbour.theme", rating: 6) { count } }',
                           key=tenant.key)) == ["RATING_INVALID"]


def test_vendor_statement_bills_metered_calls(gql, runtime, published, tenant, single_execution):
    install(gql, tenant.key, "acme.news-sentiment", "1.0.0", NEWS_CONFIG)
    for _ in range(3):
        gql.data('{ acmeNewsSentiment(ticker: "AAPL.XNAS") { index } }', key=tenant.key)
    period = datetime.now(UTC).strftime("%Y-%m")
    statement = gql.data('query($p: String!) { vendorStatement(period: $p) { vendor totalCalls '
                         'lines { pluginId version customer calls bytes pricingModel currency revenue } '
                         'revenueByCurrency } }', {"p": period},
                         key=published["vendor"].key)["vendorStatement"]
    with runtime.db.tenant_session(tenant.id) as session:
        usage = session.exec(select(PluginUsage)).one()
    assert usage.calls == 3
    customer = hashlib.sha256(f"{runtime.marketplace_publishing.vendor_of(published['vendor'].id).id}|"
                              f"{tenant.id}".encode()).hexdigest()[:16]
    line = next(x for x in statement["lines"] if x["customer"] == customer)
    assert line["calls"] == 3 and line["pricingModel"] == "per_call" and line["revenue"] == "0.006"
    assert tenant.id not in json.dumps(statement)
    bad = gql('{ vendorStatement(period: "2026-13") { vendor } }', key=published["vendor"].key)
    assert error_codes(bad) == ["PERIOD_INVALID"]
    assert error_codes(gql(f'{{ vendorStatement(period: "{period}") {{ vendor }} }}', key=tenant.key)) == [
        "VENDOR_NOT_FOUND"]


def test_delisting_deactivates_everywhere_and_is_announced(gql, server, runtime, published):
    c, d = onboard(runtime), onboard(runtime)
    for t in (c, d):
        assert "errors" not in install(gql, t.key, "acme.news-sentiment-copy", "1.0.0", NEWS_CONFIG)
        assert "acmeNewsSentiment" in query_fields(gql, t.key)

    async def scenario() -> list[dict[str, Any]]:
        async with TransportWS(server.ws_url, c.key) as ws:
            await ws.subscribe("1", "subscription { pluginEvents { action pluginId version } }")
            await subscribed(runtime, events_topic(c.id))
            await asyncio.to_thread(runtime.marketplace_publishing.delist, None, "acme.news-sentiment-copy",
                                    "test")
            return [await ws.next(op_id="1")]

    events = asyncio.run(scenario())
    assert events[0]["payload"]["data"]["pluginEvents"] == {
        "action": "DELISTED", "pluginId": "acme.news-sentiment-copy", "version": "1.0.0"}
    for t in (c, d):
        wait_for(lambda t=t: "acmeNewsSentiment" not in query_fields(gql, t.key), timeout=10)
        rows = gql.data("{ installedPlugins { pluginId active history { action } } }", key=t.key)
        assert rows["installedPlugins"][0]["active"] is False
        assert [h["action"] for h in rows["installedPlugins"][0]["history"]] == ["INSTALLED", "DELISTED"]
    late = install(gql, onboard(runtime).key, "acme.news-sentiment-copy", "1.0.0", NEWS_CONFIG)
    assert error_codes(late) == ["PLUGIN_DELISTED"]


def test_an_install_racing_a_delisting_is_refused_at_commit(gql, runtime, published, monkeypatch):
    """The delisting lands after the install's first checks, while its wheel loads: the commit
    re-reads the plugin in its transaction and refuses; nothing is stored or active."""
    loader = runtime.marketplace.store
    real_load = loader.load

    def load_then_delist(**kwargs: Any) -> Any:
        loaded = real_load(**kwargs)
        if kwargs["plugin_id"] == "acme.doomed":
            runtime.marketplace_publishing.delist(None, "acme.doomed", "found during install")
        return loaded

    monkeypatch.setattr(loader, "load", load_then_delist)
    t = onboard(runtime)
    body = install(gql, t.key, "acme.doomed", "1.0.0", {"label": "x"})
    assert error_codes(body) == ["PLUGIN_DELISTED"]
    time.sleep(0.2)  # the delisting's own deactivation thread, had anything slipped through
    assert runtime.marketplace.view(t.id) is None and runtime.marketplace.schema_for(t.id) is None
    assert gql.data("{ installedPlugins { pluginId } }", key=t.key)["installedPlugins"] == []
    assert error_codes(gql("{ captiveLabel }", key=t.key)) == ["PLUGIN_NOT_INSTALLED"]


def test_deactivating_everywhere_goes_on_past_a_failing_tenant(gql, runtime, published, monkeypatch):
    c, d = onboard(runtime), onboard(runtime)
    for t in (c, d):  # c first: the tenant that fails is met first
        assert "errors" not in install(gql, t.key, "acme.doomed-two", "1.0.0", {"label": "x"})
    audit = runtime.marketplace.audit

    class FailingForC:
        def append(self, session: Any, tenant_id: str | None, entries: Any) -> Any:
            if tenant_id == c.id:
                raise RuntimeError("audit store unavailable")
            return audit.append(session, tenant_id, entries)

    monkeypatch.setattr(runtime.marketplace, "audit", FailingForC())
    assert runtime.marketplace.deactivate_everywhere("acme.doomed-two") == 1
    assert not runtime.marketplace.is_active(d.id, "acme.doomed-two")
    history = gql.data("{ installedPlugins { pluginId active history { action } } }", key=d.key)
    assert history["installedPlugins"][0]["history"][-1] == {"action": "DELISTED"}


def test_an_install_racing_another_process_answers_already_installed(gql, runtime, published, monkeypatch):
    """Two gateway processes (two services, one database) install the same plugin for one
    tenant at once: the one committing second gets PLUGIN_ALREADY_INSTALLED, not a 500."""
    from gateway.marketplace.install import build_installations

    other = build_installations(runtime.settings, runtime.db, runtime.bus, runtime.secrets, runtime.audit)
    t = onboard(runtime)
    real_load = runtime.marketplace.store.load

    def load_while_the_other_installs(**kwargs: Any) -> Any:
        loaded = real_load(**kwargs)
        other.install(t.id, None, "harbour.theme", "1.0.0", {})
        return loaded

    monkeypatch.setattr(runtime.marketplace.store, "load", load_while_the_other_installs)
    try:
        body = install(gql, t.key, "harbour.theme", "1.0.0")
    finally:
        other.stop()
    assert error_codes(body) == ["PLUGIN_ALREADY_INSTALLED"], body
    rows = gql.data("{ installedPlugins { pluginId history { action } } }", key=t.key)["installedPlugins"]
    assert rows == [{"pluginId": "harbour.theme", "history": [{"action": "INSTALLED"}]}]


def test_plugin_subscription_and_events_over_websocket(gql, server, runtime, published, tenant):
    async def scenario() -> list[str]:
        async with TransportWS(server.ws_url, tenant.key) as ws:
            await ws.subscribe("e", "subscription { pluginEvents { action version } }")
            await subscribed(runtime, events_topic(tenant.id))
            await asyncio.to_thread(install, gql, tenant.key, "acme.news-sentiment", "1.0.0", NEWS_CONFIG)
            await asyncio.to_thread(gql.data, 'mutation { upgradePlugin(pluginId: "acme.news-sentiment", '
                                              'version: "1.1.0") { version } }', key=tenant.key)
            seen = [(await ws.next(op_id="e"))["payload"]["data"]["pluginEvents"]["action"] for _ in range(2)]
            # A new operation on the same connection runs on the tenant's new schema.
            await ws.subscribe("q", "query { acmeNewsTickers }")
            answer = await ws.next(op_id="q")
            seen.append(str(answer["payload"]["data"]["acmeNewsTickers"]))
            return seen

    assert asyncio.run(scenario()) == ["INSTALLED", "UPGRADED", "['AAPL.XNAS', 'VOD.XLON']"]


def test_marketplace_fields_with_another_tenants_ids_change_nothing(gql, runtime, published, tenant,
                                                                   other_tenant):
    """Tenant B acts on the plugin tenant A installed: B has no installation, so every change is
    PLUGIN_NOT_INSTALLED and A's installation, schema and events are untouched."""
    a, b = tenant, other_tenant
    assert "errors" not in install(gql, a.key, "acme.news-sentiment", "1.0.0", NEWS_CONFIG)
    a_schema = runtime.marketplace.schema_for(a.id)
    for mutation in ('configurePlugin(pluginId: "acme.news-sentiment", config: {api_key: "stolen-key-1"})',
                     'upgradePlugin(pluginId: "acme.news-sentiment", version: "1.1.0")',
                     'rollbackPlugin(pluginId: "acme.news-sentiment")',
                     'uninstallPlugin(pluginId: "acme.news-sentiment")'):
        assert error_codes(gql(f"mutation {{ {mutation} {{ id }} }}", key=b.key)) == ["PLUGIN_NOT_INSTALLED"]
    assert gql.data("{ installedPlugins { pluginId } }", key=b.key)["installedPlugins"] == []
    seen = gql.data('{ marketplace { plugin(id: "acme.news-sentiment") { installation { id } '
                    'usage { calls } } } }', key=b.key)["marketplace"]["plugin"]
    assert seen == {"installation": None, "usage": []}
    assert runtime.marketplace.schema_for(a.id) is a_schema
    rows = gql.data("{ installedPlugins { version history { action } } }", key=a.key)["installedPlugins"]
    assert rows == [{"version": "1.0.0", "history": [{"action": "INSTALLED"}]}]
    assert gql.data("{ whiteLabel { pluginId } }", key=b.key)["whiteLabel"]["pluginId"] is None


def test_plugin_events_reach_only_their_tenant(gql, server, runtime, published, tenant, other_tenant):
    async def scenario() -> dict[str, Any]:
        async with TransportWS(server.ws_url, other_tenant.key) as ws:
            await ws.subscribe("b", "subscription { pluginEvents { action pluginId } }")
            await subscribed(runtime, events_topic(other_tenant.id))
            await asyncio.to_thread(install, gql, tenant.key, "harbour.theme", "1.0.0")  # A's change
            await asyncio.to_thread(install, gql, other_tenant.key, "acme.flaky", "1.0.0")  # B's own
            return await ws.next(op_id="b")

    first = asyncio.run(scenario())
    assert first["payload"]["data"]["pluginEvents"] == {"action": "INSTALLED", "pluginId": "acme.flaky"}


def test_the_signature_is_verified_again_at_every_load(gql, runtime, published):
    """A stored version changed after publication (its signature, or its wheel's bytes) is
    refused when a tenant loads it, and nothing is installed."""
    vendor = published["vendor"]
    version_id = published["versions"]["acme.private-theme@1.0.0"]
    with runtime.db.system_session() as session:
        row = session.get(PluginVersion, version_id)
        signature, wheel = row.signature, row.wheel
    forged = base64.b64encode(bytes(64)).decode()
    try:
        _store(runtime, version_id, signature=forged)
        assert error_codes(install(gql, vendor.key, "acme.private-theme", "1.0.0")) == ["SIGNATURE_INVALID"]
        _store(runtime, version_id, signature=signature, wheel=wheel[:-1] + bytes([wheel[-1] ^ 1]))
        assert error_codes(install(gql, vendor.key, "acme.private-theme", "1.0.0")) == ["PACKAGE_TAMPERED"]
    finally:
        _store(runtime, version_id, signature=signature, wheel=wheel)
    assert gql.data("{ installedPlugins { pluginId } }", key=vendor.key)["installedPlugins"] == []


def _store(runtime: Any, version_id: str, **values: Any) -> None:
    with runtime.db.system_session() as session:
        row = session.get(PluginVersion, version_id)
        for name, value in values.items():
            setattr(row, name, value)
        session.add(row)
        session.commit()


def test_a_restarted_gateway_restores_every_tenants_plugins(gql, runtime, published, tenant):
    """What a new process does at start-up: load each tenant's installations from the database,
    verify and import them, and compose the same schemas (off the request path)."""
    from gateway.marketplace.install import build_installations
    from schema.tenant import tenant_composer

    assert "errors" not in install(gql, tenant.key, "acme.news-sentiment", "1.1.0", NEWS_CONFIG)
    fresh = build_installations(runtime.settings, runtime.db, runtime.bus, runtime.secrets, runtime.audit)
    fresh.bind_composer(tenant_composer(runtime.settings))
    try:
        assert fresh.restore(wait_s=30) >= 1
        restored = fresh.schema_for(tenant.id)
        assert restored is not None
        assert restored.root_fields == runtime.marketplace.schema_for(tenant.id).root_fields
        fields = set(restored.gql.query_type.fields)
        assert {"acmeNewsSentiment", "acmeNewsTickers"} <= fields
        view = fresh.view(tenant.id)
        assert view.by_id["acme.news-sentiment"].managed.spec.config["api_key"] == NEWS_CONFIG["api_key"]
    finally:
        fresh.stop()


def test_an_installed_data_source_feeds_only_its_tenant(gql, runtime, published, tenant, other_tenant):
    assert "errors" not in install(gql, tenant.key, "acme.news-sentiment", "1.0.0", NEWS_CONFIG)
    listed = gql.data('{ marketplace { instruments { key source assetClass } } }', key=tenant.key)
    assert {"key": "AAPL-SENT.XNAS", "source": "acme.news-sentiment", "assetClass": "ALTERNATIVE_DATA"} in \
        listed["marketplace"]["instruments"]
    query = ('{ marketplace { bars(instrument: "AAPL-SENT.XNAS", start: "2026-01-05T00:00:00Z", '
             'end: "2026-01-05T06:00:00Z", interval: "1h") { start open close volume } } }')
    bars = gql.data(query, key=tenant.key)["marketplace"]["bars"]
    assert len(bars) == 6 and all(0 <= float(b["close"]) <= 100 for b in bars)
    assert gql.data('{ marketplace { instruments { key } } }', key=other_tenant.key)["marketplace"][
        "instruments"] == []
    assert error_codes(gql(query, key=other_tenant.key)) == ["INSTRUMENT_UNKNOWN"]
    usage = runtime.marketplace.meter.usage(tenant.id, "acme.news-sentiment")
    assert usage and usage[0].bytes > 0


def test_a_request_in_flight_finishes_on_the_plugins_it_started_with(gql, runtime, published, tenant):
    """Two aliased calls of a slow plugin field run one after the other; the plugin is
    uninstalled while the first runs. The request keeps the view (and schema) it began with,
    so the second call still reaches the plugin; the next request no longer sees the field."""
    import threading

    assert "errors" not in install(gql, tenant.key, "acme.flaky", "1.0.0", {"hang_s": 0.8})
    answers: list[dict[str, Any]] = []
    request = threading.Thread(target=lambda: answers.append(
        gql("{ first: flakyHang second: flakyHang }", key=tenant.key)))
    request.start()
    time.sleep(0.3)
    gql.data('mutation { uninstallPlugin(pluginId: "acme.flaky") { id } }', key=tenant.key)
    request.join(10)
    assert answers == [{"data": {"first": "late", "second": "late"}}]
    assert error_codes(gql("{ flakyHang }", key=tenant.key)) == ["PLUGIN_NOT_INSTALLED"]


def test_a_failing_plugin_is_announced_on_plugin_events(gql, server, runtime, published, tenant):
    assert "errors" not in install(gql, tenant.key, "acme.flaky", "1.0.0")

    async def scenario() -> dict[str, Any]:
        async with TransportWS(server.ws_url, tenant.key) as ws:
            await ws.subscribe("f", "subscription { pluginEvents { action pluginId version } }")
            await subscribed(runtime, events_topic(tenant.id))
            body = await asyncio.to_thread(gql, "{ flakyBoom }", key=tenant.key)
            assert error_codes(body) == ["PLUGIN_FAILED"]
            return await ws.next(op_id="f")

    event = asyncio.run(scenario())
    assert event["payload"]["data"]["pluginEvents"] == {
        "action": "FAILED", "pluginId": "acme.flaky", "version": "1.0.0"}
