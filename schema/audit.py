"""The audit trail: verify the caller's tenant trail (every lane of it), page through its records,
and its signed checkpoints.

A tenant's trail is up to 16 lanes, each a hash chain of its own (gateway/audit/lanes.py): lane 0
is named by the tenant id, lane k by "<tenant id>/k". Records and checkpoints carry their
`chain`; pages run newest first across lanes by (at, chain, seq).

Permission (casbin object "audit"): "read" for admin and compliance_officer (verify, records,
checkpoints), "write" for admin (createAuditCheckpoint, createAuditCheckpoints). A tenant sees,
checkpoints and verifies only its own lanes; the platform chain is checked with
`alphintra audit verify --platform`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from gateway.audit import AuditPage, AuditRecord, AuditVerification
from gateway.audit.chain import CheckpointFinding, Mismatch
from gateway.audit.checkpoints import Checkpoint
from gateway.audit.reads import CURSOR_COLUMNS, record_columns
from gateway.audit.trail import CheckpointPage
from schema.common import DEFAULT_PAGE, Edge, PageInfo, ctx
from schema.selected_rows import RowShape
from schema.selection import connection_node_fields


@strawberry.type(description="A checkpoint that disagrees with the chain, or is not a valid "
                             "platform checkpoint of it.")
class AuditCheckpointFinding:
    code: str = strawberry.field(description="AUDIT_CHECKPOINT_MISMATCH (the chain has another "
                                             "hash at its seq: rewritten), _RECORD_MISSING, "
                                             "_SIGNATURE_INVALID, _KEY_UNKNOWN or _FOREIGN (another "
                                             "chain's).")
    seq: int
    head_hash: str
    at: datetime
    problem: str
    supplied: bool = strawberry.field(description="From the checkpoints given to the query "
                                                  "(else a stored one).")
    chain: str | None = strawberry.field(description="The tenant's lane (chain) the checkpoint "
                                                     "is of; null for another chain's (FOREIGN).")

    @classmethod
    def of(cls, f: CheckpointFinding) -> AuditCheckpointFinding:
        return cls(code=f.code, seq=f.seq, head_hash=f.head_hash, at=f.at, problem=f.problem,
                   supplied=f.supplied, chain=f.chain)


@strawberry.type(description="An order or execution row and its audit records disagreeing.")
class AuditMismatch:
    code: str = strawberry.field(description="AUDIT_ORDER_MISSING, AUDIT_ORDER_MISMATCH, "
                                             "AUDIT_ORDER_ROW_MISSING, AUDIT_EXECUTION_MISSING, "
                                             "AUDIT_EXECUTION_MISMATCH, AUDIT_EXECUTION_ROW_MISSING")
    order_id: str
    execution_id: str | None
    field: str | None
    recorded: str | None = strawberry.field(description="What the audit records say.")
    actual: str | None = strawberry.field(description="What the row says.")
    problem: str

    @classmethod
    def of(cls, m: Mismatch) -> AuditMismatch:
        return cls(code=m.code, order_id=m.order_id, execution_id=m.execution_id, field=m.field,
                   recorded=m.recorded, actual=m.actual, problem=m.problem)


@strawberry.type(description="A signed statement of one lane's (chain's) head: keep it outside "
                             "the database and give it back to verifyAuditTrail(checkpoints:).")
class AuditCheckpoint:
    chain: str = strawberry.field(description="The lane: the tenant id (lane 0) or "
                                              "\"<tenant id>/<k>\".")
    tenant_id: str | None
    seq: int = strawberry.field(description="The last record's seq.")
    head_hash: str
    at: datetime
    count: int = strawberry.field(description="Records in the chain up to seq.")
    public_key: str = strawberry.field(description="The platform's Ed25519 key, raw, base64.")
    signature: str = strawberry.field(description="Ed25519 over `statement`, raw, base64.")
    statement: str = strawberry.field(description="The exact text signed (canonical JSON).")

    @classmethod
    def of(cls, c: Checkpoint) -> AuditCheckpoint:
        return cls(chain=c.chain, tenant_id=c.tenant_id, seq=c.seq, head_hash=c.head_hash,
                   at=c.at, count=c.count, public_key=c.public_key, signature=c.signature,
                   statement=c.statement().decode("ascii"))


@strawberry.input(description="An exported checkpoint (the fields of AuditCheckpoint, less "
                              "`statement`; `alphintra audit export-checkpoints` writes these).")
class AuditCheckpointInput:
    chain: str
    tenant_id: str | None = None
    seq: int
    head_hash: str
    at: datetime
    count: int
    public_key: str
    signature: str

    def value(self) -> Checkpoint:
        return Checkpoint.parse({"chain": self.chain, "tenantId": self.tenant_id, "seq": self.seq,
                                 "headHash": self.head_hash, "at": self.at, "count": self.count,
                                 "publicKey": self.public_key, "signature": self.signature})


@strawberry.type
class AuditCheckpointConnection:
    edges: list[Edge[AuditCheckpoint]]
    page_info: PageInfo
    public_key: str | None = strawberry.field(
        description="The platform's Ed25519 key the checkpoints are signed with (raw, base64).")

    @classmethod
    def of(cls, page: CheckpointPage) -> AuditCheckpointConnection:
        edges = [Edge(cursor=page.cursor(c), node=AuditCheckpoint.of(c)) for c in page.items]
        return cls(edges=edges, public_key=page.public_key, page_info=PageInfo(
            has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None))


@strawberry.type(description="The result of recomputing every hash and link of every lane of "
                             "the trail, checking every checkpoint against its lane, and "
                             "comparing orders and executions with their audit records.")
class AuditTrailVerification:
    ok: bool
    checked: int = strawberry.field(description="Records verified, summed over the lanes (in a "
                                                "broken lane, those before its first bad one).")
    first_bad_seq: int | None = strawberry.field(
        description="The seq where the first broken lane breaks: the record edited, missing or "
                    "out of order (in `chain`).")
    chain: str | None = strawberry.field(description="The lane (chain) firstBadSeq is in.")
    chains: int = strawberry.field(description="Lanes (chains) verified.")
    problem: str | None
    code: str | None = strawberry.field(
        description="The first problem's stable code: AUDIT_CHAIN_BROKEN, an AUDIT_CHECKPOINT_* "
                    "code, or an order/execution mismatch's.")
    checkpoints_checked: int = strawberry.field(
        description="Checkpoints found valid before the first that disagrees.")
    checkpoint: AuditCheckpointFinding | None = strawberry.field(
        description="The first checkpoint that disagrees with the chain.")
    cross_checked: int = strawberry.field(
        description="Order and execution rows compared with their audit records.")
    mismatches: list[AuditMismatch] = strawberry.field(
        description="Rows and records that disagree (the first 100).")
    mismatch_count: int

    @classmethod
    def of(cls, v: AuditVerification) -> AuditTrailVerification:
        return cls(ok=v.ok, checked=v.checked, first_bad_seq=v.first_bad_seq, chain=v.chain,
                   chains=v.chains, problem=v.problem, code=v.code,
                   checkpoints_checked=v.checkpoints_checked,
                   checkpoint=AuditCheckpointFinding.of(v.checkpoint) if v.checkpoint else None,
                   cross_checked=v.cross_checked,
                   mismatches=[AuditMismatch.of(m) for m in v.mismatches],
                   mismatch_count=v.mismatch_count)


@strawberry.type
class AuditTrailRecord:
    chain: str = strawberry.field(description="The lane the record is in: the tenant id (lane 0) "
                                              "or \"<tenant id>/<k>\"; seq counts within it.")
    seq: int
    at: datetime = strawberry.field(description="When the record was appended (on PostgreSQL "
                                                "the database's clock, read under the lane's "
                                                "lock): it orders records across lanes.")
    kind: str
    subject: str
    actor: str | None
    payload: JSON
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, row: AuditRecord) -> AuditTrailRecord:
        return cls(chain=row.chain, seq=row.seq, at=row.at, kind=row.kind, subject=row.subject,
                   actor=row.actor, payload=row.payload, prev_hash=row.prev_hash, hash=row.hash)


# Selected reads (issue 14): the column each field of an audit record reads; a page that does
# not ask for the payload does not read it (gateway/audit/reads.py).
RECORD_ROWS: RowShape[AuditTrailRecord] = RowShape(
    AuditTrailRecord,
    fields={"__typename": (), "chain": ("chain",), "seq": ("seq",), "at": ("at",),
            "kind": ("kind",),
            "subject": ("subject",), "actor": ("actor",), "payload": ("payload",),
            "prevHash": ("prev_hash",), "hash": ("hash",)},
    always=CURSOR_COLUMNS,
)


@strawberry.type
class AuditRecordConnection:
    edges: list[Edge[AuditTrailRecord]]
    page_info: PageInfo

    @classmethod
    def of(cls, page: AuditPage, convert: Callable[[Any], AuditTrailRecord] = AuditTrailRecord.of
           ) -> AuditRecordConnection:
        edges = [Edge(cursor=page.cursor(r), node=convert(r)) for r in page.items]
        return cls(edges=edges, page_info=PageInfo(
            has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None))


@strawberry.type
class Query:
    @strawberry.field(description="Check the tenant's audit trail, every lane, whole or for "
                                  "records with from <= at < to; says where it is broken (lane "
                                  "and seq). Every checkpoint (stored, and `checkpoints` "
                                  "exported earlier, which take precedence) must be signed by "
                                  "the platform key and match its lane; orders (created in the "
                                  "window) and executions must agree with their audit records.")
    def verify_audit_trail(self, info: Info,
                           from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
                           to: datetime | None = None,
                           checkpoints: list[AuditCheckpointInput] | None = None
                           ) -> AuditTrailVerification:
        c = ctx(info)
        c.require("audit", "read")
        given = None if checkpoints is None else [cp.value() for cp in checkpoints]
        return AuditTrailVerification.of(c.runtime.audit.verify(
            c.tenant_id, from_, to, checkpoints=given, secrets=c.runtime.secrets))

    @strawberry.field(description="The signed checkpoints of every lane of the tenant's trail, "
                                  "newest first, and the platform's public key: export them to "
                                  "keep outside the database.")
    def audit_checkpoints(self, info: Info, first: int = DEFAULT_PAGE, after: str | None = None
                          ) -> AuditCheckpointConnection:
        c = ctx(info)
        c.require("audit", "read")
        return AuditCheckpointConnection.of(c.runtime.audit.checkpoints(
            c.tenant_id, first=first, after=after, secrets=c.runtime.secrets))

    @strawberry.field(description="The tenant's audit records, every lane's, newest first (by "
                                  "at, then chain and seq).")
    def audit_records(self, info: Info, kind: str | None = None, subject: str | None = None,
                      first: int = DEFAULT_PAGE, after: str | None = None) -> AuditRecordConnection:
        c = ctx(info)
        c.require("audit", "read")
        columns = RECORD_ROWS.columns(connection_node_fields(
            info, "AuditTrailRecord", connection_type="AuditRecordConnection"))
        if columns is None:
            return AuditRecordConnection.of(c.runtime.audit.records(
                c.tenant_id, kind=kind, subject=subject, first=first, after=after))
        page = record_columns(c.runtime.audit, c.tenant_id, columns, kind=kind, subject=subject,
                              first=first, after=after)
        return AuditRecordConnection.of(page, RECORD_ROWS.builder(columns))


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Sign a checkpoint of one lane's head now (the one already "
                                     "taken at that record, if any): `chain`, one of the "
                                     "tenant's lanes (default: lane 0, the tenant id); another "
                                     "is AUDIT_CHAIN_UNKNOWN. Refused with AUDIT_CHAIN_BROKEN "
                                     "if the lane does not verify since its last checkpoint.")
    def create_audit_checkpoint(self, info: Info, chain: str | None = None) -> AuditCheckpoint:
        c = ctx(info)
        c.require("audit", "write")
        return AuditCheckpoint.of(c.runtime.audit.create_checkpoint(
            c.tenant_id, chain=chain, secrets=c.runtime.secrets))

    @strawberry.mutation(description="Sign a checkpoint of the head of every lane with records, "
                                     "lane 0 first, all or none: AUDIT_CHAIN_BROKEN (naming the "
                                     "lane) if one does not verify since its last checkpoint.")
    def create_audit_checkpoints(self, info: Info) -> list[AuditCheckpoint]:
        c = ctx(info)
        c.require("audit", "write")
        return [AuditCheckpoint.of(taken) for taken in c.runtime.audit.create_checkpoints(
            c.tenant_id, secrets=c.runtime.secrets)]
