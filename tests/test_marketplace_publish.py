"""Publishing plugins end to end: the example plugins built into real wheels, signed, published
through GraphQL, reviewed and delisted; and every refusal with its code and nothing stored.

The example wheels are built once per session (pip, offline). Each test gives its plugins
fresh ids (`variant` rewrites the manifest id and the entry point and recomputes RECORD), so
tests, and other test modules publishing the same examples, never collide on a plugin id.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import io
import json
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import select

from gateway.audit import AuditRecord
from gateway.db import ALL_TENANTS
from gateway.events import make_bus
from gateway.marketplace.models import Plugin, PluginVersion
from gateway.marketplace.publishing import DELISTED_TOPIC, MarketplacePublishing
from marketplace import signing
from marketplace.build import build_wheel
from marketplace.conformance import compare_hooks, run_kit
from marketplace.manifest import ManifestInvalid, is_compatible, parse_manifest
from marketplace.wheel import MANIFEST_FILE, WheelLimits, WheelUnsafe, read_wheel
from tests.support import error_codes, onboard, user_key

EXAMPLES = Path(__file__).resolve().parent.parent / "marketplace" / "examples"

PUBLISH = """mutation($w: String!, $s: String, $t: PluginTier!) {
  publishPluginVersion(wheelBase64: $w, signature: $s, tier: $t) {
    id pluginId version status tier name category hooks capabilities reasons created wheelSha256
  } }"""
REGISTER = "mutation($k: String!) { registerVendorKey(publicKey: $k, name: \"Acme\") { id publicKey } }"
REVIEW = """mutation($v: ID!, $d: ReviewDecision!, $r: [String!]) {
  reviewPluginVersion(versionId: $v, decision: $d, reasons: $r) { id status reasons } }"""
DELIST = "mutation($p: ID!) { delistPlugin(pluginId: $p, reason: \"malware\") { pluginId delistedAt } }"
MINE = "query($a: String) { vendorPluginVersions(first: 50, after: $a) { edges { node { id pluginId " \
       "status } } pageInfo { hasNextPage endCursor } } }"
QUEUE = "{ pluginReviewQueue(first: 100) { edges { node { id pluginId status } } } }"


# Wheels.

@pytest.fixture(scope="session")
def example_wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("wheels")
    return {name: build_wheel(EXAMPLES / name, out).read_bytes()
            for name in ("news_sentiment", "lion_exchange", "harbour_theme")}


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def repack(wheel: bytes, change: Callable[[dict[str, bytes]], None], *, fix_record: bool = True,
           stamp: tuple[int, int, int, int, int, int] = (2024, 1, 2, 3, 4, 6)) -> bytes:
    """The wheel with its files changed by `change`; RECORD recomputed unless `fix_record` is False."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    change(files)
    record = next(name for name in files if name.endswith(".dist-info/RECORD"))
    if fix_record:
        rows = io.StringIO()
        writer = csv.writer(rows, lineterminator="\n")
        for name, data in files.items():
            writer.writerow([name, "", ""] if name == record else [name, _record_hash(data), len(data)])
        files[record] = rows.getvalue().encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, stamp), data)
    return out.getvalue()


def _manifest_name(files: dict[str, bytes]) -> str:
    return next(n for n in files if n.endswith("/" + MANIFEST_FILE))


def variant(wheel: bytes, *, plugin_id: str | None = None, version: str | None = None,
            manifest: Callable[[dict[str, Any]], None] | None = None,
            files: Callable[[dict[str, bytes]], None] | None = None) -> bytes:
    def change(all_files: dict[str, bytes]) -> None:
        name = _manifest_name(all_files)
        data = json.loads(all_files[name])
        old_id = data["id"]
        if plugin_id:
            data["id"] = plugin_id
            eps = next(n for n in all_files if n.endswith(".dist-info/entry_points.txt"))
            all_files[eps] = all_files[eps].decode().replace(old_id, plugin_id).encode()
        if version:
            data["version"] = version
        if manifest:
            manifest(data)
        all_files[name] = json.dumps(data).encode()
        if files:
            files(all_files)
    return repack(wheel, change)


def fresh_id(stem: str) -> str:
    return f"t{uuid.uuid4().hex[:10]}.{stem}"


# Parties.

class Vendor:
    def __init__(self, runtime: Any, gql: Any) -> None:
        self.tenant = onboard(runtime)
        self.user_id, self.key = user_key(runtime, self.tenant, "vendor")
        self.private, self.public = signing.generate_key()
        gql.data(REGISTER, {"k": self.public}, key=self.key)
        self.gql = gql

    def publish(self, wheel: bytes, *, tier: str = "COMMUNITY", signature: str | bool | None = True
                ) -> dict[str, Any]:
        if signature is True:
            contents = read_wheel(wheel, WheelLimits(max_bytes=1 << 30))
            signature = signing.sign(contents, contents.manifest_data, self.private)
        return self.gql(PUBLISH, {"w": base64.b64encode(wheel).decode(), "s": signature, "t": tier},
                        key=self.key)


@pytest.fixture
def vendor(runtime: Any, gql: Any) -> Vendor:
    return Vendor(runtime, gql)


@pytest.fixture
def reviewer(runtime: Any) -> str:
    ops = onboard(runtime)
    user_id, key = user_key(runtime, ops)
    runtime.policy.grant(user_id, "platform_admin", ALL_TENANTS)
    return key


def stored(runtime: Any, plugin_id: str) -> tuple[int, int]:
    with runtime.db.system_session() as session:
        plugins = session.exec(select(func.count()).select_from(Plugin).where(Plugin.id == plugin_id)).one()
        versions = session.exec(select(func.count()).select_from(PluginVersion)
                                .where(PluginVersion.plugin_id == plugin_id)).one()
    return int(plugins), int(versions)


def audit_kinds(runtime: Any, subject: str) -> list[str]:
    with runtime.db.system_session() as session:
        rows = session.exec(select(AuditRecord).where(AuditRecord.subject == subject)
                            .order_by(AuditRecord.at, AuditRecord.seq)).all()
    return [r.kind for r in rows]


# End to end.

def test_examples_publish_review_and_verify_end_to_end(runtime, gql, example_wheels, vendor, reviewer):
    published = {}
    for name, stem in (("news_sentiment", "news"), ("lion_exchange", "sgx"), ("harbour_theme", "theme")):
        plugin_id = fresh_id(stem)
        body = vendor.publish(variant(example_wheels[name], plugin_id=plugin_id))
        assert "errors" not in body, body
        version = body["data"]["publishPluginVersion"]
        assert (version["pluginId"], version["status"], version["tier"], version["created"]) == \
            (plugin_id, "SUBMITTED", "COMMUNITY", True)
        published[name] = version
    assert published["news_sentiment"]["category"] == "data-source"
    assert published["news_sentiment"]["hooks"] == ["alphintra_market_data_sources",
                                                    "alphintra_schema_extensions"]
    assert published["lion_exchange"]["capabilities"] == ["orders:submit", "marketdata:publish"]
    assert published["harbour_theme"]["category"] == "white-label"

    # Publishing the same bytes again answers the stored version (idempotent), stores nothing new.
    news = published["news_sentiment"]
    again = vendor.publish(variant(example_wheels["news_sentiment"], plugin_id=news["pluginId"]))
    assert again["data"]["publishPluginVersion"]["id"] == news["id"]
    assert again["data"]["publishPluginVersion"]["created"] is False
    assert stored(runtime, news["pluginId"]) == (1, 1)
    changed = vendor.publish(variant(example_wheels["news_sentiment"], plugin_id=news["pluginId"],
                                     manifest=lambda m: m.update(description="new words")))
    assert error_codes(changed) == ["VERSION_EXISTS"]
    assert stored(runtime, news["pluginId"]) == (1, 1)

    mine = gql.data(MINE, None, key=vendor.key)["vendorPluginVersions"]["edges"]
    assert {e["node"]["id"] for e in mine} == {v["id"] for v in published.values()}
    page_query = MINE.replace("first: 50", "first: 2")
    page = gql.data(page_query, None, key=vendor.key)["vendorPluginVersions"]
    rest = gql.data(page_query, {"a": page["pageInfo"]["endCursor"]}, key=vendor.key)["vendorPluginVersions"]
    assert page["pageInfo"]["hasNextPage"] and not rest["pageInfo"]["hasNextPage"]
    assert [e["node"]["id"] for e in page["edges"] + rest["edges"]] == [e["node"]["id"] for e in mine]
    queue = {e["node"]["id"] for e in gql.data(QUEUE, None, key=reviewer)["pluginReviewQueue"]["edges"]}
    assert {v["id"] for v in published.values()} <= queue

    for version in published.values():
        assert gql.data(REVIEW, {"v": version["id"], "d": "IN_REVIEW"}, key=reviewer)[
            "reviewPluginVersion"]["status"] == "IN_REVIEW"
        assert gql.data(REVIEW, {"v": version["id"], "d": "APPROVED"}, key=reviewer)[
            "reviewPluginVersion"]["status"] == "APPROVED"
        manifest = runtime.marketplace_publishing.verify_stored(version["id"])
        assert manifest.id == version["pluginId"]
        assert audit_kinds(runtime, version["id"]) == [
            "marketplace.version_published", "marketplace.version_reviewed",
            "marketplace.version_reviewed"]
    queue = {e["node"]["id"] for e in gql.data(QUEUE, None, key=reviewer)["pluginReviewQueue"]["edges"]}
    assert not queue & {v["id"] for v in published.values()}


def test_the_same_content_rebuilt_is_the_same_version(runtime, example_wheels, vendor):
    """Another zip of the same files (other timestamps, so other bytes) signed again: Ed25519 is
    deterministic, so the signature is the same and publishing answers the stored version."""
    plugin_id = fresh_id("sgx")
    first = variant(example_wheels["lion_exchange"], plugin_id=plugin_id)
    rebuilt = repack(first, lambda files: None, stamp=(2025, 6, 7, 8, 9, 10))
    assert rebuilt != first
    one = vendor.publish(first)["data"]["publishPluginVersion"]
    two = vendor.publish(rebuilt)["data"]["publishPluginVersion"]
    assert (two["id"], two["created"], one["created"]) == (one["id"], False, True)
    assert stored(runtime, plugin_id) == (1, 1)


def test_who_sees_a_version(runtime, example_wheels, vendor, gql):
    service = runtime.marketplace_publishing
    public_id, private_id = fresh_id("news"), fresh_id("theme")
    public = vendor.publish(variant(example_wheels["news_sentiment"], plugin_id=public_id))
    private = vendor.publish(variant(example_wheels["harbour_theme"], plugin_id=private_id), tier="PRIVATE")
    rows = [service.get_version(b["data"]["publishPluginVersion"]["id"]) for b in (public, private)]
    plugins = service.plugins_of([public_id, private_id])
    stranger = onboard(runtime).id
    submitted, approved_private = rows
    assert service.can_see(vendor.tenant.id, False, submitted, plugins[public_id])
    assert not service.can_see(stranger, False, submitted, plugins[public_id])  # not yet approved
    assert service.can_see(stranger, True, submitted, plugins[public_id])  # a platform admin
    assert service.can_see(vendor.tenant.id, False, approved_private, plugins[private_id])
    assert not service.can_see(stranger, False, approved_private, plugins[private_id])  # PRIVATE
    submitted.status = "APPROVED"
    assert service.can_see(stranger, False, submitted, plugins[public_id])


def test_private_tier_is_approved_at_once_and_tier_is_kept(runtime, gql, example_wheels, vendor):
    plugin_id = fresh_id("theme")
    body = vendor.publish(variant(example_wheels["harbour_theme"], plugin_id=plugin_id), tier="PRIVATE")
    assert body["data"]["publishPluginVersion"]["status"] == "APPROVED"
    later = vendor.publish(variant(example_wheels["harbour_theme"], plugin_id=plugin_id, version="1.1.0"),
                           tier="COMMUNITY")
    assert error_codes(later) == ["TIER_MISMATCH"]
    assert stored(runtime, plugin_id) == (1, 1)


# Refusals: each with its code, and nothing stored.

def _flip_plugin_byte(files: dict[str, bytes]) -> None:
    name = next(n for n in files if n.endswith("/plugin.py"))
    data = bytearray(files[name])
    data[len(data) // 2] ^= 0x01
    files[name] = bytes(data)


def _raw_bit_flip(wheel: bytes) -> bytes:
    """Flip one bit inside plugin.py's compressed bytes in the archive itself."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("/plugin.py"))
    header = info.header_offset
    name_len = int.from_bytes(wheel[header + 26:header + 28], "little")
    extra_len = int.from_bytes(wheel[header + 28:header + 30], "little")
    start = header + 30 + name_len + extra_len
    data = bytearray(wheel)
    data[start + info.compress_size // 2] ^= 0x04
    return bytes(data)


def _zip(entries: dict[str, bytes], symlink: str | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            if name == symlink:
                info.external_attr = (0o120777 << 16)
            archive.writestr(info, data)
    return out.getvalue()


def _signed_then(vendor: Vendor, wheel: bytes, tamper: Callable[[bytes], bytes]) -> tuple[bytes, str]:
    contents = read_wheel(wheel)
    signature = signing.sign(contents, contents.manifest_data, vendor.private)
    return tamper(wheel), signature


def _raise_on_import(files: dict[str, bytes]) -> None:
    name = next(n for n in files if n.endswith("/plugin.py"))
    files[name] += b"\nraise RuntimeError('the vendor forgot a dependency')\n"


def _declare_connector_too(data: dict[str, Any]) -> None:
    data["hooks"] = [*data["hooks"], "alphintra_exchange_connectors"]


def _hide_a_hook(data: dict[str, Any]) -> None:
    data["hooks"] = ["alphintra_market_data_sources"]


def _bad_manifest(data: dict[str, Any]) -> None:
    data["version"] = "1.0"
    data["pricing"] = {"model": "gratis"}
    data["category"] = "toys"


def _float_bars(files: dict[str, bytes]) -> None:
    name = next(n for n in files if n.endswith("/plugin.py"))
    files[name] = files[name].replace(b"open=values[0]", b"open=float(values[0])")


CASES = {
    "not a zip": (lambda w, pid: b"MZ this is not a wheel at all", "WHEEL_INVALID"),
    "zip but not a wheel": (lambda w, pid: _zip({"hello.py": b"print(1)\n"}), "WHEEL_INVALID"),
    "path traversal": (lambda w, pid: repack(variant(w, plugin_id=pid), lambda f: f.update(
        {"../../etc/cron.d/evil": b"* * * * * root sh\n"})), "WHEEL_UNSAFE"),
    "absolute path": (lambda w, pid: repack(variant(w, plugin_id=pid), lambda f: f.update(
        {"/tmp/evil.py": b"x = 1\n"})), "WHEEL_UNSAFE"),
    # `pkg//plugin.py` unpacks onto `pkg/plugin.py`, replacing the reviewed file.
    "empty path segment": (lambda w, pid: repack(variant(w, plugin_id=pid), lambda f: f.update(
        {"acme_news//plugin.py": b"import os  # hidden\n"})), "WHEEL_UNSAFE"),
    "duplicate but for case": (lambda w, pid: repack(variant(w, plugin_id=pid), lambda f: f.update(
        {"acme_news/PLUGIN.py": b"import os  # hidden\n"})), "WHEEL_UNSAFE"),
    "symlink": (lambda w, pid: _zip({"pkg/link": b"/etc/passwd"}, symlink="pkg/link"), "WHEEL_UNSAFE"),
    "shadows the SDK": (lambda w, pid: variant(w, plugin_id=pid, files=lambda f: f.update(
        {"plugins/sdk.py": b"x = 1\n"})), "WHEEL_UNSAFE"),
    "manifest schema": (lambda w, pid: variant(w, plugin_id=pid, manifest=_bad_manifest),
                        "MANIFEST_INVALID"),
    "hooks lie (declares more)": (lambda w, pid: variant(w, plugin_id=pid, manifest=_declare_connector_too),
                                  "MANIFEST_HOOKS_MISMATCH"),
    "hooks lie (hides one)": (lambda w, pid: variant(w, plugin_id=pid, manifest=_hide_a_hook),
                              "MANIFEST_HOOKS_MISMATCH"),
    "raises on import": (lambda w, pid: variant(w, plugin_id=pid, files=_raise_on_import),
                         "PLUGIN_IMPORT_FAILED"),
    # The loader imports a wheel under a namespace (marketplace/loader.py), and so does inspection.
    "imports its own package absolutely": (lambda w, pid: variant(w, plugin_id=pid, files=lambda f: f.update(
        {"acme_news/__init__.py": b"import acme_news.plugin\n"})), "PLUGIN_IMPORT_FAILED"),
    "fails conformance": (lambda w, pid: variant(w, plugin_id=pid, files=_float_bars),
                          "CONFORMANCE_FAILED"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_packages_are_refused_with_a_code_and_nothing_stored(runtime, example_wheels, vendor, case):
    make, code = CASES[case]
    plugin_id = fresh_id("news")
    wheel = make(example_wheels["news_sentiment"], plugin_id)
    try:
        contents = read_wheel(wheel)
        signature = signing.sign(contents, contents.manifest_data, vendor.private)
    except Exception:
        signature = base64.b64encode(b"\x00" * 64).decode()
    before = audit_kinds(runtime, plugin_id)
    body = vendor.publish(wheel, signature=signature)
    assert error_codes(body) == [code], body
    assert stored(runtime, plugin_id) == (0, 0)
    assert audit_kinds(runtime, plugin_id) == before
    if code == "MANIFEST_INVALID":
        paths = {e["path"] for e in body["errors"][0]["extensions"]["errors"]}
        assert {"$.version", "$.pricing.model", "$.category"} <= paths
    if code in ("MANIFEST_HOOKS_MISMATCH", "PLUGIN_IMPORT_FAILED", "CONFORMANCE_FAILED"):
        assert body["errors"][0]["extensions"]["reasons"]
    if case == "raises on import":
        assert "the vendor forgot a dependency" in body["errors"][0]["extensions"]["reasons"][0]


SIGNATURE_CASES = {
    # A file changed after signing, RECORD left as it was: the package is not what was signed.
    "a changed file": (lambda v, w: _signed_then(v, w, lambda x: repack(x, _flip_plugin_byte,
                                                                         fix_record=False)),
                       "PACKAGE_TAMPERED"),
    # One bit flipped in the archive's bytes after signing.
    "a bit flip": (lambda v, w: _signed_then(v, w, _raw_bit_flip), "PACKAGE_TAMPERED"),
    # A file changed and RECORD recomputed: internally consistent, but not what was signed.
    "changed and re-recorded": (lambda v, w: _signed_then(v, w, lambda x: repack(x, _flip_plugin_byte)),
                                "SIGNATURE_INVALID"),
    "another key": (lambda v, w: (w, signing.sign(read_wheel(w), read_wheel(w).manifest_data,
                                                  signing.generate_key()[0])), "SIGNATURE_INVALID"),
    "garbage": (lambda v, w: (w, "bm90IGEgc2lnbmF0dXJl"), "SIGNATURE_INVALID"),
    "unsigned": (lambda v, w: (w, None), "PACKAGE_UNSIGNED"),
    "empty signature": (lambda v, w: (w, ""), "PACKAGE_UNSIGNED"),
}


@pytest.mark.parametrize("case", list(SIGNATURE_CASES))
def test_tampered_and_badly_signed_packages_are_refused(runtime, example_wheels, vendor, case):
    make, code = SIGNATURE_CASES[case]
    plugin_id = fresh_id("news")
    wheel, signature = make(vendor, variant(example_wheels["news_sentiment"], plugin_id=plugin_id))
    body = vendor.publish(wheel, signature=signature)
    assert error_codes(body) == [code], body
    assert stored(runtime, plugin_id) == (0, 0)


def test_a_plugin_that_hangs_on_import_is_cut_off(runtime, example_wheels, vendor):
    service = MarketplacePublishing(runtime.db, runtime.bus, runtime.audit, runtime.marketplace.sandbox,
                                    inspection_timeout_s=3)
    plugin_id = fresh_id("news")

    def hang(files: dict[str, bytes]) -> None:
        name = next(n for n in files if n.endswith("/plugin.py"))
        files[name] += b"\nwhile True:\n    pass\n"

    wheel = variant(example_wheels["news_sentiment"], plugin_id=plugin_id, files=hang)
    contents = read_wheel(wheel)
    with pytest.raises(Exception) as raised:
        service.publish(vendor.tenant.id, vendor.user_id, wheel,
                        signing.sign(contents, contents.manifest_data, vendor.private), "COMMUNITY")
    assert getattr(raised.value, "code", None) == "INSPECTION_TIMEOUT"
    assert stored(runtime, plugin_id) == (0, 0)


def test_wheel_limits_refuse_bombs_and_crowds(example_wheels):
    wheel = example_wheels["news_sentiment"]
    with pytest.raises(WheelUnsafe):
        read_wheel(wheel, WheelLimits(max_bytes=len(wheel) - 1))
    with pytest.raises(WheelUnsafe):
        read_wheel(wheel, WheelLimits(max_files=3))
    with pytest.raises(WheelUnsafe):
        read_wheel(wheel, WheelLimits(max_unpacked_bytes=100))


def test_publishing_needs_a_vendor_key_and_the_plugin_right(runtime, gql, example_wheels):
    tenant = onboard(runtime)
    _, viewer = user_key(runtime, tenant, "viewer")
    wheel = base64.b64encode(example_wheels["harbour_theme"]).decode()
    body = gql(PUBLISH, {"w": wheel, "s": "x", "t": "COMMUNITY"}, key=viewer)
    assert error_codes(body) == ["FORBIDDEN"]
    _, vendor_key = user_key(runtime, tenant, "vendor")
    body = gql(PUBLISH, {"w": wheel, "s": "x", "t": "COMMUNITY"}, key=vendor_key)
    assert error_codes(body) == ["VENDOR_NOT_REGISTERED"]
    body = gql(REGISTER, {"k": "c2hvcnQ="}, key=vendor_key)
    assert error_codes(body) == ["PUBLIC_KEY_INVALID"]
    body = gql(PUBLISH, {"w": "not base64!", "s": "x", "t": "COMMUNITY"}, key=vendor_key)
    assert error_codes(body) == ["WHEEL_INVALID"]


# Review, delisting, verification at load.

def test_review_steps_and_reasons(runtime, gql, example_wheels, vendor, reviewer):
    version = vendor.publish(variant(example_wheels["lion_exchange"], plugin_id=fresh_id("sgx")))[
        "data"]["publishPluginVersion"]
    assert error_codes(gql(REVIEW, {"v": version["id"], "d": "APPROVED"}, key=reviewer)) == \
        ["REVIEW_TRANSITION_INVALID"]
    assert error_codes(gql(REVIEW, {"v": version["id"], "d": "IN_REVIEW"}, key=vendor.key)) == ["FORBIDDEN"]
    gql.data(REVIEW, {"v": version["id"], "d": "IN_REVIEW"}, key=reviewer)
    assert error_codes(gql(REVIEW, {"v": version["id"], "d": "REJECTED", "r": []}, key=reviewer)) == \
        ["REVIEW_REASONS_REQUIRED"]
    done = gql.data(REVIEW, {"v": version["id"], "d": "REJECTED",
                             "r": ["fees are not disclosed in the description"]}, key=reviewer)
    assert done["reviewPluginVersion"] == {"id": version["id"], "status": "REJECTED",
                                           "reasons": ["fees are not disclosed in the description"]}
    assert error_codes(gql(REVIEW, {"v": version["id"], "d": "APPROVED"}, key=reviewer)) == \
        ["REVIEW_TRANSITION_INVALID"]
    assert error_codes(gql(REVIEW, {"v": str(uuid.uuid4()), "d": "IN_REVIEW"}, key=reviewer)) == \
        ["PLUGIN_VERSION_NOT_FOUND"]


def test_delisting_kills_every_version_and_announces_it(runtime, gql, example_wheels, vendor, reviewer):
    plugin_id = fresh_id("news")
    ids = []
    for version in ("1.0.0", "1.1.0"):
        body = vendor.publish(variant(example_wheels["news_sentiment"], plugin_id=plugin_id,
                                      version=version), tier="PRIVATE")
        ids.append(body["data"]["publishPluginVersion"]["id"])

    async def announced() -> dict[str, Any]:
        # A bus of this test's own (on Redis, another connection), as another process would listen.
        settings = runtime.settings
        bus = make_bus(settings.redis_url, settings.redis_namespace) if settings.redis_url else runtime.bus
        subscription = await bus.subscribe(DELISTED_TOPIC)
        try:
            assert error_codes(await asyncio.to_thread(gql, DELIST, {"p": plugin_id},
                                                       key=vendor.key)) == ["FORBIDDEN"]
            await asyncio.to_thread(gql.data, DELIST, {"p": plugin_id}, key=reviewer)
            while True:
                event = await asyncio.wait_for(subscription.__anext__(), 15)
                if event.payload["pluginId"] == plugin_id:
                    return event.payload
        finally:
            await subscription.close()
            if bus is not runtime.bus:
                await bus.stop()

    assert asyncio.run(announced())["versions"] == ids
    mine = gql.data(MINE, None, key=vendor.key)["vendorPluginVersions"]["edges"]
    assert {e["node"]["status"] for e in mine if e["node"]["pluginId"] == plugin_id} == {"DELISTED"}
    for version_id in ids:
        with pytest.raises(Exception) as raised:
            runtime.marketplace_publishing.verify_stored(version_id)
        assert getattr(raised.value, "code", None) == "PLUGIN_DELISTED"
    body = vendor.publish(variant(example_wheels["news_sentiment"], plugin_id=plugin_id, version="2.0.0"),
                          tier="PRIVATE")
    assert error_codes(body) == ["PLUGIN_DELISTED"]
    assert "marketplace.plugin_delisted" in audit_kinds(runtime, plugin_id)


def test_verify_stored_catches_a_changed_row(runtime, example_wheels, vendor):
    body = vendor.publish(variant(example_wheels["harbour_theme"], plugin_id=fresh_id("theme")),
                          tier="PRIVATE")
    version_id = body["data"]["publishPluginVersion"]["id"]
    service = runtime.marketplace_publishing
    row = service.get_version(version_id)
    assert service.verify_stored(row).id == row.plugin_id
    flipped = bytearray(row.wheel)
    flipped[len(flipped) // 3] ^= 0x01
    row.wheel = bytes(flipped)
    with pytest.raises(Exception) as raised:
        service.verify_stored(row)
    assert raised.value.code == "PACKAGE_TAMPERED"
    # Consistent bytes and hash, but not what the vendor signed.
    other = variant(example_wheels["harbour_theme"], plugin_id=row.plugin_id, version="9.9.9")
    row = service.get_version(version_id)
    row.wheel, row.wheel_sha256 = other, hashlib.sha256(other).hexdigest()
    row.manifest, row.version = read_wheel(other).manifest_data, "9.9.9"
    with pytest.raises(Exception) as raised:
        service.verify_stored(row)
    assert raised.value.code == "SIGNATURE_INVALID"


def test_another_vendor_cannot_take_a_plugin_id_or_see_versions(runtime, gql, example_wheels, vendor):
    plugin_id = fresh_id("sgx")
    vendor.publish(variant(example_wheels["lion_exchange"], plugin_id=plugin_id))
    rival = Vendor(runtime, gql)
    body = rival.publish(variant(example_wheels["lion_exchange"], plugin_id=plugin_id, version="1.0.1"))
    assert error_codes(body) == ["PLUGIN_ID_TAKEN"]
    assert stored(runtime, plugin_id) == (1, 1)
    assert gql.data(MINE, None, key=rival.key)["vendorPluginVersions"]["edges"] == []
    assert error_codes(gql(QUEUE, None, key=rival.key)) == ["FORBIDDEN"]


def test_isolation_of_publication_fields(runtime, gql, example_wheels, vendor, reviewer):
    """Tenant B's keys with tenant A's ids: B sees none of A's versions, cannot review or delist
    them (FORBIDDEN: platform-only), cannot publish over A's plugin id, and registering B's key
    changes only B's vendor."""
    plugin_id = fresh_id("theme")
    version = vendor.publish(variant(example_wheels["harbour_theme"], plugin_id=plugin_id))[
        "data"]["publishPluginVersion"]
    other = onboard(runtime)
    _, admin_b = user_key(runtime, other, "admin")
    _, vendor_b = user_key(runtime, other, "vendor")
    assert gql.data(MINE, None, key=admin_b)["vendorPluginVersions"]["edges"] == []
    for query, variables in ((REVIEW, {"v": version["id"], "d": "IN_REVIEW"}), (DELIST, {"p": plugin_id}),
                             (QUEUE, None)):
        assert error_codes(gql(query, variables, key=vendor_b)) == ["FORBIDDEN"]
    _, public_b = signing.generate_key()
    gql.data(REGISTER, {"k": public_b}, key=vendor_b)
    assert runtime.marketplace_publishing.vendor_of(vendor.tenant.id).public_key == vendor.public
    assert runtime.marketplace_publishing.get_version(version["id"]).status == "SUBMITTED"


# Units: manifest, signatures, hooks.

def test_manifest_paths_compatibility_and_secrets(example_wheels):
    data = read_wheel(example_wheels["news_sentiment"]).manifest_data
    manifest = parse_manifest(data)
    assert manifest.secret_fields == ("$.api_key",)
    assert is_compatible(manifest, "0.1.0") and not is_compatible(manifest, "1.0.0")
    broken = {**data, "pricing": {"model": "per_call"}, "capabilities": ["network:egress:"],
              "config_schema": {"type": "object", "properties": {"pin": {"type": "integer",
                                                                          "x-secret": True}}}}
    with pytest.raises(ManifestInvalid) as raised:
        parse_manifest(broken)
    paths = {e["path"] for e in raised.value.details["errors"]}
    assert {"$.pricing", "$.capabilities[0]", "$.config_schema.properties.pin"} <= paths


SECRET = {"type": "string", "x-secret": True}
UNSEALABLE_SECRETS = {
    "in array items (objects)": ({"accounts": {"type": "array", "items": {
        "type": "object", "properties": {"token": SECRET}}}}, {},
        "$.config_schema.properties.accounts.items.properties.token"),
    "an array of secrets": ({"keys": {"type": "array", "items": SECRET}}, {},
                            "$.config_schema.properties.keys.items"),
    "behind $defs and $ref": ({"key": {"$ref": "#/$defs/secret"}}, {"$defs": {"secret": SECRET}},
                              "$.config_schema.$defs.secret"),
    "a $ref copying a secret into items": ({"key": SECRET, "more": {"type": "array", "items": {
        "$ref": "#/properties/key"}}}, {}, "$.config_schema.properties.more.items.$ref"),
    "inside allOf": ({}, {"allOf": [{"properties": {"key": SECRET}}]},
                     "$.config_schema.allOf[0].properties.key"),
    "inside patternProperties": ({}, {"patternProperties": {"^k": SECRET}},
                                 "$.config_schema.patternProperties.^k"),
    "a dotted name": ({"a.b": SECRET}, {}, "$.config_schema.properties.a.b"),
}


@pytest.mark.parametrize("case", list(UNSEALABLE_SECRETS))
def test_secrets_the_installer_cannot_seal_are_refused_at_publication(example_wheels, case):
    """The installer seals secrets at paths reached through `properties` only; a mark anywhere
    else would be stored and answered in clear, so the manifest is refused."""
    properties, extra, path = UNSEALABLE_SECRETS[case]
    data = read_wheel(example_wheels["news_sentiment"]).manifest_data
    schema = {"type": "object", "properties": properties, **extra}
    with pytest.raises(ManifestInvalid) as raised:
        parse_manifest({**data, "config_schema": schema, "conformance": {}})
    assert raised.value.code == "MANIFEST_INVALID"
    problems = raised.value.details["errors"]
    assert path in {p["path"] for p in problems}, problems
    nested = {"type": "object", "properties": {"api_key": SECRET, "venue": {
        "type": "object", "properties": {"password": SECRET}}}}
    assert parse_manifest({**data, "config_schema": nested, "conformance": {}}).secret_fields == (
        "$.api_key", "$.venue.password")


def test_compare_hooks_names_argument_mismatches():
    from plugins.sdk import hookimpl

    class WrongArgs:
        @hookimpl
        def alphintra_market_data_sources(self, context, region):
            return []

    _, implemented, problems = compare_hooks(WrongArgs(), "x.wrong", ["alphintra_market_data_sources"])
    assert implemented == [] and "region" in problems[0]


def test_conformance_kit_refuses_a_connector_that_rejects_everything():
    from plugins.sdk import hookimpl

    manifest = {"id": "x.bad", "version": "1.0.0", "category": "exchange", "capabilities": [],
                "hooks": ["alphintra_exchange_connectors"],
                "conformance": {"symbol": "D05", "limit_price": "20.00"}}

    class Refuser:
        name = "refuser"

        def mics(self) -> list[str]:
            return ["XSES"]

        def on_clock(self, at):
            return []

        def submit(self, order):
            from plugins.sdk import ExecType, ExecutionReport, OrdStatus
            return [ExecutionReport(ExecType.REJECTED, OrdStatus.REJECTED, order.client_order_id, "", *(
                [order.quantity * 0] * 6), "no", "CLOSED", order.submitted_at)]

        def cancel(self, client_order_id, mic):
            raise AssertionError("not reached")

        def replace(self, *args):
            return []

        def quote_for(self, order):
            return None

    class Plugin_:
        @hookimpl
        def alphintra_exchange_connectors(self, context):
            return [Refuser()]

    manager, _, problems = compare_hooks(Plugin_(), "x.bad", manifest["hooks"])
    assert problems == []
    outcome = run_kit(manifest, manager, "x.bad")
    assert outcome.failures and "did not accept" in outcome.failures[0]


# The vendor's CLI, from source to a published version, against the live gateway.

def _cli(*args: str, cwd: Path) -> str:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHINTRA_")}
    done = subprocess.run([sys.executable, "-m", "gateway", "plugin", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout.strip()


def test_vendor_cli_keygen_build_sign_publish(runtime, server, tmp_path):
    import shutil

    tenant = onboard(runtime)
    _, api_key = user_key(runtime, tenant, "vendor")
    source = tmp_path / "news_sentiment"
    shutil.copytree(EXAMPLES / "news_sentiment", source)
    plugin_id = fresh_id("news")
    for name in ("pyproject.toml", "acme_news/alphintra_manifest.json"):
        path = source / name
        path.write_text(path.read_text().replace("acme.news-sentiment", plugin_id))

    public = _cli("keygen", "--out", "vendor.key", cwd=tmp_path)
    assert (tmp_path / "vendor.key").stat().st_mode & 0o777 == 0o600
    registered = json.loads(_cli("register-key", "--url", server.url, "--api-key", api_key,
                                 "--public-key", public, cwd=tmp_path))
    assert registered["publicKey"] == public
    wheel = Path(_cli("build", str(source), "--out-dir", "dist", cwd=tmp_path))
    assert wheel.name == "acme_news_sentiment-1.0.0-py3-none-any.whl" and wheel.is_file()
    assert not (source / "build").exists()  # built from a copy
    signature = _cli("sign", str(wheel), "--key", "vendor.key", cwd=tmp_path)
    assert (tmp_path / "dist" / (wheel.name + ".sig")).read_text().strip() == signature
    published = json.loads(_cli("publish", str(wheel), "--signature-file", str(wheel) + ".sig",
                                "--url", server.url, "--api-key", api_key, "--tier", "PRIVATE",
                                cwd=tmp_path))
    assert (published["pluginId"], published["status"], published["created"]) == \
        (plugin_id, "APPROVED", True)
    assert runtime.marketplace_publishing.verify_stored(published["id"]).id == plugin_id


def test_rotating_the_vendor_key_keeps_published_versions_verifiable(runtime, gql, example_wheels, vendor):
    plugin_id = fresh_id("theme")
    first = vendor.publish(variant(example_wheels["harbour_theme"], plugin_id=plugin_id),
                           tier="PRIVATE")["data"]["publishPluginVersion"]
    old_private = vendor.private
    vendor.private, vendor.public = signing.generate_key()
    registered = gql.data(REGISTER, {"k": vendor.public}, key=vendor.key)["registerVendorKey"]
    assert registered["publicKey"] == vendor.public
    assert runtime.marketplace_publishing.verify_stored(first["id"]).id == plugin_id
    newer = variant(example_wheels["harbour_theme"], plugin_id=plugin_id, version="1.1.0")
    contents = read_wheel(newer)
    body = vendor.publish(newer, signature=signing.sign(contents, contents.manifest_data, old_private),
                          tier="PRIVATE")
    assert error_codes(body) == ["SIGNATURE_INVALID"]
    assert vendor.publish(newer, tier="PRIVATE")["data"]["publishPluginVersion"]["status"] == "APPROVED"
    vendor_id = runtime.marketplace_publishing.vendor_of(vendor.tenant.id).id
    assert audit_kinds(runtime, vendor_id) == ["marketplace.vendor_registered",
                                               "marketplace.vendor_prefix_reserved",
                                               "marketplace.vendor_key_changed"]


def test_upload_limits_wheel_size_then_http_body(runtime, gql, example_wheels, vendor):
    import os

    def padded(size: int) -> bytes:
        return variant(example_wheels["harbour_theme"], plugin_id=fresh_id("theme"),
                       files=lambda f: f.update({"harbour_theme/blob.bin": os.urandom(size)}))

    over_wheel_limit = padded(720_000)  # base64 ~960 kB: the body passes, the wheel limit refuses
    body = vendor.publish(over_wheel_limit)
    assert error_codes(body) == ["WHEEL_UNSAFE"] and body["errors"][0]["extensions"]["limit"] == 700_000
    over_body_limit = base64.b64encode(padded(800_000)).decode()
    response = gql.post(PUBLISH, {"w": over_body_limit, "s": "x", "t": "COMMUNITY"}, key=vendor.key)
    assert response.status_code == 413
