"""Federation with per-tenant plugins (issue 13): one supergraph serves every tenant.

`_service { sdl }` is the same for every caller (core + every approved, non-private plugin's
fields; a plugin colliding with an earlier one is left out). A tenant that has not installed a
plugin gets its fields as null with PLUGIN_NOT_INSTALLED while the rest of the operation runs;
its introspection still shows only what it installed. The last test composes a supergraph with
@apollo/composition and queries it through @apollo/gateway (Node, tests/federation/) for two
tenants.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from graphql import build_schema, parse, print_ast, validate

from gateway.http.graphql import _prune
from gateway.marketplace.tenant_plugins import ComposedSchema
from marketplace.signing import generate_key, sign
from schema import federation
from tests.support import TenantHandle, error_codes, make_wheel, onboard
from tests.test_marketplace_install import CAPTIVE_MANIFEST, NEWS_CONFIG, example_wheel, install

NODE_DIR = Path(__file__).resolve().parent / "federation"
SENTIMENT = '{ tenant { slug } acmeNewsSentiment(ticker: "AAPL.XNAS") { index } }'
SERVICE = "{ _service { sdl } }"

# A PRIVATE plugin with a field of its own: its vendor's tenant installs it, the shared
# supergraph never sees it.
PROBE_CODE = '''
from __future__ import annotations

import strawberry

from plugins.sdk import PluginContext, SchemaExtension, hookimpl


@strawberry.type
class FedProbeQuery:
    @strawberry.field
    def fed_private_probe(self) -> str:
        return "private"


@hookimpl
def alphintra_schema_extensions(context: PluginContext) -> list[SchemaExtension]:
    return [SchemaExtension(query=FedProbeQuery)]
'''


@pytest.fixture(scope="module")
def plugins(runtime: Any, gql: Any) -> dict[str, Any]:
    """A vendor (under a prefix of its own) publishes the news example, the same code under a
    second id (approved later: its names collide) and a PRIVATE probe; tenant A installs the
    news plugin, the vendor's tenant its probe, B and C nothing."""
    prefix = f"fed{uuid.uuid4().hex[:8]}"
    vendor = onboard(runtime)
    private_key, public_key = generate_key()
    pub = runtime.marketplace_publishing
    pub.register_vendor_key(vendor.id, vendor.admin_id, public_key, "Federation Data")

    def publish(wheel: bytes, manifest: dict[str, Any], tier: str = "COMMUNITY") -> None:
        version = pub.publish(vendor.id, vendor.admin_id, wheel, sign(wheel, manifest, private_key),
                              tier).version
        if tier != "PRIVATE":
            pub.review(None, version.id, "IN_REVIEW")
            pub.review(None, version.id, "APPROVED")

    news, copy, probe = f"{prefix}.news-sentiment", f"{prefix}.news-copy", f"{prefix}.private-probe"
    publish(*example_wheel("news_sentiment", "acme_news", plugin_id=news))
    publish(*example_wheel("news_sentiment", "acme_news", plugin_id=copy))
    probe_manifest = {**CAPTIVE_MANIFEST, "id": probe, "name": "Probe", "entry_point": "fed_probe.plugin"}
    files = {"fed_probe/__init__.py": b"", "fed_probe/plugin.py": PROBE_CODE.encode(),
             "fed_probe/alphintra_manifest.json": json.dumps(probe_manifest).encode()}
    publish(make_wheel(files, probe.replace(".", "_").replace("-", "_"), "1.0.0", probe, "fed_probe.plugin"),
            probe_manifest, tier="PRIVATE")
    a, b, c = onboard(runtime), onboard(runtime), onboard(runtime)
    assert "errors" not in install(gql, a.key, news, "1.0.0", NEWS_CONFIG)
    assert "errors" not in install(gql, vendor.key, probe, "1.0.0", {})
    return {"a": a, "b": b, "c": c, "vendor": vendor, "news": news, "copy": copy, "probe": probe}


def test_a_second_app_on_the_runtime_gone_does_not_unbind_the_first(runtime, gql, plugins):
    """A test (or a tool) may build another app on the same runtime for a while: when it is
    gone, `_service` of the app still serving must keep its federated schema."""
    import gc

    from gateway.app import create_app

    before = gql.data(SERVICE, key=plugins["a"].key)["_service"]["sdl"]
    second = create_app(runtime=runtime)
    assert federation.bound(runtime) is not None
    del second
    gc.collect()
    assert federation.bound(runtime) is not None
    assert gql.data(SERVICE, key=plugins["a"].key)["_service"]["sdl"] == before
    assert "acmeNewsSentiment(" in before


def owner(runtime: Any, root: str, name: str) -> str | None:
    """Which plugin the federated schema routes a root field to (in a whole-suite run another
    module's plugin with the same field may have been approved first, and owns it)."""
    federated = federation.bound(runtime)
    assert federated is not None
    return federated.current(refresh=True).root_fields.get((root, name))


def query_fields(gql: Any, key: str) -> set[str]:
    return {f["name"] for f in gql.data('{ __type(name: "Query") { fields { name } } }', key=key)
            ["__type"]["fields"]}


def test_service_sdl_is_one_for_every_tenant(gql, runtime, plugins):
    tenants: list[TenantHandle] = [plugins[k] for k in ("a", "b", "c", "vendor")]
    sdls = [gql.data(SERVICE, key=t.key)["_service"]["sdl"] for t in tenants]
    assert len(set(sdls)) == 1  # byte-identical: with the news plugin, none, or a private one
    sdl = sdls[0]
    parse(sdl)
    assert "acmeNewsSentiment(" in sdl and "type AcmeSentimentReading {" in sdl
    assert "extend type Query {" in sdl
    assert "fedPrivateProbe" not in sdl  # PRIVATE: not for a shared supergraph
    state = federation.bound(runtime).state(refresh=True)
    assert plugins["copy"] in state.left_out  # the later of two colliding plugins
    assert owner(runtime, "query", "acmeNewsSentiment") not in (None, plugins["copy"], plugins["probe"])
    # The vendor's own tenant still reaches its private field; nobody else's schema has it.
    assert gql.data("{ fedPrivateProbe }", key=plugins["vendor"].key) == {"fedPrivateProbe": "private"}
    assert error_codes(gql("{ fedPrivateProbe }", key=plugins["b"].key)) == ["GRAPHQL_VALIDATION_FAILED"]


def test_an_uninstalled_plugin_field_answers_null_and_plugin_not_installed(gql, runtime, plugins):
    a, b = plugins["a"], plugins["b"]
    plugin = owner(runtime, "query", "acmeNewsSentiment")
    mine = gql(SENTIMENT, key=a.key)
    assert "errors" not in mine and 0 <= float(mine["data"]["acmeNewsSentiment"]["index"]) <= 100

    body = gql(SENTIMENT, key=b.key)
    assert body["data"] == {"tenant": {"slug": b.slug}, "acmeNewsSentiment": None}
    [error] = body["errors"]
    assert error["extensions"] == {"code": "PLUGIN_NOT_INSTALLED", "plugin": plugin}
    assert error["path"] == ["acmeNewsSentiment"] and error["locations"] == [{"line": 1, "column": 19}]
    assert f"plugin {plugin} is not installed" in error["message"]

    # Under an alias, in a fragment, with a variable only it used: the rest still runs.
    body = gql("""query($t: String!) { ...Sentiment tenant { slug } }
        fragment Sentiment on Query { reading: acmeNewsSentiment(ticker: $t) { index } }""",
               {"t": "AAPL.XNAS"}, key=b.key)
    assert body["data"] == {"tenant": {"slug": b.slug}, "reading": None}
    assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
        (["reading"], "PLUGIN_NOT_INSTALLED")]
    # Nothing but plugin fields; skipped ones are not answered at all.
    body = gql('{ ... on Query { acmeNewsSentiment(ticker: "AAPL.XNAS") { index } } }', key=b.key)
    assert body["data"] == {"acmeNewsSentiment": None}
    assert error_codes(body) == ["PLUGIN_NOT_INSTALLED"]
    skipped = ('query($on: Boolean!) { tenant { slug } '
               'acmeNewsSentiment(ticker: "AAPL.XNAS") @include(if: $on) { index } }')
    body = gql(skipped, {"on": False}, key=b.key)
    assert body == {"data": {"tenant": {"slug": b.slug}}}

    # Other validation errors stay as they were, plugin fields beside them or not.
    assert error_codes(gql("{ tenant { slug } noSuchField }", key=b.key)) == ["GRAPHQL_VALIDATION_FAILED"]
    assert set(error_codes(gql('{ noSuchField acmeNewsSentiment(ticker: "AAPL.XNAS") { index } }',
                               key=b.key))) == {"GRAPHQL_VALIDATION_FAILED"}
    assert set(error_codes(gql("{ acmeNewsSentiment(nope: 1) { index } }", key=b.key))) == {
        "GRAPHQL_VALIDATION_FAILED"}

    # Introspection is still per tenant.
    assert "acmeNewsSentiment" in query_fields(gql, a.key)
    assert "acmeNewsSentiment" not in query_fields(gql, b.key)
    types = {t["name"] for t in gql.data("{ __schema { types { name } } }", key=b.key)["__schema"]["types"]}
    assert "AcmeSentimentReading" not in types


FEDERATED_SDL = """
type Query { core: String plug(x: Int): P }
type P { v: Int }
type Mutation { doIt: Int plugDo(x: Int): Int }
"""
TENANT_SDL = "type Query { core: String } type Mutation { doIt: Int }"


def test_uninstalled_fields_are_stood_in_for_and_what_only_they_used_goes():
    """The document the endpoint runs for a tenant without plugin p.one: its field becomes
    `__typename` under the same key (directives kept); the fragment and variable only it used
    go; the other operation names no missing field."""
    federated = ComposedSchema(None, build_schema(FEDERATED_SDL),
                               {("query", "plug"): "p.one", ("mutation", "plugDo"): "p.two"})
    document = parse("""
        query One($x: Int, $show: Boolean!) { ...Plugged core }
        query Two { core }
        fragment Plugged on Query { ... on Query { p: plug(x: $x) @include(if: $show) { ...Fields } } }
        fragment Fields on P { v }
        mutation M { plugDo(x: 1) doIt }""")
    assert validate(federated.gql, document) == []
    pruned = _prune(document, federated, installed=set())
    assert pruned is not None and validate(build_schema(TENANT_SDL), pruned.document) == []
    printed = print_ast(pruned.document)
    assert "p: __typename @include(if: $show)" in printed and "Fields" not in printed
    assert "query One($show: Boolean!)" in printed
    assert {name: [(m.key, m.plugin, m.field) for m in items] for name, items in pruned.missing.items()} == {
        "One": [("p", "p.one", "plug")], "M": [("plugDo", "p.two", "plugDo")]}
    # Installed: nothing to stand in for.
    assert _prune(parse("{ plug { v } }"), federated, installed={("query", "plug")}) is None


def _node() -> str:
    """Node, with tests/federation's packages installed by `npm ci` (offline when npm's cache has
    them) when node_modules is missing or older than the lock file. No skip: without Node and
    npm the test fails and says so."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "this test needs Node.js 20+ and npm (tests/federation/package.json)"
    installed = NODE_DIR / "node_modules" / ".package-lock.json"  # npm's record of what it installed
    if not installed.exists() or installed.stat().st_mtime < (NODE_DIR / "package-lock.json").stat().st_mtime:
        done = subprocess.run([npm, "ci", "--prefer-offline", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"npm ci failed in {NODE_DIR}:\n{done.stdout}\n{done.stderr}"
    return node


@pytest.mark.slow
def test_a_supergraph_composed_once_serves_both_tenants(gql, server, runtime, plugins):
    """The issue's "done when": compose once from `_service`, query through @apollo/gateway
    as tenant A (installed the news plugin) and tenant B (did not)."""
    node = _node()
    a, b = plugins["a"], plugins["b"]
    started = time.monotonic()
    env = {**os.environ, "APOLLO_TELEMETRY_DISABLED": "true", "NO_PROXY": "127.0.0.1,localhost"}
    done = subprocess.run([node, "supergraph.mjs", f"{server.url}/graphql", SENTIMENT, a.key, b.key],
                          cwd=NODE_DIR, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert time.monotonic() - started < 60
    assert "acmeNewsSentiment" in out["supergraphQueryFields"]
    assert "fedPrivateProbe" not in out["supergraphQueryFields"]

    for_a, for_b = out["results"]
    assert "errors" not in for_a, for_a
    assert for_a["data"]["tenant"] == {"slug": a.slug}
    assert 0 <= float(for_a["data"]["acmeNewsSentiment"]["index"]) <= 100

    assert for_b["data"] == {"tenant": {"slug": b.slug}, "acmeNewsSentiment": None}
    [error] = for_b["errors"]
    assert error["extensions"]["code"] == "PLUGIN_NOT_INSTALLED"
    assert error["extensions"]["plugin"] == owner(runtime, "query", "acmeNewsSentiment")
    assert error["path"] == ["acmeNewsSentiment"]

    # B's own schema, asked directly, still has no such field.
    assert "acmeNewsSentiment" not in query_fields(gql, b.key)
    # And `_service` answered the same SDL to both (the supergraph was composed from A's call).
    sdl = gql.data(SERVICE, key=b.key)["_service"]["sdl"]
    assert hashlib.sha256(sdl.encode()).hexdigest() == out["sdlSha256"]
