"""The hash chain itself, as pure functions: canonical form, record hash, verification.

Every record's hash is SHA-256 over the canonical JSON (sorted keys, no spaces, ASCII) of
(chain, seq, at, kind, subject, actor, payload, prev_hash); `prev_hash` is the previous record's
hash (GENESIS for seq 1). Editing a record breaks its own hash; deleting one leaves a seq gap;
moving one changes the seq its hash covers. `verify_records` is what both the service and the
tests run, so a tampered list in memory and a tampered table are judged alike.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Protocol

GENESIS = "0" * 64


class ChainedRecord(Protocol):
    chain: str
    seq: int
    at: datetime
    kind: str
    subject: str
    actor: str | None
    payload: dict[str, Any]
    prev_hash: str
    hash: str


_SCALARS = frozenset({str, int, bool, type(None)})  # exactly these types: kept as they are


def plain(value: Any) -> Any:
    """The JSON form stored and hashed: Decimals, instants, dates, ids and enums as strings."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("audit payloads hold finite numbers only")
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("audit payloads hold finite numbers only")
        return plain_decimal(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime in an audit payload; use timezone-aware UTC")
        return instant(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        # Values already plain (most of them) are kept without a call per value.
        return {k if type(k) is str else str(k): v if type(v) in _SCALARS else plain(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [v if type(v) in _SCALARS else plain(v) for v in value]
        return sorted(items, key=canonical) if isinstance(value, set | frozenset) else items
    raise TypeError(f"{type(value).__name__} cannot go into an audit payload")


def plain_decimal(value: Decimal) -> str:
    """A Decimal in plain notation, every digit kept: 1E+1 is "10", 1E-7 "0.0000001", 1.50
    "1.50" (str() would write exponents for the first two)."""
    text = str(value)  # the fast path: plain already for most values
    return format(value, "f") if "E" in text else text


def instant(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def record_hash(chain: str, seq: int, at: datetime, kind: str, subject: str, actor: str | None,
                payload: Mapping[str, Any], prev_hash: str) -> str:
    """`payload` is already in its stored JSON form (`plain`): as appended, or as read back."""
    body = canonical({"chain": chain, "seq": seq, "at": instant(at), "kind": kind,
                      "subject": subject, "actor": actor, "payload": payload,
                      "prev_hash": prev_hash})
    return hashlib.sha256(body.encode("ascii")).hexdigest()


def hash_of(record: ChainedRecord) -> str:
    return record_hash(record.chain, record.seq, record.at, record.kind, record.subject,
                       record.actor, record.payload, record.prev_hash)


CHAIN_BROKEN = "AUDIT_CHAIN_BROKEN"


@dataclass(frozen=True)
class CheckpointFinding:
    """The first checkpoint that disagrees with the chain (or is not a valid platform
    checkpoint for it), with a stable code."""

    code: str
    seq: int
    head_hash: str
    at: datetime
    problem: str
    supplied: bool  # from the caller's exported set (else a stored one)
    chain: str | None = None  # the tenant's lane it is of (None: another chain's, FOREIGN)


@dataclass(frozen=True)
class Mismatch:
    """An order or execution row and its audit records disagreeing (or one without the other)."""

    code: str
    order_id: str
    problem: str
    execution_id: str | None = None
    field: str | None = None
    recorded: str | None = None  # what the audit records say
    actual: str | None = None  # what the row says


@dataclass(frozen=True)
class LaneVerification:
    """One lane (chain) of a tenant's trail as `AuditTrail.verify` found it."""

    chain: str
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None


@dataclass(frozen=True)
class AuditVerification:
    ok: bool
    checked: int  # summed over the lanes
    first_bad_seq: int | None = None
    problem: str | None = None
    code: str | None = None  # the first problem's stable code (chain, then checkpoint, then rows)
    checkpoints_checked: int = 0
    checkpoint: CheckpointFinding | None = None
    cross_checked: int = 0  # order and execution rows compared with their audit records
    mismatches: tuple[Mismatch, ...] = ()  # the first MAX_MISMATCHES
    mismatch_count: int = 0
    chain: str | None = None  # the lane `first_bad_seq` is in (the first broken one)
    chains: int = 1  # lanes verified
    lanes: tuple[LaneVerification, ...] = ()  # each lane's own result, lane 0 first


def verify_records(records: Sequence[ChainedRecord], *, prev_seq: int = 0,
                   prev_hash: str = GENESIS, head: tuple[int, str] | None = None
                   ) -> AuditVerification:
    """Check `records`, in the order given, as the continuation of the record (`prev_seq`,
    `prev_hash`): seq 1 follows (0, GENESIS). `head`, the chain's recorded (last seq, last hash),
    also catches records deleted from the end."""
    expected_seq, expected_prev = prev_seq + 1, prev_hash
    seqs_ahead = {r.seq for r in records}
    for checked, record in enumerate(records):
        if record.seq != expected_seq:
            if record.seq < expected_seq or expected_seq in seqs_ahead:
                return _broken(checked, expected_seq,
                               f"record {record.seq} is out of order: it comes where "
                               f"record {expected_seq} belongs (records reordered)")
            return _broken(checked, expected_seq,
                           f"record {expected_seq} is missing: record {record.seq} "
                           f"follows record {expected_seq - 1} (records deleted)")
        if hash_of(record) != record.hash:
            return _broken(checked, record.seq,
                           f"record {record.seq} was altered: its content no longer "
                           f"matches its hash (edited or moved)")
        if record.prev_hash != expected_prev:
            return _broken(checked, record.seq,
                           f"record {record.seq} does not link to record "
                           f"{record.seq - 1}: prev_hash differs (a record before it "
                           f"was replaced or removed)")
        seqs_ahead.discard(record.seq)
        expected_seq, expected_prev = record.seq + 1, record.hash
    if head is not None:
        last_seq, last_hash = head
        if last_seq >= expected_seq:
            return _broken(len(records), expected_seq,
                           f"records {expected_seq} to {last_seq} are missing: the chain "
                           f"ends at {expected_seq - 1} but its head says {last_seq}")
        if last_seq == expected_seq - 1 and last_hash != expected_prev:
            return _broken(len(records), last_seq,
                           f"record {last_seq} differs from the one the chain head "
                           f"recorded")
    return AuditVerification(True, len(records))


def _broken(checked: int, seq: int, problem: str) -> AuditVerification:
    return AuditVerification(False, checked, seq, problem, CHAIN_BROKEN)
