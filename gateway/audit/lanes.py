"""A tenant's audit trail in lanes (issue 14, "the audit chain sharded").

One chain per tenant made every writer of the tenant (several gateway workers taking order
batches, the venue process applying reports) take turns on one `audit_head` row. A tenant's
trail is now up to `count` lanes, each an ordinary hash chain with its own head, seqs and
checkpoints. Lane 0 is the chain there always was, named by the tenant id (so every record,
hash, checkpoint and export made before stays valid); lane k > 0 is `f"{tenant_id}/{k}"`. The
platform chain keeps one lane.

Appending (`Lanes.lock`, PostgreSQL): one statement locks the first lane no other transaction
holds (`FOR UPDATE SKIP LOCKED`, lane 0 first, so a tenant without contention writes lane 0
only), preferring a lane this transaction already holds so that its records stay in one lane.
With every lane busy (or the heads not made yet: made once, all of them, remembered per
process once seen) it waits for lane 0 as before. The record's `at` is the database's clock
(clock_timestamp()) read by that statement: lanes are ordered against each other by `at`, and
the clocks of several hosts would disagree. If the lane's row changed while the statement waited
for it (its holder appended and committed), PostgreSQL computes the statement's output again for
the new row (EvalPlanQual), so the clock is read after that commit; if it did not change, no
record joined the lane since the clock was read. Either way a lane's `at` does not go back
(tests/test_audit_lanes.py checks it). On SQLite the database has one writer at a time anyway:
one lane, the process's clock.

Reading: a tenant's records are its own (`tenant_id`), so `tenant_id = :t` reads every lane,
newest first by (at, chain, seq). The lanes that exist are the `audit_head` rows named `t` or
`t/<k>`; `heads` also drops a name that is another tenant's id (tenant ids are UUIDs, but a
lane name must never reach another tenant's chain), and readers select by tenant_id as well.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, bindparam, exists, func, literal, tuple_, union_all
from sqlalchemy import select as core_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gateway.audit.chain import GENESIS
from gateway.audit.models import PLATFORM_CHAIN, AuditCheckpoint, AuditHead, AuditRecord
from gateway.db import utcnow
from gateway.errors import InvalidInput
from gateway.pagination import cursor_instant

MAX_LANES = 16
DEFAULT_LANES = 4
CHAIN_MAX = 40  # the chain columns' length (migration 0026): a tenant id (36) + "/16"

_HEADS: Table = AuditHead.__table__  # type: ignore[attr-defined]
_RECORDS: Table = AuditRecord.__table__  # type: ignore[attr-defined]
_CHECKPOINTS: Table = AuditCheckpoint.__table__  # type: ignore[attr-defined]
_LANE_SUFFIX = re.compile(r"[1-9][0-9]?")  # k > 0, decimal, no leading zero
_CHAIN_TEXT = re.compile(rf"[0-9A-Za-z._:/-]{{1,{CHAIN_MAX}}}")  # what a chain name can be
_HELD = "audit_lanes_held"  # session.info: {tenant id: (root transaction, lane it holds)}


def chain_of(tenant_id: str | None) -> str:
    """Lane 0: the tenant's original chain (the platform's only one)."""
    return PLATFORM_CHAIN if tenant_id is None else tenant_id


def lane_name(tenant_id: str, k: int) -> str:
    return tenant_id if k == 0 else f"{tenant_id}/{k}"


def lane_number(tenant_id: str | None, chain: str) -> int | None:
    """k if `chain` is named as lane k of `tenant_id` (the platform has lane 0 only), else
    None. The name alone does not make it the tenant's: see `heads`."""
    if chain == chain_of(tenant_id):
        return 0
    if tenant_id is None or not chain.startswith(tenant_id + "/"):
        return None
    suffix = chain[len(tenant_id) + 1:]
    if not _LANE_SUFFIX.fullmatch(suffix) or int(suffix) >= MAX_LANES:
        return None
    return int(suffix)


@dataclass(frozen=True, slots=True)
class Head:
    chain: str
    last_seq: int
    last_hash: str


@dataclass(frozen=True, slots=True)
class Locked:
    """The lane an append holds until its transaction ends, and the record's instant."""

    chain: str
    last_seq: int
    last_hash: str
    at: datetime


def heads(session: Session, tenant_id: str | None) -> list[Head]:
    """The tenant's lanes, lane 0 first then by number: lane 0 always (as (0, GENESIS) before
    its first record), and each lane `t/<k>` (k < MAX_LANES) with a head, records or
    checkpoints, whose name is no other tenant's id. A lane whose head row is gone (deleted:
    `audit_head` is not append-only) is still listed, with (0, GENESIS), so that verifying it
    finds its records without an end. `audit_head` is not tenant-owned: these are Core reads,
    filtered here."""
    base = chain_of(tenant_id)
    names = [base] if tenant_id is None else [lane_name(tenant_id, k) for k in range(MAX_LANES)]
    found = {chain: Head(chain, int(last_seq), str(last_hash))
             for chain, last_seq, last_hash in session.execute(
                 core_select(_HEADS.c.chain, _HEADS.c.last_seq, _HEADS.c.last_hash)
                 .where(_HEADS.c.chain.in_(names)))}
    headless = [name for name in names[1:] if name not in found]
    if tenant_id is not None and headless:
        records, checkpoints = _RECORDS.c, _CHECKPOINTS.c
        # One probe per name (a seek on the records' (chain, seq) key), never a scan.
        probes = [core_select(literal(name).label("chain")).where(
            exists().where(records.chain == name, records.tenant_id == tenant_id))
            for name in headless]
        kept = set(session.execute(union_all(*probes)).scalars())
        kept.update(session.execute(core_select(checkpoints.chain).where(
            checkpoints.tenant_id == tenant_id, checkpoints.chain.in_(headless))).scalars())
        found.update((name, Head(name, 0, GENESIS)) for name in kept)
    others = _other_tenants(session, tenant_id, [c for c in found if c != base])
    lanes = [found.get(base, Head(base, 0, GENESIS))]
    lanes += [found[name] for name in names[1:] if name in found and name not in others]
    return lanes


def _other_tenants(session: Session, tenant_id: str | None, names: Sequence[str]) -> set[str]:
    """Those of `names` that are another tenant's id (so that tenant's lane 0, never ours)."""
    if tenant_id is None or not names:
        return set()
    from gateway.tenancy.models import Tenant  # the audit package's models import no tenancy

    table: Table = Tenant.__table__  # type: ignore[attr-defined]
    return set(session.execute(core_select(table.c.id).where(
        table.c.id.in_(list(names)), table.c.id != tenant_id)).scalars())


class Lanes:
    """Which lane an append takes. Per process: the tenants whose heads are made, and each
    tenant's lane names."""

    def __init__(self, count: int = 1) -> None:
        if not 1 <= count <= MAX_LANES:
            raise ValueError(f"lanes must be 1 to {MAX_LANES}")
        self.count = count
        self._made: set[str] = set()
        self._names: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def names(self, session: Session, tenant_id: str | None) -> tuple[str, ...]:
        """The lanes `tenant_id` appends to: lane 0 (the platform's only), then 1..count-1, less
        any name that is another tenant's id (looked up once per tenant and process)."""
        base = chain_of(tenant_id)
        if tenant_id is None or self.count == 1:
            return (base,)
        with self._lock:
            known = self._names.get(tenant_id)
        if known is None:
            candidates = [lane_name(tenant_id, k) for k in range(1, self.count)]
            taken = _other_tenants(session, tenant_id, candidates)
            known = (base, *(c for c in candidates if c not in taken))
            with self._lock:
                self._names[tenant_id] = known
        return known

    def lock(self, session: Session, tenant_id: str | None) -> Locked:
        """Lock a lane of `tenant_id` (None: the platform chain) to the end of the session's
        transaction: its head and the instant to stamp the records with."""
        dialect = session.get_bind().dialect.name
        if dialect == "sqlite":
            return _lock_sqlite(session, chain_of(tenant_id))
        if dialect != "postgresql":  # pragma: no cover - the gateway runs on PostgreSQL or SQLite
            raise RuntimeError(f"audit trail has no head lock for {dialect}")
        names = self.names(session, tenant_id)
        base = names[0]
        if len(names) > 1:
            held = _held(session, base)
            row = session.execute(_PICK, {"lanes": list(names), "held": held or base}).first()
            if row is not None:
                _hold(session, base, row.chain)
                return _locked(row)
        with self._lock:
            made = base in self._made
        if not made:
            self._make(session, names)
        row = session.execute(_WAIT, {"chain": base}).first()
        if row is None:  # remembered as made, but gone (a database reset under this process)
            self._make(session, names)
            row = session.execute(_WAIT, {"chain": base}).one()
        if len(names) > 1:
            _hold(session, base, base)
        return _locked(row)

    def _make(self, session: Session, names: Sequence[str]) -> None:
        inserted = session.execute(postgresql.insert(_HEADS).values(
            [{"chain": name, "last_seq": 0, "last_hash": GENESIS} for name in names])
            .on_conflict_do_nothing()).rowcount  # type: ignore[attr-defined]
        # Remembered once seen all there (committed, so never rolled back): heads this
        # transaction inserts may still roll back, and the next busy append makes them again.
        if inserted == 0:
            with self._lock:
                self._made.add(names[0])


_NOW = func.clock_timestamp().label("now")
# The first lane no other transaction holds: the one this transaction holds already (not
# skipped: its own lock), else lane 0, then the others by name.
_PICK = (core_select(_HEADS.c.chain, _HEADS.c.last_seq, _HEADS.c.last_hash, _NOW)
         .where(_HEADS.c.chain.in_(bindparam("lanes", expanding=True)))
         .order_by(_HEADS.c.chain != bindparam("held"), _HEADS.c.chain)
         .limit(1).with_for_update(skip_locked=True))
_WAIT = (core_select(_HEADS.c.chain, _HEADS.c.last_seq, _HEADS.c.last_hash, _NOW)
         .where(_HEADS.c.chain == bindparam("chain")).with_for_update())


def _locked(row: Any) -> Locked:
    return Locked(row.chain, int(row.last_seq), str(row.last_hash), row.now.astimezone(UTC))


def _held(session: Session, base: str) -> str | None:
    held = session.info.get(_HELD, {}).get(base)
    if held is None:
        return None
    transaction, chain = held
    return chain if transaction is session.get_transaction() else None


def _hold(session: Session, base: str, chain: str) -> None:
    session.info.setdefault(_HELD, {})[base] = (session.get_transaction(), chain)


def _lock_sqlite(session: Session, chain: str) -> Locked:
    """SQLite locks nothing per row: a write comes first (the database's write lock), so two
    appenders cannot both read the same head."""
    session.execute(sqlite.insert(_HEADS).values(chain=chain, last_seq=0, last_hash=GENESIS)
                    .on_conflict_do_nothing())
    row = session.execute(core_select(_HEADS.c.last_seq, _HEADS.c.last_hash)
                          .where(_HEADS.c.chain == chain)).one()
    return Locked(chain, int(row.last_seq), str(row.last_hash), utcnow())


# Cursors of pages ordered newest first by (at, chain, seq): records and checkpoints.
def encode_cursor(at: datetime, chain: str, seq: int) -> str:
    return base64.urlsafe_b64encode(f"{at.astimezone(UTC).isoformat()}|{seq}|{chain}"
                                    .encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str, int]:
    """(at, chain, seq) of a cursor `encode_cursor` made; CURSOR_INVALID otherwise, also for
    values the columns cannot hold (they would fail only when bound, as internal errors)."""
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        stamp, seq_text, chain = text.split("|", 2)
        seq = int(seq_text)
        if not -(2 ** 31) <= seq < 2 ** 31 or not _CHAIN_TEXT.fullmatch(chain):
            raise ValueError
        return cursor_instant(stamp), chain, seq
    except (ValueError, UnicodeDecodeError, OverflowError):
        raise InvalidInput("cursor is not one this API returned", code="CURSOR_INVALID") from None


def past(columns: Sequence[Any], values: Sequence[Any]) -> ColumnElement[bool]:
    """Rows past a cursor in newest-first order: (at, chain, seq) < the cursor's, as one row
    comparison (an index on (tenant_id, at, chain, seq) seeks to it). `values`: the cursor's
    three values, or bind parameters for them."""
    # Values bound with their column's type (UTCDateTime: SQLite stores instants without offset).
    bound = [v if isinstance(v, ColumnElement) else literal(v, c.type)
             for c, v in zip(columns, values, strict=True)]
    return tuple_(*columns) < tuple_(*bound)
