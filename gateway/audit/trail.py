"""Appending to and reading the audit trail, always inside a caller's session.

`append` joins the caller's transaction, so a record commits or rolls back with the change it
describes. It first writes the chain's head row (an insert that does nothing if the head exists:
a write, so SQLite takes its write lock here), then reads the head FOR UPDATE (PostgreSQL locks
the row): concurrent appenders of one chain take turns, and the chain stays gapless. A batch is
hashed in Python and written with COPY on PostgreSQL (one executemany elsewhere), no ORM
flush per record.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select as core_select
from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlmodel import col, select

from gateway.audit.chain import (
    GENESIS,
    AuditVerification,
    hash_of,
    plain,
    record_hash,
    verify_records,
)
from gateway.audit.models import PLATFORM_CHAIN, AuditHead, AuditRecord
from gateway.bulk import bulk_insert
from gateway.db import ALL_TENANTS, SCOPE_KEY, Database, utcnow
from gateway.errors import Forbidden, InvalidInput
from gateway.pagination import check_page_size

KIND_MAX, SUBJECT_MAX, ACTOR_MAX = 64, 200, 64
VERIFY_CHUNK = 10_000


@dataclass(frozen=True)
class AuditEntry:
    """What happened (`kind`, dotted lowercase such as "order.filled"), to what (`subject`, an
    id), with which details (`payload`: JSON values, Decimals, instants; never secrets), by whom."""

    kind: str
    subject: str
    payload: dict[str, Any] = field(default_factory=dict)
    actor: str | None = None


@dataclass(frozen=True)
class AppendedRecord:
    """A record as `append` wrote it (the row's columns; a plain object, cheap to build)."""

    tenant_id: str | None
    chain: str
    seq: int
    at: datetime
    kind: str
    subject: str
    actor: str | None
    payload: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class AuditPage:
    items: list[AuditRecord]
    has_next: bool

    @staticmethod
    def cursor(record: AuditRecord) -> str:
        return base64.urlsafe_b64encode(f"seq:{record.seq}".encode()).decode()


_COLUMNS = (AuditRecord.chain, AuditRecord.seq, AuditRecord.at, AuditRecord.kind,
            AuditRecord.subject, AuditRecord.actor, AuditRecord.payload, AuditRecord.prev_hash,
            AuditRecord.hash)


def chain_of(tenant_id: str | None) -> str:
    return PLATFORM_CHAIN if tenant_id is None else tenant_id


def _utc(at: datetime | None) -> datetime | None:
    """An instant without an offset is taken as UTC, as everywhere in the API."""
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        prefix, seq = text.split(":", 1)
        if prefix != "seq":
            raise ValueError
        return int(seq)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("cursor is not one this API returned", code="CURSOR_INVALID") from None


class AuditTrail:
    def __init__(self, db: Database, max_page_size: int = 100) -> None:
        self.db = db
        self.max_page_size = max_page_size

    def append(self, session: Session, tenant_id: str | None, entries: Sequence[AuditEntry]
               ) -> list[AppendedRecord]:
        if not entries:
            return []
        scope = session.info.get(SCOPE_KEY)
        if tenant_id is not None and scope not in (ALL_TENANTS, tenant_id):
            raise Forbidden("audit records go to the session's own tenant", code="TENANT_FORBIDDEN")
        if tenant_id is None and scope != ALL_TENANTS:
            # Only system sessions write the platform chain: a tenant's request cannot.
            raise Forbidden("the platform chain is written from a system session only",
                            code="TENANT_FORBIDDEN")
        rows = [self._checked(entry) for entry in entries]
        chain = chain_of(tenant_id)
        last_seq, last_hash = self._lock_head(session, chain)
        at = utcnow()
        records: list[dict[str, Any]] = []
        for kind, subject, actor, payload in rows:
            last_seq += 1
            digest = record_hash(chain, last_seq, at, kind, subject, actor, payload, last_hash)
            records.append({"tenant_id": tenant_id, "chain": chain, "seq": last_seq, "at": at,
                            "kind": kind, "subject": subject, "actor": actor, "payload": payload,
                            "prev_hash": last_hash, "hash": digest})
            last_hash = digest
        bulk_insert(session, AuditRecord.__table__, records)  # type: ignore[attr-defined]
        session.execute(update(AuditHead.__table__)  # type: ignore[attr-defined]
                        .where(AuditHead.__table__.c.chain == chain)  # type: ignore[attr-defined]
                        .values(last_seq=last_seq, last_hash=last_hash))
        return [AppendedRecord(**r) for r in records]

    @staticmethod
    def _checked(entry: AuditEntry) -> tuple[str, str, str | None, dict[str, Any]]:
        if not entry.kind or len(entry.kind) > KIND_MAX or entry.kind != entry.kind.lower():
            raise InvalidInput(f"audit kind {entry.kind!r} must be dotted lowercase, at most "
                               f"{KIND_MAX} characters", code="AUDIT_ENTRY_INVALID")
        if not entry.subject or len(entry.subject) > SUBJECT_MAX:
            raise InvalidInput(f"audit subject must be 1-{SUBJECT_MAX} characters",
                               code="AUDIT_ENTRY_INVALID")
        if entry.actor is not None and len(entry.actor) > ACTOR_MAX:
            raise InvalidInput(f"audit actor must be at most {ACTOR_MAX} characters",
                               code="AUDIT_ENTRY_INVALID")
        try:
            payload = plain(entry.payload)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"audit payload: {exc}", code="AUDIT_ENTRY_INVALID") from None
        return entry.kind, entry.subject, entry.actor, payload

    @staticmethod
    def _lock_head(session: Session, chain: str) -> tuple[int, str]:
        table = AuditHead.__table__  # type: ignore[attr-defined]
        dialect = session.get_bind().dialect.name
        values = {"chain": chain, "last_seq": 0, "last_hash": GENESIS}
        if dialect == "postgresql":
            session.execute(postgresql.insert(table).values(values).on_conflict_do_nothing())
        elif dialect == "sqlite":
            session.execute(sqlite.insert(table).values(values).on_conflict_do_nothing())
        else:  # pragma: no cover - the gateway runs on PostgreSQL or SQLite
            raise RuntimeError(f"audit trail has no head lock for {dialect}")
        row = session.execute(core_select(table.c.last_seq, table.c.last_hash)
                              .where(table.c.chain == chain).with_for_update()).one()
        return int(row.last_seq), str(row.last_hash)

    # Reading: a tenant reads its own chain in its tenant session; the platform chain is read
    # in a system session (there is no tenant whose filter would admit it).
    def verify(self, tenant_id: str | None, start: datetime | None = None,
               end: datetime | None = None) -> AuditVerification:
        """Check the chain's records with `start <= at < end` (the whole chain by default), each
        linked to the record before it; the record before the window is re-hashed (it anchors
        the window), and the record after it must link to the window's last (or, with none
        after it, the head must)."""
        start, end = _utc(start), _utc(end)
        if start is not None and end is not None and end <= start:
            raise InvalidInput("'to' must be after 'from'", code="AUDIT_RANGE_INVALID")
        chain = chain_of(tenant_id)
        where = [col(AuditRecord.chain) == chain]
        with self._session(tenant_id) as session:
            prev_seq, prev_hash = 0, GENESIS
            if start is not None:
                # The window links to the last record before it (records are appended in time
                # order: `at` is read under the head's lock), so a record deleted at its edge
                # shows as a gap.
                before = session.execute(select(*_COLUMNS).where(
                    col(AuditRecord.chain) == chain, col(AuditRecord.at) < start)
                    .order_by(col(AuditRecord.seq).desc()).limit(1)).first()
                if before is not None:
                    # The anchor's stored hash is what the window links to: recompute it, so
                    # an edited record moved out of the window does not pass as the anchor.
                    if hash_of(before) != before.hash:
                        return AuditVerification(False, 0, before.seq,
                                                 f"record {before.seq} was altered: its content "
                                                 f"no longer matches its hash (edited or moved)")
                    prev_seq, prev_hash = before.seq, before.hash
                where.append(col(AuditRecord.at) >= start)
            head = None
            if end is not None:
                where.append(col(AuditRecord.at) < end)
            else:
                found = session.exec(select(AuditHead).where(AuditHead.chain == chain)).first()
                head = (found.last_seq, found.last_hash) if found else (0, GENESIS)
                where.append(col(AuditRecord.seq) <= head[0])  # what was appended when we began
            checked = 0
            while True:
                # Plain rows of the mapped columns (still tenant-filtered), a chunk at a time:
                # no identity map (it would cost more than the hashing), bounded memory.
                chunk = list(session.execute(
                    select(*_COLUMNS).where(*where, col(AuditRecord.seq) > prev_seq)
                    .order_by(col(AuditRecord.seq)).limit(VERIFY_CHUNK)).all())
                result = verify_records(chunk, prev_seq=prev_seq, prev_hash=prev_hash,
                                        head=head if len(chunk) < VERIFY_CHUNK else None)
                if not result.ok:
                    return dataclasses.replace(result, checked=checked + result.checked)
                checked += len(chunk)
                if chunk:
                    prev_seq, prev_hash = chunk[-1].seq, chunk[-1].hash
                if len(chunk) < VERIFY_CHUNK:
                    if end is not None:
                        edge = self._check_end(session, chain, end, prev_seq, prev_hash, checked)
                        if edge is not None:
                            return edge
                    return AuditVerification(True, checked)

    @staticmethod
    def _check_end(session: Session, chain: str, end: datetime, last_seq: int, last_hash: str,
                   checked: int) -> AuditVerification | None:
        """A window ending at `end` is checked at its edge too: the record after its last one
        links to it and lies at or after `end`; with no record after it, the head agrees (so a
        record deleted at the edge shows)."""
        found = session.exec(select(AuditHead).where(AuditHead.chain == chain)).first()
        head_seq, head_hash = (found.last_seq, found.last_hash) if found else (0, GENESIS)
        following = session.execute(select(AuditRecord.seq, AuditRecord.at, AuditRecord.prev_hash)
                                    .where(col(AuditRecord.chain) == chain,
                                           col(AuditRecord.seq) == last_seq + 1)).first()
        if following is None:
            if head_seq > last_seq:
                return AuditVerification(False, checked, last_seq + 1,
                                         f"record {last_seq + 1} is missing: the chain head says "
                                         f"{head_seq} (records deleted)")
            if head_seq == last_seq and head_hash != last_hash:
                return AuditVerification(False, checked, last_seq,
                                         f"record {last_seq} differs from the one the chain head "
                                         f"recorded")
            return None
        if _utc(following.at) < end:  # type: ignore[operator]
            return AuditVerification(False, checked, following.seq,
                                     f"record {following.seq} is dated inside the window but lies "
                                     f"outside it (moved)")
        if following.prev_hash != last_hash:
            return AuditVerification(False, checked, following.seq,
                                     f"record {following.seq} does not link to record {last_seq}: "
                                     f"prev_hash differs (a record before it was replaced or "
                                     f"removed)")
        return None

    def records(self, tenant_id: str, *, kind: str | None = None, subject: str | None = None,
                first: int, after: str | None = None) -> AuditPage:
        """A tenant's records, newest first."""
        check_page_size(first, self.max_page_size)
        query = select(AuditRecord).where(AuditRecord.chain == tenant_id)
        if kind is not None:
            query = query.where(AuditRecord.kind == kind)
        if subject is not None:
            query = query.where(AuditRecord.subject == subject)
        if after is not None:
            query = query.where(col(AuditRecord.seq) < _decode_cursor(after))
        query = query.order_by(col(AuditRecord.seq).desc()).limit(first + 1)
        with self.db.tenant_session(tenant_id) as session:
            rows = list(session.exec(query).all())
        return AuditPage(rows[:first], len(rows) > first)

    def _session(self, tenant_id: str | None) -> Any:
        return self.db.system_session() if tenant_id is None else self.db.tenant_session(tenant_id)
