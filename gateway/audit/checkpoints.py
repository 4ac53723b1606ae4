"""Signed checkpoints of the chains' heads, and the platform key that signs them.

A checkpoint says: chain `chain` (tenant `tenant_id`, None for the platform chain) had `count`
records, the last `seq` with hash `head_hash`, at `at`. It is signed with the platform's Ed25519
key over the canonical JSON (sorted keys, no spaces, ASCII: `chain.canonical`) of
    {"format": "alphintra-audit-checkpoint/1", "chain", "tenant", "seq", "head_hash", "at", "count"}
(`at` as `chain.instant`), the signature and public key as raw bytes in base64. An auditor keeps
the exported checkpoints outside the database; a chain rewritten afterwards, even with every
hash recomputed, no longer has that hash at that seq, and the signature cannot be remade
without the key.

The key is the platform's, kept the project's one way: the private key sealed with the
gateway's SecretBox (`runtime.secrets`, ALPHINTRA_SECRET_KEY) under KEY_CONTEXT in
`audit_signing_key`, made on first use; the public key is derived from the opened private key
whenever the secret box is at hand (so a public key swapped into the row is not believed).
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gateway.audit.chain import canonical, instant
from gateway.audit.models import AuditCheckpoint, AuditSigningKey
from gateway.db import utcnow
from gateway.errors import DomainError, InvalidInput
from gateway.secrets import SecretBox, SecretUnreadable

FORMAT = "alphintra-audit-checkpoint/1"
EXPORT_FORMAT = "alphintra-audit-checkpoints/1"
KEY_ID = "platform"
KEY_CONTEXT = "audit-signing-key:platform"
CHECKPOINT_EVERY = 1000  # records: a chain crossing a multiple of this is checkpointed on append
MAX_SUPPLIED = 10_000  # checkpoints one verification accepts

# Stable codes of a checkpoint that disagrees.
FOREIGN = "AUDIT_CHECKPOINT_FOREIGN"  # another chain's: not looked at
KEY_UNKNOWN = "AUDIT_CHECKPOINT_KEY_UNKNOWN"  # not signed by the platform key
SIGNATURE_INVALID = "AUDIT_CHECKPOINT_SIGNATURE_INVALID"  # the statement is not what was signed
RECORD_MISSING = "AUDIT_CHECKPOINT_RECORD_MISSING"  # the chain no longer has that seq
MISMATCH = "AUDIT_CHECKPOINT_MISMATCH"  # the chain's record at that seq has another hash


class SigningKeyUnavailable(DomainError):
    """The platform key cannot be used: no secret box here, or its sealed form does not open."""

    code = "AUDIT_SIGNING_KEY_UNAVAILABLE"
    http_status = 500


def statement(chain: str, tenant_id: str | None, seq: int, head_hash: str, at: datetime,
              count: int) -> bytes:
    """The exact bytes a checkpoint's signature covers."""
    return canonical({"format": FORMAT, "chain": chain, "tenant": tenant_id, "seq": seq,
                      "head_hash": head_hash, "at": instant(at), "count": count}).encode("ascii")


@dataclass(frozen=True)
class Checkpoint:
    chain: str
    tenant_id: str | None
    seq: int
    head_hash: str
    at: datetime
    count: int
    public_key: str
    signature: str

    @classmethod
    def of(cls, row: Any) -> Checkpoint:
        return cls(row.chain, row.tenant_id, row.seq, row.head_hash, _utc(row.at), row.count,
                   row.public_key, row.signature)

    def statement(self) -> bytes:
        return statement(self.chain, self.tenant_id, self.seq, self.head_hash, self.at, self.count)

    def exported(self) -> dict[str, Any]:
        """As exported (the file and the GraphQL `AuditCheckpointInput` take the same keys)."""
        return {"chain": self.chain, "tenantId": self.tenant_id, "seq": self.seq,
                "headHash": self.head_hash, "at": instant(self.at), "count": self.count,
                "publicKey": self.public_key, "signature": self.signature}

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Checkpoint:
        """One exported checkpoint (a file's entry); AUDIT_CHECKPOINT_INVALID if malformed."""
        try:
            at = data["at"]
            at = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
            seq, count = data["seq"], data["count"]
            if not isinstance(seq, int) or not isinstance(count, int) or isinstance(seq, bool):
                raise ValueError("seq and count are whole numbers")
            tenant = data.get("tenantId")
            return cls(str(data["chain"]), None if tenant is None else str(tenant), seq,
                       str(data["headHash"]), _utc(at), count, str(data["publicKey"]),
                       str(data["signature"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"not an exported audit checkpoint: {exc}",
                               code="AUDIT_CHECKPOINT_INVALID") from None


def export_document(public_key: str | None, checkpoints: list[Checkpoint]) -> dict[str, Any]:
    return {"format": EXPORT_FORMAT, "statementFormat": FORMAT, "publicKey": public_key,
            "checkpoints": [c.exported() for c in checkpoints]}


def signature_valid(checkpoint: Checkpoint, public_key: str) -> bool:
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))
        raw = base64.b64decode(checkpoint.signature, validate=True)
        key.verify(raw, checkpoint.statement())
        return True
    except (binascii.Error, ValueError, InvalidSignature):
        return False


def public_key_of(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def sign(key: Ed25519PrivateKey, chain: str, tenant_id: str | None, seq: int, head_hash: str,
         count: int, at: datetime | None = None) -> Checkpoint:
    at = _utc(at or utcnow())
    body = statement(chain, tenant_id, seq, head_hash, at, count)
    return Checkpoint(chain, tenant_id, seq, head_hash, at, count, public_key_of(key),
                      base64.b64encode(key.sign(body)).decode())


class SigningKey:
    """The platform's checkpoint key, read (or made) in the caller's session. A key read back
    as already stored is kept in memory; one made in this session is not, until it is read
    again: the caller's transaction may still roll back."""

    def __init__(self, secrets: SecretBox) -> None:
        self.secrets = secrets
        self._key: Ed25519PrivateKey | None = None
        self._lock = threading.Lock()

    def private(self, session: Session, *, create: bool = True) -> Ed25519PrivateKey | None:
        with self._lock:
            if self._key is not None:
                return self._key
        row = _key_row(session)
        made = False
        if row is None:
            if not create:
                return None
            fresh = Ed25519PrivateKey.generate()
            raw = fresh.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                      serialization.NoEncryption())
            made = _insert_ignore(session, AuditSigningKey.__table__, {  # type: ignore[attr-defined]
                "id": KEY_ID, "public_key": public_key_of(fresh),
                "sealed_key": self.secrets.seal(raw, KEY_CONTEXT), "created_at": utcnow()}) == 1
            row = _key_row(session)
            assert row is not None
        try:
            key = Ed25519PrivateKey.from_private_bytes(self.secrets.open(row.sealed_key, KEY_CONTEXT))
        except (SecretUnreadable, ValueError):
            raise SigningKeyUnavailable("the platform's audit signing key does not open with "
                                        "this gateway's secret key") from None
        if public_key_of(key) != row.public_key:
            raise SigningKeyUnavailable("the stored public key is not the sealed key's")
        if not made:
            with self._lock:
                self._key = key
        return key

    def public(self, session: Session) -> str | None:
        key = self.private(session, create=False)
        return None if key is None else public_key_of(key)


def stored_public_key(session: Session) -> str | None:
    """The public key as stored (without the secret box to open the private key)."""
    row = _key_row(session)
    return None if row is None else str(row.public_key)


def _key_row(session: Session) -> Any:
    table = AuditSigningKey.__table__  # type: ignore[attr-defined]
    return session.execute(select(table.c.public_key, table.c.sealed_key)
                           .where(table.c.id == KEY_ID)).first()


def insert_checkpoint(session: Session, checkpoint: Checkpoint) -> bool:
    """Store `checkpoint`; False if that chain already has one at that seq."""
    return _insert_ignore(session, AuditCheckpoint.__table__, {  # type: ignore[attr-defined]
        "tenant_id": checkpoint.tenant_id, "chain": checkpoint.chain, "seq": checkpoint.seq,
        "head_hash": checkpoint.head_hash, "at": checkpoint.at, "count": checkpoint.count,
        "public_key": checkpoint.public_key, "signature": checkpoint.signature}) == 1


def _insert_ignore(session: Session, table: Any, values: dict[str, Any]) -> int:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        statement_ = postgresql.insert(table).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement_ = sqlite.insert(table).values(values).on_conflict_do_nothing()
    else:  # pragma: no cover - the gateway runs on PostgreSQL or SQLite
        raise RuntimeError(f"audit checkpoints have no insert for {dialect}")
    return int(session.execute(statement_).rowcount)  # type: ignore[attr-defined]


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
