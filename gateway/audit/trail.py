"""Appending to and reading the audit trail, always inside a caller's session.

`append` joins the caller's transaction, so a record commits or rolls back with the change it
describes. It locks one lane of the tenant's trail (gateway/audit/lanes.py: on PostgreSQL the
first of the tenant's chains no other transaction holds, read FOR UPDATE SKIP LOCKED, with the
database's clock; on SQLite, whose writers take turns anyway, the one chain after writing its
head row, which takes SQLite's write lock): appenders of one lane take turns, each lane stays
gapless, and one tenant's writers no longer wait for each other while a lane is free. A batch
is hashed in Python and written with COPY on PostgreSQL (one executemany elsewhere), no ORM
flush per record.

Checkpoints (gateway/audit/checkpoints.py): with the gateway's secret box at hand, a chain that
crosses a multiple of `checkpoint_every` records on append gets a signed checkpoint of its new
head once the appending transaction commits, taken off the append path by a background thread
(gateway/audit/checkpointer.py), and `create_checkpoint` takes one on demand. Before signing,
the records since the last checkpoint are verified: those this process appended and committed
by their stored hashes against the ones it computed (a chain rewritten since, even
consistently, is refused), the others re-hashed from their content. Every lane is a chain of
its own here: checkpointed, verified and exported as such. `verify` checks every lane's
hashes and links, then every checkpoint (the stored ones and any the caller supplies from an
export, which take precedence), then, for a tenant, its orders and executions against their
audit records, replayed across lanes in (at, chain, seq) order (gateway/audit/crosscheck.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select as core_select
from sqlalchemy import update
from sqlalchemy.orm import Session
from sqlmodel import col, select

from gateway.audit import checkpoints as cp
from gateway.audit.chain import (
    CHAIN_BROKEN,
    GENESIS,
    AuditVerification,
    CheckpointFinding,
    LaneVerification,
    hash_of,
    plain,
    record_hash,
    verify_records,
)
from gateway.audit.checkpointer import Checkpointer, Due, Segment
from gateway.audit.checkpoints import Checkpoint, SigningKey, SigningKeyUnavailable
from gateway.audit.crosscheck import cross_check
from gateway.audit.lanes import Lanes, chain_of, decode_cursor, encode_cursor, heads, past
from gateway.audit.models import PLATFORM_CHAIN, AuditCheckpoint, AuditHead, AuditRecord
from gateway.bulk import bulk_insert
from gateway.db import ALL_TENANTS, SCOPE_KEY, Database
from gateway.errors import Conflict, Forbidden, InvalidInput, NotFound
from gateway.pagination import check_page_size
from gateway.secrets import SecretBox

log = logging.getLogger(__name__)

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
        return encode_cursor(record.at, record.chain, record.seq)


@dataclass(frozen=True)
class CheckpointPage:
    items: list[Checkpoint]
    has_next: bool
    public_key: str | None  # the platform key the checkpoints are signed with

    @staticmethod
    def cursor(checkpoint: Checkpoint) -> str:
        return encode_cursor(checkpoint.at, checkpoint.chain, checkpoint.seq)


_COLUMNS = (AuditRecord.chain, AuditRecord.seq, AuditRecord.at, AuditRecord.kind,
            AuditRecord.subject, AuditRecord.actor, AuditRecord.payload, AuditRecord.prev_hash,
            AuditRecord.hash)
_CHECKPOINT_COLUMNS = (AuditCheckpoint.chain, AuditCheckpoint.tenant_id, AuditCheckpoint.seq,
                       AuditCheckpoint.head_hash, AuditCheckpoint.at, AuditCheckpoint.count,
                       AuditCheckpoint.public_key, AuditCheckpoint.signature)


def _utc(at: datetime | None) -> datetime | None:
    """An instant without an offset is taken as UTC, as everywhere in the API."""
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)

# Newest first across lanes: the records' and checkpoints' pages, and their cursors.
_RECORD_ORDER = (AuditRecord.at, AuditRecord.chain, AuditRecord.seq)
_CHECKPOINT_ORDER = (AuditCheckpoint.at, AuditCheckpoint.chain, AuditCheckpoint.seq)


class AuditTrail:
    def __init__(self, db: Database, max_page_size: int = 100, *, secrets: SecretBox | None = None,
                 checkpoint_every: int = cp.CHECKPOINT_EVERY, lanes: int = 1) -> None:
        """`secrets` (the runtime's SecretBox) turns on checkpoints taken on append. `lanes`:
        the chains each tenant's appends spread over on PostgreSQL (1 to 16; SQLite: always
        one, its writers take turns anyway)."""
        self.db = db
        self.lanes = Lanes(lanes)
        self.max_page_size = max_page_size
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self.checkpoint_every = checkpoint_every
        self._key: SigningKey | None = SigningKey(secrets) if secrets is not None else None
        self.checkpointer = Checkpointer(self._take_due)

    def use_secrets(self, secrets: SecretBox) -> None:
        """Sign checkpoints with the platform key sealed by `secrets` (also on append)."""
        if self._key is None or self._key.secrets is not secrets:
            self._key = SigningKey(secrets)

    def _signing_key(self, secrets: SecretBox | None) -> SigningKey | None:
        if secrets is None:
            return self._key
        if self._key is not None and self._key.secrets is secrets:
            return self._key
        return SigningKey(secrets)

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
        # One append, one lane: a batch's records stay together and in order.
        lane = self.lanes.lock(session, tenant_id)
        chain, last_seq, last_hash, at = lane.chain, lane.last_seq, lane.last_hash, lane.at
        first_seq, first_prev = last_seq, last_hash
        records: list[dict[str, Any]] = []
        for kind, subject, actor, payload in rows:
            last_seq += 1
            digest = record_hash(chain, last_seq, at, kind, subject, actor, payload, last_hash)
            records.append({"tenant_id": tenant_id, "chain": chain, "seq": last_seq, "at": at,
                            "kind": kind, "subject": subject, "actor": actor, "payload": payload,
                            "prev_hash": last_hash, "hash": digest})
            last_hash = digest
        # Payloads are `plain` (checked in `_checked`): orjson's text needs no check.
        bulk_insert(session, AuditRecord.__table__, records,  # type: ignore[attr-defined]
                    plain_json=True)
        session.execute(update(AuditHead.__table__)  # type: ignore[attr-defined]
                        .where(AuditHead.__table__.c.chain == chain)  # type: ignore[attr-defined]
                        .values(last_seq=last_seq, last_hash=last_hash))
        if self._key is not None and not session.in_nested_transaction():
            # What this process hashed, so that the checkpoint need not hash it again (not in a
            # savepoint: one rolled back would leave a segment of records that never were).
            digest = hashlib.sha256("".join(r["hash"] for r in records).encode()).digest()
            self.checkpointer.written(session, chain, Segment(first_seq + 1, first_prev, last_seq,
                                                              last_hash, digest))
        if self._key is not None and \
                last_seq // self.checkpoint_every > first_seq // self.checkpoint_every:
            # The chain crossed a multiple of `checkpoint_every`: checkpointed after commit.
            self.checkpointer.note(session, Due(tenant_id, chain, last_seq, last_hash))
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

    # Reading: a tenant reads its own lanes in its tenant session; the platform chain is read
    # in a system session (there is no tenant whose filter would admit it).
    def chains(self, tenant_id: str | None) -> list[str]:
        """The tenant's lanes (chains) that exist, lane 0 first; the platform's one chain."""
        with self._session(tenant_id) as session:
            return [h.chain for h in heads(session, tenant_id)]

    def verify(self, tenant_id: str | None, start: datetime | None = None,
               end: datetime | None = None, *, checkpoints: Sequence[Checkpoint] | None = None,
               secrets: SecretBox | None = None) -> AuditVerification:
        """Check each lane's records with `start <= at < end` (the whole lane by default), each
        linked to the record before it; the record before the window is re-hashed (it anchors
        the window), and the record after it must link to the window's last (or, with none
        after it, the head must). Then every checkpoint: the stored ones of every lane and
        `checkpoints` (an auditor's exported set, which takes precedence at the same chain and
        seq), each signed by the platform key and naming the hash its lane still has at its seq.
        Then, for a tenant, its orders (created in the window) and their executions against
        their audit records. `ok` only if all three agree; `code` names the first problem, and
        `chain` the first broken lane."""
        start, end = _utc(start), _utc(end)
        if start is not None and end is not None and end <= start:
            raise InvalidInput("'to' must be after 'from'", code="AUDIT_RANGE_INVALID")
        if checkpoints is not None and len(checkpoints) > cp.MAX_SUPPLIED:
            raise InvalidInput(f"at most {cp.MAX_SUPPLIED} checkpoints per verification",
                               code="AUDIT_CHECKPOINTS_TOO_MANY")
        lanes = self.chains(tenant_id)
        result = self._verify_lanes(tenant_id, lanes, start, end)
        checked, finding = self._verify_checkpoints(tenant_id, lanes, list(checkpoints or ()),
                                                    secrets)
        result = dataclasses.replace(result, checkpoints_checked=checked, checkpoint=finding)
        if tenant_id is not None:
            with self._snapshot(tenant_id) as session:
                rows = cross_check(session, tenant_id, start, end)
            result = dataclasses.replace(result, cross_checked=rows.checked,
                                         mismatches=rows.mismatches, mismatch_count=rows.count)
        if not result.ok:
            return result
        if finding is not None:
            return dataclasses.replace(result, ok=False, code=finding.code, problem=finding.problem)
        if result.mismatches:
            first = result.mismatches[0]
            return dataclasses.replace(result, ok=False, code=first.code, problem=first.problem)
        return result

    def _verify_lanes(self, tenant_id: str | None, lanes: Sequence[str], start: datetime | None,
                      end: datetime | None) -> AuditVerification:
        """Every lane, each as one chain; `checked` sums them, the first broken one is named."""
        found = [(lane, self._verify_chain(tenant_id, start, end, chain=lane)) for lane in lanes]
        each = tuple(LaneVerification(lane, r.ok, r.checked, r.first_bad_seq, r.problem)
                     for lane, r in found)
        total = sum(r.checked for _, r in found)
        broken = next(((lane, r) for lane, r in found if not r.ok), None)
        if broken is None:
            return AuditVerification(True, total, chains=len(lanes), lanes=each)
        lane, r = broken
        return dataclasses.replace(r, checked=total, chain=lane, chains=len(lanes), lanes=each)

    def _verify_chain(self, tenant_id: str | None, start: datetime | None,
                      end: datetime | None, *, chain: str | None = None) -> AuditVerification:
        """One chain (`chain`, by default the tenant's lane 0), read in the tenant's session."""
        chain = chain or chain_of(tenant_id)
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
                        return _broken(0, before.seq,
                                       f"record {before.seq} was altered: its content no longer "
                                       f"matches its hash (edited or moved)")
                    prev_seq, prev_hash = before.seq, before.hash
                where.append(col(AuditRecord.at) >= start)
            head = None
            if end is not None:
                where.append(col(AuditRecord.at) < end)
            else:
                found = session.exec(select(AuditHead).where(AuditHead.chain == chain)).first()
                if found is None:
                    headless = _headless(session, chain)
                    if headless is not None:
                        return headless
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
        if found is None:
            headless = _headless(session, chain)
            if headless is not None:
                return dataclasses.replace(headless, checked=checked)
        head_seq, head_hash = (found.last_seq, found.last_hash) if found else (0, GENESIS)
        following = session.execute(select(AuditRecord.seq, AuditRecord.at, AuditRecord.prev_hash)
                                    .where(col(AuditRecord.chain) == chain,
                                           col(AuditRecord.seq) == last_seq + 1)).first()
        if following is None:
            if head_seq > last_seq:
                return _broken(checked, last_seq + 1,
                               f"record {last_seq + 1} is missing: the chain head says "
                               f"{head_seq} (records deleted)")
            if head_seq == last_seq and head_hash != last_hash:
                return _broken(checked, last_seq,
                               f"record {last_seq} differs from the one the chain head "
                               f"recorded")
            return None
        if _utc(following.at) < end:  # type: ignore[operator]
            return _broken(checked, following.seq,
                           f"record {following.seq} is dated inside the window but lies "
                           f"outside it (moved)")
        if following.prev_hash != last_hash:
            return _broken(checked, following.seq,
                           f"record {following.seq} does not link to record {last_seq}: "
                           f"prev_hash differs (a record before it was replaced or "
                           f"removed)")
        return None

    # Checkpoints.
    def create_checkpoint(self, tenant_id: str | None, *, chain: str | None = None,
                          secrets: SecretBox | None = None) -> Checkpoint:
        """A signed checkpoint of one lane's head now (the one already taken at that seq, if
        any): `chain`, one of the tenant's lanes (by default lane 0; AUDIT_CHAIN_UNKNOWN for any
        other). The lane is verified from its last checkpoint first, so one rewritten since is
        refused (AUDIT_CHAIN_BROKEN), not signed: broken, or (for records this process appended)
        consistent again but not with the hashes computed when they were written."""
        key = self._require_key(secrets)
        with self._transaction(tenant_id) as session:
            lane = chain_of(tenant_id) if chain is None else self._own_lane(session, tenant_id,
                                                                             chain)
            taken = self._checkpoint_lane(session, key, tenant_id, lane)
            if taken is None:
                raise InvalidInput("the chain has no records to checkpoint", code="AUDIT_CHAIN_EMPTY")
        # Segments up to a checkpoint are never read again: held, they would fill the cap.
        self.checkpointer.forget(lane, taken.seq)
        return taken

    def create_checkpoints(self, tenant_id: str | None, *, secrets: SecretBox | None = None
                           ) -> list[Checkpoint]:
        """A checkpoint of every lane with records, lane 0 first, in one transaction: a lane
        that does not verify since its last checkpoint refuses them all (AUDIT_CHAIN_BROKEN,
        naming the lane), so none is signed over a rewrite."""
        key = self._require_key(secrets)
        with self._transaction(tenant_id) as session:
            taken = [c for c in (self._checkpoint_lane(session, key, tenant_id, head.chain)
                                 for head in heads(session, tenant_id) if head.last_seq > 0)
                     if c is not None]
        for checkpoint in taken:
            self.checkpointer.forget(checkpoint.chain, checkpoint.seq)
        return taken

    def _require_key(self, secrets: SecretBox | None) -> SigningKey:
        key = self._signing_key(secrets)
        if key is None:
            raise SigningKeyUnavailable("no secret box to open the platform's signing key")
        return key

    @staticmethod
    def _own_lane(session: Session, tenant_id: str | None, chain: str) -> str:
        """`chain` if it is one of the tenant's lanes; else AUDIT_CHAIN_UNKNOWN, the same
        answer whether or not it is another tenant's (NOT_FOUND, never FORBIDDEN)."""
        if chain not in {h.chain for h in heads(session, tenant_id)}:
            raise NotFound("that chain is not one of this tenant's audit chains",
                           code="AUDIT_CHAIN_UNKNOWN")
        return chain

    def _checkpoint_lane(self, session: Session, key: SigningKey, tenant_id: str | None,
                         chain: str) -> Checkpoint | None:
        """A checkpoint of `chain`'s head as it is now (None: no records yet), in `session`'s
        transaction; Conflict if it does not verify since its last checkpoint."""
        head = session.execute(core_select(AuditHead.last_seq, AuditHead.last_hash)
                               .where(col(AuditHead.chain) == chain)).first()
        if head is None or head.last_seq == 0:
            return None
        existing = self._stored(session, chain, seq=head.last_seq)
        if existing:
            return existing[0]
        found = self._checkpoint(session, key, tenant_id, chain, head.last_seq, head.last_hash,
                                 known=True)
        if isinstance(found, AuditVerification):
            raise Conflict(f"the chain {chain} does not verify since its last checkpoint: "
                           f"{found.problem}", code=found.code or CHAIN_BROKEN,
                           details={"chain": chain, "firstBadSeq": found.first_bad_seq})
        return found

    def _take_due(self, due: Due) -> None:
        """A checkpoint an append made due (on the checkpointer's thread). Never raises into
        the appender: a failure is logged, and the next crossing covers these records."""
        key = self._key
        if key is None:
            return
        try:
            with self._transaction(due.tenant_id) as session:
                if self._stored(session, due.chain, seq=due.seq):
                    self.checkpointer.forget(due.chain, due.seq)
                    return
                taken = self._checkpoint(session, key, due.tenant_id, due.chain, due.seq,
                                         due.head_hash, known=True)
        except SigningKeyUnavailable as exc:
            log.error("audit chain not checkpointed: %s", exc.message, extra={"chain": due.chain})
            return
        if isinstance(taken, AuditVerification):
            log.error("audit chain not checkpointed: it does not verify since the last "
                      "checkpoint", extra={"chain": due.chain, "seq": taken.first_bad_seq,
                                           "problem": taken.problem})
            return
        self.checkpointer.forget(due.chain, taken.seq)
        if due.tenant_id is not None:
            self._take_other_lanes(key, due)

    def _take_other_lanes(self, key: SigningKey, due: Due) -> None:
        """With a lane's due checkpoint, one of each of the tenant's other lanes with records
        since its last: a lane written only while lane 0 is busy may never cross a multiple of
        `checkpoint_every` itself. Each in its own transaction, a failure logged."""
        tenant_id = due.tenant_id
        with self._session(tenant_id) as session:
            others = [h.chain for h in heads(session, tenant_id)
                      if h.chain != due.chain and h.last_seq > 0]
        for chain in others:
            try:
                with self._transaction(tenant_id) as session:
                    taken = self._checkpoint_lane(session, key, tenant_id, chain)
            except (Conflict, SigningKeyUnavailable) as exc:
                log.error("audit lane not checkpointed: %s", exc.message, extra={"chain": chain})
                continue
            if taken is not None:
                self.checkpointer.forget(chain, taken.seq)

    def _checkpoint(self, session: Session, key: SigningKey, tenant_id: str | None, chain: str,
                    seq: int, head_hash: str, *, known: bool = False
                    ) -> Checkpoint | AuditVerification:
        """Verify the records since the chain's last checkpoint (its signature too), then sign
        and store a checkpoint of (seq, head_hash), in `session`'s transaction. With `known`,
        records this process appended and committed are checked by their stored hashes against
        the ones it computed instead of re-hashed (`_as_written`)."""
        private = key.private(session)
        assert private is not None
        public = cp.public_key_of(private)
        prev_seq, prev_hash = 0, GENESIS
        last = session.execute(select(*_CHECKPOINT_COLUMNS).where(
            col(AuditCheckpoint.chain) == chain, col(AuditCheckpoint.seq) < seq)
            .order_by(col(AuditCheckpoint.seq).desc()).limit(1)).first()
        if last is not None:
            previous = Checkpoint.of(last)
            if previous.public_key != public or not cp.signature_valid(previous, public):
                return AuditVerification(False, 0, previous.seq,
                                         f"the stored checkpoint at record {previous.seq} is not "
                                         f"signed by the platform key", cp.SIGNATURE_INVALID)
            prev_seq, prev_hash = previous.seq, previous.head_hash
        segments = self.checkpointer.segments(chain, prev_seq, seq) if known else []
        ok, rewritten = (self._as_written(session, chain, prev_seq, prev_hash, seq, head_hash,
                                          segments) if segments else (False, None))
        if not ok:
            result = self._verify_range(session, chain, prev_seq, prev_hash, seq, head_hash)
            if not result.ok:
                return result
            if rewritten is not None:  # consistent again, but not as this process wrote it
                return _broken(0, rewritten.first_seq,
                               f"records {rewritten.first_seq} to {rewritten.last_seq} were "
                               f"rewritten after they were appended: their hashes are not the "
                               f"ones computed when they were written")
        taken = cp.sign(private, chain, tenant_id, seq, head_hash, count=seq)
        if not cp.insert_checkpoint(session, taken):
            found = self._stored(session, chain, seq=seq)
            return found[0] if found else taken
        return taken

    @staticmethod
    def _verify_range(session: Session, chain: str, prev_seq: int, prev_hash: str, seq: int,
                      head_hash: str) -> AuditVerification:
        """Re-hash the records after (`prev_seq`, `prev_hash`) up to (`seq`, `head_hash`)."""
        checked = 0
        while True:
            chunk = list(session.execute(
                select(*_COLUMNS).where(col(AuditRecord.chain) == chain,
                                        col(AuditRecord.seq) > prev_seq, col(AuditRecord.seq) <= seq)
                .order_by(col(AuditRecord.seq)).limit(VERIFY_CHUNK)).all())
            result = verify_records(chunk, prev_seq=prev_seq, prev_hash=prev_hash,
                                    head=(seq, head_hash) if len(chunk) < VERIFY_CHUNK else None)
            if not result.ok:
                return dataclasses.replace(result, checked=checked + result.checked)
            checked += len(chunk)
            if len(chunk) < VERIFY_CHUNK:
                return AuditVerification(True, checked)
            prev_seq, prev_hash = chunk[-1].seq, chunk[-1].hash

    @classmethod
    def _as_written(cls, session: Session, chain: str, prev_seq: int, prev_hash: str, seq: int,
                    head_hash: str, segments: Sequence[Segment]) -> tuple[bool, Segment | None]:
        """(True, None) if the records after `prev_seq` up to `seq` are all there in order, each
        links to the one before, the last is `head_hash`, each of `segments` (what this process
        appended and committed) still has exactly the hashes it computed, and every record no
        segment covers re-hashes to its stored hash. Reads only seq and hashes for the covered
        ones. (False, None) on any other doubt, (False, segment) for a segment whose hashes
        changed: the caller then re-hashes everything (which names the problem).
        Not re-checked here: that a covered record's content still hashes to its stored hash;
        the checkpoint signs the hash computed from the content as written, so `verify` reports
        a record edited since as altered."""
        pending = iter(segments)
        segment = next(pending, None)
        digest: Any = None  # of the segment being read
        uncovered: list[list[Any]] = []  # [first seq - 1, hash before it, last seq, its hash]
        expected_seq, expected_prev = prev_seq + 1, prev_hash
        while expected_seq <= seq:
            rows = session.execute(
                select(AuditRecord.seq, AuditRecord.prev_hash, AuditRecord.hash)
                .where(col(AuditRecord.chain) == chain, col(AuditRecord.seq) >= expected_seq,
                       col(AuditRecord.seq) <= seq)
                .order_by(col(AuditRecord.seq)).limit(VERIFY_CHUNK)).all()
            if not rows:
                return False, None
            for at_seq, linked, stored in rows:
                if at_seq != expected_seq or linked != expected_prev:
                    return False, None
                if segment is not None and at_seq == segment.first_seq:
                    if linked != segment.prev_hash:
                        return False, segment
                    digest = hashlib.sha256()
                if digest is not None and segment is not None:
                    # Full-length hashes only: a character moved across two keeps the digest.
                    if len(stored) != len(GENESIS):
                        return False, segment
                    digest.update(stored.encode())
                    if at_seq == segment.last_seq:
                        if stored != segment.last_hash or digest.digest() != segment.digest:
                            return False, segment
                        digest, segment = None, next(pending, None)
                elif uncovered and uncovered[-1][2] == at_seq - 1:
                    uncovered[-1][2:] = [at_seq, stored]
                else:
                    uncovered.append([at_seq - 1, linked, at_seq, stored])
                expected_seq, expected_prev = at_seq + 1, stored
        if expected_prev != head_hash or segment is not None:
            return False, None
        return all(cls._verify_range(session, chain, *edge).ok for edge in uncovered), None

    def checkpoints(self, tenant_id: str | None, *, first: int, after: str | None = None,
                    secrets: SecretBox | None = None) -> CheckpointPage:
        """Every lane's checkpoints, newest first by (at, chain, seq), with the platform's
        public key."""
        check_page_size(first, self.max_page_size)
        query = select(AuditCheckpoint).where(self._owned(AuditCheckpoint, tenant_id))
        if after is not None:
            query = query.where(past(_CHECKPOINT_ORDER, decode_cursor(after)))
        query = query.order_by(*(col(c).desc() for c in _CHECKPOINT_ORDER)).limit(first + 1)
        with self._session(tenant_id) as session:
            rows = [Checkpoint.of(r) for r in session.execute(query).scalars()]
            public = self._public_key(session, secrets)
        return CheckpointPage(rows[:first], len(rows) > first, public)

    def export_checkpoints(self, tenant_id: str | None = None, *, every_chain: bool = False,
                           secrets: SecretBox | None = None) -> dict[str, Any]:
        """The export document (checkpoints.export_document) of a tenant's lanes (the platform
        chain with None), or of every chain (`every_chain`, a system read: the operator's)."""
        if every_chain:
            with self.db.system_session() as session:
                rows = session.execute(select(AuditCheckpoint).order_by(
                    col(AuditCheckpoint.chain), col(AuditCheckpoint.seq))).scalars()
                found = [Checkpoint.of(r) for r in rows]
                public = self._public_key(session, secrets)
        else:
            with self._session(tenant_id) as session:
                rows = session.execute(select(*_CHECKPOINT_COLUMNS).where(
                    self._owned(AuditCheckpoint, tenant_id)).order_by(
                    col(AuditCheckpoint.chain), col(AuditCheckpoint.seq))).all()
                found = [Checkpoint.of(r) for r in rows]
                public = self._public_key(session, secrets)
        return cp.export_document(public, found)

    def _public_key(self, session: Session, secrets: SecretBox | None) -> str | None:
        key = self._signing_key(secrets)
        if key is None:
            return cp.stored_public_key(session)
        return key.public(session)

    @staticmethod
    def _owned(model: Any, tenant_id: str | None) -> Any:
        """The rows of every lane of `tenant_id`: by tenant_id (said here too, not only by the
        session's filter), the platform's by its one chain."""
        if tenant_id is None:
            return col(model.chain) == PLATFORM_CHAIN
        return col(model.tenant_id) == tenant_id

    @staticmethod
    def _stored(session: Session, chain: str, *, seq: int | None = None) -> list[Checkpoint]:
        query = select(*_CHECKPOINT_COLUMNS).where(col(AuditCheckpoint.chain) == chain)
        if seq is not None:
            query = query.where(col(AuditCheckpoint.seq) == seq)
        return [Checkpoint.of(r) for r in
                session.execute(query.order_by(col(AuditCheckpoint.seq))).all()]

    def _verify_checkpoints(self, tenant_id: str | None, lanes: Sequence[str],
                            supplied: list[Checkpoint], secrets: SecretBox | None
                            ) -> tuple[int, CheckpointFinding | None]:
        """Every checkpoint of the tenant's `lanes`, lane by lane in seq order: the caller's and
        the stored ones (the caller's win at the same chain and seq). The first that is not of
        one of these lanes (FOREIGN: after the lanes' own, so a real disagreement is named
        first), not signed by the platform key, or names a hash its lane no longer has at its
        seq, is the finding."""
        order = {lane: i for i, lane in enumerate(lanes)}
        with self._session(tenant_id) as session:
            try:
                public = self._public_key(session, secrets)
            except SigningKeyUnavailable:
                public = None  # every checkpoint then fails as KEY_UNKNOWN
            mine = {(c.chain, c.seq) for c in supplied if c.chain in order}
            stored = [Checkpoint.of(r) for r in session.execute(
                select(*_CHECKPOINT_COLUMNS).where(self._owned(AuditCheckpoint, tenant_id),
                                                   col(AuditCheckpoint.chain).in_(lanes)))]
            candidates = [(c, True) for c in supplied] + [
                (c, False) for c in stored if (c.chain, c.seq) not in mine]
            candidates.sort(key=lambda pair: (order.get(pair[0].chain, len(lanes)), pair[0].seq,
                                              not pair[1]))
            records: dict[tuple[str, int], Any] = {}
            for lane in lanes:
                seqs = sorted({c.seq for c, _ in candidates if c.chain == lane})
                for start in range(0, len(seqs), 500):
                    for row in session.execute(select(*_COLUMNS).where(
                            col(AuditRecord.chain) == lane,
                            col(AuditRecord.seq).in_(seqs[start:start + 500]))):
                        records[(lane, row.seq)] = row
        for checked, (c, supplied_) in enumerate(candidates):
            problem = _checkpoint_problem(c, order, tenant_id, public, records.get((c.chain, c.seq)))
            if problem is not None:
                code, text = problem
                return checked, CheckpointFinding(code, c.seq, c.head_hash, c.at, text, supplied_,
                                                  None if code == cp.FOREIGN else c.chain)
        return len(candidates), None

    @contextmanager
    def _transaction(self, tenant_id: str | None) -> Iterator[Session]:
        if tenant_id is None:
            with self.db.system_transaction() as session:
                yield session
        else:
            with self.db.tenant_transaction(tenant_id) as session:
                yield session

    @contextmanager
    def _snapshot(self, tenant_id: str) -> Iterator[Session]:
        """A tenant session whose reads all see one snapshot (the cross-check compares rows read
        by several statements)."""
        with self.db.tenant_session(tenant_id) as session:
            bind = session.get_bind()
            if bind.dialect.name == "postgresql":
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            elif bind.dialect.name == "sqlite":
                raw = session.connection().connection.dbapi_connection
                if raw is not None and not raw.in_transaction:
                    session.connection().exec_driver_sql("BEGIN")
            try:
                yield session
            finally:
                session.rollback()

    def records(self, tenant_id: str, *, kind: str | None = None, subject: str | None = None,
                first: int, after: str | None = None) -> AuditPage:
        """A tenant's records, every lane's, newest first by (at, chain, seq)."""
        check_page_size(first, self.max_page_size)
        query = select(AuditRecord).where(col(AuditRecord.tenant_id) == tenant_id)
        if kind is not None:
            query = query.where(AuditRecord.kind == kind)
        if subject is not None:
            query = query.where(AuditRecord.subject == subject)
        if after is not None:
            query = query.where(past(_RECORD_ORDER, decode_cursor(after)))
        query = query.order_by(*(col(c).desc() for c in _RECORD_ORDER)).limit(first + 1)
        with self.db.tenant_session(tenant_id) as session:
            rows = list(session.exec(query).all())
        return AuditPage(rows[:first], len(rows) > first)

    def _session(self, tenant_id: str | None) -> Any:
        return self.db.system_session() if tenant_id is None else self.db.tenant_session(tenant_id)


def _checkpoint_problem(c: Checkpoint, lanes: Mapping[str, int], tenant_id: str | None,
                        public: str | None, record: Any) -> tuple[str, str] | None:
    if c.chain not in lanes or c.tenant_id != tenant_id:
        return cp.FOREIGN, f"the checkpoint at record {c.seq} is of another chain"
    if public is None or c.public_key != public:
        return cp.KEY_UNKNOWN, (f"the checkpoint at record {c.seq} is not signed by the "
                                f"platform's audit key")
    if not cp.signature_valid(c, public):
        return cp.SIGNATURE_INVALID, (f"the checkpoint at record {c.seq}: its signature does not "
                                      f"match its statement")
    if record is None:
        return cp.RECORD_MISSING, (f"the checkpoint at record {c.seq}: the chain no longer has "
                                   f"record {c.seq}")
    if record.hash != c.head_hash or hash_of(record) != c.head_hash:
        return cp.MISMATCH, (f"the checkpoint at record {c.seq} signed hash {c.head_hash[:12]}…, "
                             f"the chain now has {record.hash[:12]}… there (records up to "
                             f"{c.seq} were rewritten)")
    return None


def _headless(session: Session, chain: str) -> AuditVerification | None:
    """A chain with records but no head row: its head was deleted, so records deleted from its
    end could no longer show. Broken; None for a chain with no records either."""
    last = session.execute(select(AuditRecord.seq).where(col(AuditRecord.chain) == chain)
                           .order_by(col(AuditRecord.seq).desc()).limit(1)).first()
    if last is None:
        return None
    return _broken(0, last.seq, f"the head of chain {chain} is missing (deleted): its records, "
                                f"up to {last.seq}, have no recorded end to be checked against")


def _broken(checked: int, seq: int, problem: str) -> AuditVerification:
    return AuditVerification(False, checked, seq, problem, CHAIN_BROKEN)
