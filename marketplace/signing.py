"""Ed25519 signatures over a plugin version.

The signed payload is canonical JSON (sorted keys, no spaces, UTF-8) of
    {"format": "alphintra-plugin-signature/1", "manifest": <the manifest as in the wheel>,
     "files": {<archive name>: <SHA-256 hex of its bytes>, ... every file of the wheel}}
so the signature covers the manifest and every byte of every file (RECORD included). The
signature is the 64 raw bytes, base64; a public key is the 32 raw bytes, base64.

`verify` refuses with:
- PACKAGE_UNSIGNED: no signature at all;
- PACKAGE_TAMPERED: a file changed after the wheel was built (its CRC or RECORD hash no longer
  matches, found while reading the wheel), so the package is not what was signed;
- SIGNATURE_INVALID: the signature is malformed, made with another key, or over other content.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from marketplace.errors import ToolkitError
from marketplace.wheel import WheelContents, WheelLimits, read_wheel

FORMAT = "alphintra-plugin-signature/1"


class SignatureInvalid(ToolkitError):
    code = "SIGNATURE_INVALID"


class PackageUnsigned(ToolkitError):
    code = "PACKAGE_UNSIGNED"


class PublicKeyInvalid(ToolkitError):
    code = "PUBLIC_KEY_INVALID"


def generate_key() -> tuple[str, str]:
    """(private key, public key), each raw bytes in base64."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    return base64.b64encode(private).decode(), public_key_of(key)


def public_key_of(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_private_key(value: str | bytes | Ed25519PrivateKey) -> Ed25519PrivateKey:
    if isinstance(value, Ed25519PrivateKey):
        return value
    text = value.decode() if isinstance(value, bytes) else value
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ToolkitError("not an Ed25519 private key", code="PRIVATE_KEY_INVALID")
        return key
    try:
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        raise ToolkitError("not an Ed25519 private key (32 raw bytes, base64)",
                           code="PRIVATE_KEY_INVALID") from None


def load_public_key(value: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
        if len(raw) != 32:
            raise ValueError("length")
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError, AttributeError):
        raise PublicKeyInvalid("the public key must be an Ed25519 key: 32 raw bytes, base64") from None


def payload(manifest: Mapping[str, Any], digests: Mapping[str, str]) -> bytes:
    body = {"format": FORMAT, "manifest": manifest, "files": dict(digests)}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _manifest_dict(manifest: Any) -> Mapping[str, Any]:
    raw = getattr(manifest, "raw", manifest)  # a parsed Manifest or the decoded JSON
    if not isinstance(raw, Mapping):
        raise TypeError("manifest must be a Manifest or a mapping")
    return raw


def _contents(wheel: bytes | WheelContents) -> WheelContents:
    # Reading checks CRCs and RECORD hashes, so a changed file is PACKAGE_TAMPERED here.
    return wheel if isinstance(wheel, WheelContents) else read_wheel(wheel, WheelLimits(
        max_bytes=1 << 62))


def sign(wheel_bytes: bytes | WheelContents, manifest: Any,
         private_key: str | bytes | Ed25519PrivateKey) -> str:
    contents = _contents(wheel_bytes)
    signature = load_private_key(private_key).sign(payload(_manifest_dict(manifest), contents.digests()))
    return base64.b64encode(signature).decode()


def verify(wheel_bytes: bytes | WheelContents, manifest: Any, signature: str | None,
           public_key: str) -> None:
    if not signature or not signature.strip():
        raise PackageUnsigned("the package is unsigned: publish it with the signature made by "
                              "`alphintra plugin sign`")
    key = load_public_key(public_key)
    contents = _contents(wheel_bytes)
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except binascii.Error:
        raise SignatureInvalid("the signature is not base64") from None
    if len(raw) != 64:
        raise SignatureInvalid("the signature is not an Ed25519 signature (64 bytes)")
    try:
        key.verify(raw, payload(_manifest_dict(manifest), contents.digests()))
    except InvalidSignature:
        raise SignatureInvalid("the signature does not match this package and the vendor's key") from None
