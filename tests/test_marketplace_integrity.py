"""Marketplace integrity (issue 13), through GraphQL where a client sees it: who may rate a
plugin, vendor id prefixes, schema conflicts refused at publication, reinstalling a delisted
plugin, and billing that follows use with metering that survives a crash.

Small schema-extension plugins are built here as real wheels, signed with the vendor's key and
published through `publishPluginVersion`; each test module run uses fresh prefixes, so other
modules publishing in the same session never collide."""

from __future__ import annotations

import base64
import gc
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlmodel import select

from gateway.marketplace.inspection import CoreNames, schema_clashes
from gateway.marketplace.metering import Meter
from gateway.marketplace.models import Plugin, PluginVersion
from gateway.marketplace.publishing import MarketplacePublishing
from marketplace.signing import generate_key, sign
from tests.support import error_codes, make_wheel, onboard, user_key, wait_for

PUBLISH = """mutation($w: String!, $s: String, $t: PluginTier!) {
  publishPluginVersion(wheelBase64: $w, signature: $s, tier: $t) { id pluginId status } }"""
REGISTER = """mutation($k: String!, $p: String) {
  registerVendorKey(publicKey: $k, prefix: $p) { id prefix } }"""
INSTALL = """mutation($input: InstallPluginInput!) { installPlugin(input: $input) { pluginId active } }"""
RATE = 'mutation($p: String!, $r: Int!) { ratePlugin(pluginId: $p, rating: $r) { average count } }'
STATEMENT = """query($p: String!) { vendorStatement(period: $p) {
  lines { pluginId version customer calls pricingModel currency revenue } revenueByCurrency } }"""

PLUGIN_CODE = '''
from __future__ import annotations

import strawberry

from plugins.sdk import PluginContext, SchemaExtension, hookimpl


@strawberry.type(name="{type_name}")
class Thing:
    label: str


@strawberry.type
class ThingQuery:
    @strawberry.field(name="{field}")
    def thing(self) -> Thing:
        return Thing(label="{field}")


@hookimpl
def alphintra_schema_extensions(context: PluginContext) -> list[SchemaExtension]:
    return [SchemaExtension(query=ThingQuery)]
'''


def fresh_prefix() -> str:
    return f"i{uuid.uuid4().hex[:10]}"


def plugin_wheel(plugin_id: str, field: str, type_name: str, *, version: str = "1.0.0",
                 pricing: dict[str, Any] | None = None) -> tuple[bytes, dict[str, Any]]:
    package = plugin_id.replace(".", "_").replace("-", "_")
    manifest = {
        "id": plugin_id, "name": plugin_id, "vendor": "Integrity tests", "version": version,
        "gateway": ">=0.1,<1.0", "category": "analytics", "entry_point": f"{package}.plugin",
        "hooks": ["alphintra_schema_extensions"], "capabilities": ["schema:extend"],
        "config_schema": {"type": "object"}, "pricing": pricing or {"model": "free"}, "licence": "MIT",
    }
    files = {f"{package}/__init__.py": b"",
             f"{package}/plugin.py": PLUGIN_CODE.format(field=field, type_name=type_name).encode(),
             f"{package}/alphintra_manifest.json": json.dumps(manifest).encode()}
    return make_wheel(files, package, version, plugin_id, manifest["entry_point"]), manifest


class Party:
    """A vendor tenant: its admin installs and rates, its vendor user publishes."""

    def __init__(self, runtime: Any, gql: Any, prefix: str | None = None) -> None:
        self.runtime, self.gql = runtime, gql
        self.tenant = onboard(runtime)
        _, self.key = user_key(runtime, self.tenant, "vendor")
        self.private, self.public = generate_key()
        self.registered = gql.data(REGISTER, {"k": self.public, "p": prefix}, key=self.key)[
            "registerVendorKey"]

    def publish(self, wheel: bytes, manifest: dict[str, Any], tier: str = "COMMUNITY",
                approve: bool = True) -> dict[str, Any]:
        body = self.gql(PUBLISH, {"w": base64.b64encode(wheel).decode(),
                                  "s": sign(wheel, manifest, self.private), "t": tier}, key=self.key)
        if "errors" not in body and approve and tier != "PRIVATE":
            version_id = body["data"]["publishPluginVersion"]["id"]
            self.runtime.marketplace_publishing.review(None, version_id, "IN_REVIEW")
            self.runtime.marketplace_publishing.review(None, version_id, "APPROVED")
        return body

    def customer(self, tenant_id: str) -> str:
        vendor_id = self.runtime.marketplace_publishing.vendor_of(self.tenant.id).id
        return hashlib.sha256(f"{vendor_id}|{tenant_id}".encode()).hexdigest()[:16]


def install(gql: Any, key: str, plugin_id: str, version: str = "1.0.0") -> dict[str, Any]:
    return gql(INSTALL, {"input": {"pluginId": plugin_id, "version": version, "config": {}}}, key=key)


def stored(runtime: Any, plugin_id: str) -> int:
    with runtime.db.system_session() as session:
        return len(session.exec(select(PluginVersion).where(PluginVersion.plugin_id == plugin_id)).all())


@pytest.fixture(scope="module")
def market(runtime: Any, gql: Any) -> dict[str, Any]:
    """One vendor with an explicitly reserved prefix and its published plugins."""
    prefix = fresh_prefix()
    vendor = Party(runtime, gql, prefix)
    assert vendor.registered["prefix"] == prefix
    ids = {name: f"{prefix}.{name}" for name in ("flat", "per-call", "gadget-a", "gadget-b", "doomed")}
    widget = f"{prefix.capitalize()}Widget"
    wheels = {
        "flat": plugin_wheel(ids["flat"], f"{prefix}Flat", f"{prefix.capitalize()}FlatThing",
                             pricing={"model": "flat", "amount": "10.00", "currency": "EUR"}),
        "per-call": plugin_wheel(ids["per-call"], f"{prefix}PerCall", f"{prefix.capitalize()}PerCallThing",
                                 pricing={"model": "per_call", "amount": "0.50", "currency": "EUR"}),
        # Two plugins defining one type (with different root fields).
        "gadget-a": plugin_wheel(ids["gadget-a"], f"{prefix}GadgetA", widget),
        "gadget-b": plugin_wheel(ids["gadget-b"], f"{prefix}GadgetB", widget),
        "doomed": plugin_wheel(ids["doomed"], f"{prefix}Doomed", f"{prefix.capitalize()}DoomedThing"),
    }
    for name, (wheel, manifest) in wheels.items():
        body = vendor.publish(wheel, manifest)
        assert "errors" not in body, (name, body)
    return {"vendor": vendor, "prefix": prefix, "ids": ids}


# Ratings.

def test_only_tenants_that_installed_a_plugin_rate_it_and_never_its_vendor(gql, runtime, market, tenant,
                                                                           other_tenant):
    plugin_id = market["ids"]["gadget-a"]
    assert error_codes(gql(RATE, {"p": plugin_id, "r": 5}, key=tenant.key)) == ["PLUGIN_NOT_INSTALLED"]

    assert "errors" not in install(gql, other_tenant.key, plugin_id)  # another tenant's install
    assert error_codes(gql(RATE, {"p": plugin_id, "r": 5}, key=tenant.key)) == ["PLUGIN_NOT_INSTALLED"]
    assert gql.data(RATE, {"p": plugin_id, "r": 4}, key=other_tenant.key)["ratePlugin"] == {
        "average": "4.00", "count": 1}

    # Installed once, uninstalled since: the history shows the install, so the rating stands.
    assert "errors" not in install(gql, tenant.key, plugin_id)
    gql.data(f'mutation {{ uninstallPlugin(pluginId: "{plugin_id}") {{ id }} }}', key=tenant.key)
    assert gql.data(RATE, {"p": plugin_id, "r": 2}, key=tenant.key)["ratePlugin"] == {
        "average": "3.00", "count": 2}

    # The vendor's own tenant, even with its plugin installed.
    vendor = market["vendor"]
    assert "errors" not in install(gql, vendor.tenant.key, plugin_id)
    assert error_codes(gql(RATE, {"p": plugin_id, "r": 5}, key=vendor.tenant.key)) == ["RATING_OWN_PLUGIN"]
    assert runtime.marketplace.rating_summaries([plugin_id])[plugin_id][1] == 2
    for t in (other_tenant, vendor.tenant):
        gql.data(f'mutation {{ uninstallPlugin(pluginId: "{plugin_id}") {{ id }} }}', key=t.key)


# Prefixes.

def test_a_prefix_is_its_holders_alone(gql, runtime, market):
    prefix, vendor = market["prefix"], market["vendor"]
    rival = Party(runtime, gql)
    plugin_id = f"{prefix}.lookalike"
    body = rival.publish(*plugin_wheel(plugin_id, f"{prefix}Lookalike", f"{prefix.capitalize()}Look"))
    assert error_codes(body) == ["PLUGIN_ID_PREFIX_TAKEN"]
    error = body["errors"][0]
    assert error["extensions"]["prefix"] == prefix
    shown = json.dumps(error)
    holder = runtime.marketplace_publishing.vendor_of(vendor.tenant.id)
    assert holder.id not in shown and holder.name not in shown and vendor.tenant.id not in shown
    assert stored(runtime, plugin_id) == 0
    # Nor can it be reserved again.
    again = gql(REGISTER, {"k": rival.public, "p": prefix}, key=rival.key)
    assert error_codes(again) == ["PLUGIN_ID_PREFIX_TAKEN"]
    assert runtime.marketplace_publishing.vendor_of(rival.tenant.id).prefix is None


def test_the_first_publication_reserves_the_prefix_which_never_changes(gql, runtime):
    vendor = Party(runtime, gql)
    assert vendor.registered["prefix"] is None
    prefix = fresh_prefix()
    body = vendor.publish(*plugin_wheel(f"{prefix}.first", f"{prefix}First", f"{prefix.capitalize()}First"),
                          tier="PRIVATE")
    assert "errors" not in body, body
    assert runtime.marketplace_publishing.vendor_of(vendor.tenant.id).prefix == prefix
    # Registering the same prefix again is a no-op; another one is refused; a malformed one too.
    assert gql.data(REGISTER, {"k": vendor.public, "p": prefix}, key=vendor.key)["registerVendorKey"][
        "prefix"] == prefix
    assert error_codes(gql(REGISTER, {"k": vendor.public, "p": fresh_prefix()}, key=vendor.key)) == [
        "VENDOR_PREFIX_FIXED"]
    assert error_codes(gql(REGISTER, {"k": vendor.public, "p": "Not.One"}, key=vendor.key)) == [
        "VENDOR_PREFIX_INVALID"]


def test_a_prefix_another_vendor_published_under_is_not_free(gql, runtime):
    """Vendors from before prefixes (none held): a prefix someone else already published under
    is not reserved by another; an existing plugin keeps taking versions from its owner even
    when another vendor holds its prefix, while new ids under it are the holder's."""
    legacy, newcomer = Party(runtime, gql), Party(runtime, gql)
    prefix = fresh_prefix()
    body = legacy.publish(*plugin_wheel(f"{prefix}.old", f"{prefix}Old", f"{prefix.capitalize()}Old"),
                          tier="PRIVATE")
    assert "errors" not in body, body
    _set_prefix(runtime, legacy, None)  # as migration 0015 leaves an ambiguous vendor
    assert error_codes(gql(REGISTER, {"k": newcomer.public, "p": prefix}, key=newcomer.key)) == [
        "PLUGIN_ID_PREFIX_TAKEN"]

    _set_prefix(runtime, newcomer, prefix)  # held by the newcomer all the same
    newer = legacy.publish(*plugin_wheel(f"{prefix}.old", f"{prefix}Old", f"{prefix.capitalize()}Old",
                                         version="1.1.0"), tier="PRIVATE")
    assert "errors" not in newer, newer
    assert runtime.marketplace_publishing.vendor_of(legacy.tenant.id).prefix is None  # not free
    fresh = legacy.publish(*plugin_wheel(f"{prefix}.new", f"{prefix}New", f"{prefix.capitalize()}New"),
                           tier="PRIVATE")
    assert error_codes(fresh) == ["PLUGIN_ID_PREFIX_TAKEN"]


def _set_prefix(runtime: Any, party: Party, prefix: str | None) -> None:
    from gateway.marketplace.models import Vendor

    with runtime.db.system_session() as session:
        row = session.exec(select(Vendor).where(Vendor.tenant_id == party.tenant.id)).one()
        row.prefix = prefix
        session.add(row)
        session.commit()


def test_migration_0015_backfills_unambiguous_prefixes(tmp_path, settings):
    from gateway.cli import migrate_database

    fresh = settings.with_(database_url=f"sqlite:///{tmp_path / 'backfill.db'}")
    migrate_database(fresh, "0014")
    plugins = {"v1": ["a.x", "a.y"], "v2": ["b.x", "c.y"], "v3": ["d.x"], "v4": ["d.y"], "v5": []}
    db = sqlite3.connect(tmp_path / "backfill.db")  # foreign keys off: no tenants needed
    for vendor_id, ids in plugins.items():
        db.execute("INSERT INTO vendor (id, tenant_id, name, public_key, created_at, updated_at) "
                   "VALUES (?, ?, ?, 'k', '2026-01-01', '2026-01-01')",
                   (vendor_id, f"t-{vendor_id}", vendor_id))
        for plugin_id in ids:
            db.execute("INSERT INTO plugin (id, vendor_id, name, category, tier, created_at) "
                       "VALUES (?, ?, ?, 'analytics', 'COMMUNITY', '2026-01-01')",
                       (plugin_id, vendor_id, plugin_id))
    db.commit()
    db.close()
    migrate_database(fresh)
    db = sqlite3.connect(tmp_path / "backfill.db")
    try:
        prefixes = dict(db.execute("SELECT id, prefix FROM vendor").fetchall())
    finally:
        db.close()
    assert prefixes == {"v1": "a", "v2": None, "v3": None, "v4": None, "v5": None}


# Schema conflicts at publication.

def test_a_schema_clashing_with_the_core_is_refused_at_publication(gql, runtime):
    vendor = Party(runtime, gql)
    prefix = fresh_prefix()
    field_clash = f"{prefix}.viewer"
    body = vendor.publish(*plugin_wheel(field_clash, "viewer", f"{prefix.capitalize()}Thing"))
    assert error_codes(body) == ["PLUGIN_SCHEMA_CONFLICT"], body
    assert body["errors"][0]["extensions"]["fields"] == ["query.viewer"]
    assert body["errors"][0]["extensions"]["types"] == []
    type_clash = f"{prefix}.tenant-type"
    body = vendor.publish(*plugin_wheel(type_clash, f"{prefix}Tenant", "Tenant"))
    assert error_codes(body) == ["PLUGIN_SCHEMA_CONFLICT"], body
    assert body["errors"][0]["extensions"]["types"] == ["Tenant"]
    assert stored(runtime, field_clash) == stored(runtime, type_clash) == 0
    with runtime.db.system_session() as session:
        assert session.get(Plugin, field_clash) is None

    # A clean one publishes, and its SDL is kept on the version row.
    ok = vendor.publish(*plugin_wheel(f"{prefix}.fine", f"{prefix}Fine", f"{prefix.capitalize()}Fine"))
    assert "errors" not in ok, ok
    row = runtime.marketplace_publishing.get_version(ok["data"]["publishPluginVersion"]["id"])
    assert row.sdl is not None and f"{prefix}Fine" in row.sdl and f"{prefix.capitalize()}Fine" in row.sdl


def test_without_core_names_bound_publication_does_not_check_the_schema(runtime, gql):
    """A service built without the app (no `bind_core_names`): the check is a no-op; the SDL
    is still stored."""
    vendor = Party(runtime, gql)
    service = MarketplacePublishing(runtime.db, runtime.bus, runtime.audit, runtime.marketplace.sandbox)
    prefix = fresh_prefix()
    wheel, manifest = plugin_wheel(f"{prefix}.viewer", "viewer", f"{prefix.capitalize()}Thing")
    done = service.publish(vendor.tenant.id, None, wheel, sign(wheel, manifest, vendor.private), "PRIVATE")
    assert done.created and "viewer" in (done.version.sdl or "")


def test_schema_clashes_follow_the_composition_rules():
    core = CoreNames(roots={"query": frozenset({"viewer"}), "mutation": frozenset({"login"})},
                     types=frozenset({"Query", "Tenant"}), scalars=frozenset({"String", "DateTime"}))
    sdl = ("scalar DateTime\n type Query { viewer: String, mine: Tenant, _alphintraPlaceholder: Boolean }\n"
           "type Tenant { at: DateTime }\n type Mutation { login: String }")
    assert schema_clashes(sdl, core) == (["query.viewer", "mutation.login"], ["Tenant"])
    object_named_like_a_scalar = "type Query { ok: DateTime }\n type DateTime { x: Int }"
    assert schema_clashes(object_named_like_a_scalar, core) == ([], ["DateTime"])
    assert schema_clashes("scalar DateTime\n type Query { ok: DateTime }", core) == ([], [])


# Installation.

def test_reinstalling_a_delisted_plugin_answers_delisted(gql, runtime, market, tenant):
    plugin_id = market["ids"]["doomed"]
    assert "errors" not in install(gql, tenant.key, plugin_id)
    runtime.marketplace_publishing.delist(None, plugin_id, "found malware")
    wait_for(lambda: not runtime.marketplace.is_active(tenant.id, plugin_id), timeout=10)
    # The inactive row the delisting left is still there: installing again is PLUGIN_DELISTED.
    assert error_codes(install(gql, tenant.key, plugin_id)) == ["PLUGIN_DELISTED"]
    gql.data(f'mutation {{ uninstallPlugin(pluginId: "{plugin_id}") {{ id }} }}', key=tenant.key)
    assert error_codes(install(gql, tenant.key, plugin_id)) == ["PLUGIN_DELISTED"]
    assert error_codes(install(gql, onboard(runtime).key, plugin_id)) == ["PLUGIN_DELISTED"]


def test_a_type_conflict_at_install_names_the_other_plugin(gql, market, tenant):
    first, second = market["ids"]["gadget-a"], market["ids"]["gadget-b"]
    assert "errors" not in install(gql, tenant.key, first)
    body = install(gql, tenant.key, second)
    assert error_codes(body) == ["PLUGIN_SCHEMA_CONFLICT"]
    error = body["errors"][0]
    assert error["extensions"]["plugin"] == second
    assert f"{market['prefix'].capitalize()}Widget" in error["message"] and first in error["message"]
    rows = gql.data("{ installedPlugins { pluginId } }", key=tenant.key)["installedPlugins"]
    assert rows == [{"pluginId": first}]


# Billing and metering.

def test_billing_follows_use_and_metering_survives_a_crash(gql, runtime, market, tenant, other_tenant,
                                                          single_execution):
    """Tenant A installs the flat and the per-call plugin and calls them; tenant B installs the
    flat one and never calls it. Calls recorded by meters that never flush (one dropped, one in a
    process killed outright) still count."""
    prefix, vendor = market["prefix"], market["vendor"]
    flat, per_call = market["ids"]["flat"], market["ids"]["per-call"]
    for t, plugin_id in ((tenant, flat), (tenant, per_call), (other_tenant, flat)):
        assert "errors" not in install(gql, t.key, plugin_id)
    assert gql.data(f"{{ {prefix}Flat {{ label }} }}", key=tenant.key)
    for _ in range(3):
        assert gql.data(f"{{ {prefix}PerCall {{ label }} }}", key=tenant.key)

    dropped = Meter(runtime.db)
    for _ in range(2):
        dropped.record(tenant.id, per_call, "1.0.0", size=10)
    assert dropped.pending() == 0  # already in the database
    del dropped
    gc.collect()
    _record_then_die(runtime.settings.database_url, tenant.id, per_call, calls=4)
    usage = Meter(runtime.db).usage(tenant.id, per_call)  # a new meter reads the same rows
    assert sum(u.calls for u in usage) == 3 + 2 + 4

    period = datetime.now(UTC).strftime("%Y-%m")
    statement = gql.data(STATEMENT, {"p": period}, key=vendor.key)["vendorStatement"]
    mine = {(line["pluginId"], line["customer"]): line for line in statement["lines"]
            if line["pluginId"] in (flat, per_call)}
    a, b = vendor.customer(tenant.id), vendor.customer(other_tenant.id)
    assert mine[(flat, a)]["calls"] == 1 and mine[(flat, a)]["revenue"] == "10.00"
    assert mine[(per_call, a)]["calls"] == 9 and mine[(per_call, a)]["revenue"] == "4.50"
    assert (flat, b) not in mine  # installed, never called: not billed
    assert not [line for line in statement["lines"] if line["customer"] == b and line["revenue"] != "0"]


def _record_then_die(url: str, tenant_id: str, plugin_id: str, calls: int) -> None:
    """Record in another process that exits at once (no flush, no clean-up), as a crash would."""
    code = ("import os, sys\n"
            "from gateway.db import Database\n"
            "from gateway.marketplace.metering import Meter\n"
            "meter = Meter(Database(sys.argv[1]))\n"
            f"for _ in range({calls}):\n"
            "    meter.record(sys.argv[2], sys.argv[3], '1.0.0', size=5)\n"
            "os._exit(9)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHINTRA_")}
    done = subprocess.run([sys.executable, "-c", code, url, tenant_id, plugin_id], env=env,
                          capture_output=True, timeout=120)
    assert done.returncode == 9, done.stderr.decode()[-2000:]
