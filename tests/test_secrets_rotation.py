"""Rotating the secret key: sealed values name their key, earlier keys open what they sealed,
and `alphintra secrets reseal` moves every sealed value to the current key."""

from __future__ import annotations

import base64
import os

import pytest
from click.testing import CliRunner
from sqlmodel import select

from gateway.audit.checkpoints import KEY_CONTEXT
from gateway.audit.models import AuditSigningKey
from gateway.cli import main, migrate_database
from gateway.db import Database, utcnow
from gateway.defi.keys import key_context
from gateway.defi.models import DefiKey
from gateway.marketplace.install import secret_context
from gateway.marketplace.install_models import PluginInstallation
from gateway.marketplace.models import Plugin, PluginVersion, Vendor
from gateway.runtime import build_runtime
from gateway.secrets import SecretBox, SecretUnreadable, key_id
from gateway.settings import Settings
from tests.support import onboard


def new_key() -> bytes:
    return os.urandom(32)


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_a_sealed_value_names_its_key_and_an_earlier_key_still_opens_it():
    old, new = new_key(), new_key()
    before = SecretBox(old).seal(b"s3cret", "ctx")
    assert before.startswith(f"v2:{key_id(old)}:")
    rotated = SecretBox(new, [old])
    assert rotated.open(before, "ctx") == b"s3cret"
    assert not rotated.is_current(before)
    assert rotated.is_current(rotated.seal(b"x", "ctx"))
    with pytest.raises(SecretUnreadable) as refused:
        SecretBox(new).open(before, "ctx")
    assert key_id(old) in refused.value.message and b64(old) not in refused.value.message
    with pytest.raises(SecretUnreadable):
        rotated.open(before, "another context")  # the context still binds it


def test_legacy_values_without_a_key_id_open_with_whichever_key_fits():
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    old, new = new_key(), new_key()
    nonce = os.urandom(12)
    legacy = "v1:" + base64.urlsafe_b64encode(
        nonce + AESGCM(old).encrypt(nonce, b"before ids", b"ctx")).decode()
    assert SecretBox(new, [old]).open(legacy, "ctx") == b"before ids"
    with pytest.raises(SecretUnreadable):
        SecretBox(new).open(legacy, "ctx")


def test_previous_keys_are_checked_as_settings():
    from gateway.settings import SettingsError

    with pytest.raises(SettingsError, match="ALPHINTRA_SECRET_KEYS_PREVIOUS"):
        Settings.from_env({"ALPHINTRA_SECRET_KEYS_PREVIOUS": "not-a-key"})


def test_reseal_moves_every_sealed_value_to_the_current_key(tmp_path):
    old, new, stranger = new_key(), new_key(), new_key()
    url = f"sqlite:///{tmp_path / 'rotation.db'}"  # a database of its own: it reseals all of it
    settings = Settings(database_url=url, secret_key=b64(old), log_json=False)
    migrate_database(settings)
    rt = build_runtime(settings)
    t1, t2 = onboard(rt).id, onboard(rt).id
    rt.close()
    db = Database(url)
    box = SecretBox(old)
    with db.system_transaction() as session:
        session.add(DefiKey(tenant_id=t1, chain_id=1, address="0x" + "1" * 40,
                            sealed_key=box.seal(b"key-one", key_context(t1, 1))))
        session.add(DefiKey(tenant_id=t2, chain_id=1, address="0x" + "2" * 40,
                            sealed_key=SecretBox(stranger).seal(b"lost", key_context(t2, 1))))
        session.add(AuditSigningKey(id="platform", public_key="pk",
                                    sealed_key=box.seal(b"signing", KEY_CONTEXT), created_at=utcnow()))
    _plugin_install(db, t1, box)
    env = {"ALPHINTRA_DATABASE_URL": url, "ALPHINTRA_SECRET_KEY": b64(new),
           "ALPHINTRA_SECRET_KEYS_PREVIOUS": b64(old), "ALPHINTRA_LOG_JSON": "false"}

    first = CliRunner().invoke(main, ["secrets", "reseal"], env=env)
    assert first.exit_code == 1, first.output  # the value sealed with a key nobody configured
    assert "resealed 4, already current 0" in first.output, first.output
    assert "unreadable: defi_key.sealed_key:" in first.output
    only_new = SecretBox(new)
    with db.system_session() as session:
        keys = {k.tenant_id: k.sealed_key for k in session.exec(select(DefiKey))}
        signing = session.exec(select(AuditSigningKey)).one().sealed_key
        install = session.exec(select(PluginInstallation)).one()
    assert only_new.open(keys[t1], key_context(t1, 1)) == b"key-one"
    assert only_new.open(signing, KEY_CONTEXT) == b"signing"
    context = secret_context(t1, "acme.rotation")
    assert only_new.open(install.sealed_secrets, context) == b'{"token": "now"}'
    assert only_new.open(install.previous_sealed_secrets, context) == b'{"token": "before"}'
    assert SecretBox(stranger).open(keys[t2], key_context(t2, 1)) == b"lost"  # left as it was

    again = CliRunner().invoke(main, ["secrets", "reseal"], env=env)
    assert "resealed 0, already current 4" in again.output, again.output
    db.engine.dispose()


def _plugin_install(db: Database, tenant_id: str, box: SecretBox) -> None:
    context = secret_context(tenant_id, "acme.rotation")
    with db.system_transaction() as session:
        vendor = Vendor(tenant_id=tenant_id, name="Acme", public_key="p", prefix="acme")
        session.add(vendor)
        session.flush()
        session.add(Plugin(id="acme.rotation", vendor_id=vendor.id, name="Rotation",
                           category="data_source", tier="PRIVATE"))
        version = PluginVersion(plugin_id="acme.rotation", version="1.0.0", wheel=b"",
                                wheel_sha256="0" * 64, wheel_filename="w.whl", signature="s",
                                public_key="p", status="APPROVED")
        session.add(version)
        session.flush()
        session.add(PluginInstallation(tenant_id=tenant_id, plugin_id="acme.rotation",
                                       version_id=version.id, version="1.0.0",
                                       sealed_secrets=box.seal(b'{"token": "now"}', context),
                                       previous_sealed_secrets=box.seal(b'{"token": "before"}',
                                                                        context)))
