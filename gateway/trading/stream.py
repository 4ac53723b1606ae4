"""The order stream: every transition of a tenant's orders in one order, for drop copies.

Each `order_event` row gets `stream_seq`, its position in its tenant's stream (1, 2, 3 …, no
gaps), handed out from `order_stream_head` in the transaction that writes the rows. The head
row's lock is held to commit, so a tenant's positions become visible in order: once position n
is visible, every position below it is too. That is what makes a position a cursor a drop copy
can trust: the transitions after cursor c, read at any time, are exactly the ones it has not
seen, in order, whatever the bus lost or delivered late. Within one transaction positions follow
the order the reports were applied in (the venue's), so a fill's position is also its place in
execution order (`execution.stream_seq`).

Writers: claims.py (each order's first event) and reports.py (every execution report). Both
take the head last: after their order, locate and position writes and after their audit
appends, the one order every writer takes these locks in (every audit appender appends after
its row writes). A tenant's writers then take turns only on the numbering, the event and
execution rows and the commit: the audit records, hashed and written in their own lanes
(gateway/audit/lanes.py), do not wait on each other.

After commit each changed order's transitions of that transaction go out on the bus
(`orders.<tenant>`, `wire` form, one message per order); `orderUpdates` delivers by position,
reads from the store any gap the bus left, and drops what it has already sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from gateway.audit.chain import plain_decimal
from gateway.db import Database
from gateway.errors import InvalidInput
from gateway.pagination import Page, check_page_size
from gateway.trading.models import Order, OrderEvent, OrderStreamHead

HEAD = OrderStreamHead.__table__  # type: ignore[attr-defined]
EVENTS = OrderEvent.__table__  # type: ignore[attr-defined]
ORDERS = Order.__table__  # type: ignore[attr-defined]
REPLAY_CHUNK = 500  # transitions read from the store at a time


class StreamCursorInvalid(InvalidInput):
    code = "ORDER_CURSOR_INVALID"


# -- writing ---------------------------------------------------------------------------------

def take(session: Session, tenant_id: str, count: int) -> int:
    """Reserve `count` positions of the tenant's stream; the first of them. Locks the head row
    until the transaction ends."""
    def advance() -> int | None:
        row = session.execute(update(HEAD).where(HEAD.c.tenant_id == tenant_id)
                              .values(last_seq=HEAD.c.last_seq + count)
                              .returning(HEAD.c.last_seq)).first()
        return None if row is None else int(row[0])

    last = advance()
    if last is None:  # the tenant's first event: make its head (another writer may race us)
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        session.execute(insert(HEAD).values(tenant_id=tenant_id, last_seq=0).on_conflict_do_nothing())
        last = advance()
        assert last is not None
    return last - count + 1


def number(session: Session, events: Sequence[dict[str, Any]]) -> None:
    """Give each event row (a dict about to be inserted) its `stream_seq`, in list order per
    tenant; tenants' heads are taken in one order, so two writers never wait on each other."""
    counts = Counter(e["tenant_id"] for e in events)
    following = {t: take(session, t, counts[t]) for t in sorted(counts)}
    for e in events:
        e["stream_seq"] = following[e["tenant_id"]]
        following[e["tenant_id"]] += 1


# -- the transition, on the bus and out of the store --------------------------------------------

@dataclass(frozen=True)
class Transition:
    """One change of one order, as a drop copy reports it."""

    order_id: str
    client_order_id: str
    account: str
    seq: int  # per order: 1, 2, 3 …
    position: int  # in the tenant's stream: the cursor
    event: str  # states.OrderEvent
    exec_type: str | None  # FIX ExecType; None: the gateway's own step (compliance)
    status_from: str
    status_to: str
    last_qty: Decimal | None
    last_px: Decimal | None
    cum_qty: Decimal
    leaves_qty: Decimal
    avg_px: Decimal | None
    exec_id: str | None
    code: str | None
    text: str
    at: datetime

    @property
    def cursor(self) -> str:
        return str(self.position)


def _text(value: Decimal | None) -> str | None:
    return None if value is None else plain_decimal(value)


def _number(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def wire(event: dict[str, Any], order: dict[str, Any]) -> dict[str, Any]:
    """An event row as JSON for the bus (Decimals as strings, the time in ISO 8601)."""
    return {"order_id": event["order_id"], "client_order_id": order["client_order_id"],
            "account": order["account"], "seq": event["seq"], "position": event["stream_seq"],
            "event": event["event"], "exec_type": event["exec_type"],
            "status_from": event["status_from"], "status_to": event["status_to"],
            "last_qty": _text(event.get("last_qty")), "last_px": _text(event.get("last_px")),
            "cum_qty": _text(event["cum_qty"]), "leaves_qty": _text(event["leaves_qty"]),
            "avg_px": _text(event.get("avg_px")), "exec_id": event.get("exec_id"),
            "code": event["code"], "text": event["text"], "at": event["at"].isoformat()}


def from_wire(data: dict[str, Any]) -> Transition:
    return Transition(data["order_id"], data["client_order_id"], data["account"], int(data["seq"]),
                      int(data["position"]), data["event"], data["exec_type"], data["status_from"],
                      data["status_to"], _number(data["last_qty"]), _number(data["last_px"]),
                      Decimal(data["cum_qty"]), Decimal(data["leaves_qty"]),
                      _number(data["avg_px"]), data["exec_id"], data["code"], data["text"],
                      datetime.fromisoformat(data["at"]))


def _of_row(row: Any) -> Transition:
    return Transition(row.order_id, row.client_order_id, row.account, row.seq, row.stream_seq,
                      row.event, row.exec_type, row.status_from, row.status_to, row.last_qty,
                      row.last_px, row.cum_qty, row.leaves_qty, row.avg_px, row.exec_id, row.code,
                      row.text, row.at)


# -- reading ---------------------------------------------------------------------------------

def parse_cursor(cursor: str | None) -> int | None:
    """A cursor (a position, as the API gives it: "0" is the stream's start) as an int."""
    if cursor is None:
        return None
    text = cursor.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise StreamCursorInvalid(f"cursor {cursor!r} is not an order stream cursor: a position "
                                  "this API returned (\"0\": from the start)")
    return int(text)


def head(db: Database, tenant_id: str) -> int:
    """The tenant's last position (0: no order yet)."""
    with db.tenant_session(tenant_id) as session:
        found = session.execute(select(HEAD.c.last_seq).where(HEAD.c.tenant_id == tenant_id)).first()
    return 0 if found is None else int(found[0])


def checked(db: Database, tenant_id: str, cursor: str | None) -> tuple[int | None, int]:
    """(the cursor's position, the stream's head); a cursor beyond the head was never this
    tenant's (another tenant's or environment's): ORDER_CURSOR_INVALID, rather than silently
    skipping what comes before it."""
    after = parse_cursor(cursor)
    last = head(db, tenant_id)
    if after is not None and after > last:
        raise StreamCursorInvalid(f"cursor {cursor!r} is beyond this stream's end",
                                  details={"cursor": cursor, "end": str(last)})
    return after, last


def read(db: Database, tenant_id: str, after: int, *, until: int | None = None,
         accounts: Sequence[str] | None = None, limit: int = REPLAY_CHUNK) -> list[Transition]:
    """Up to `limit` transitions with after < position (<= until), in stream order."""
    e, o = EVENTS.c, ORDERS.c
    stmt = (select(e.order_id, o.client_order_id, o.account, e.seq, e.stream_seq, e.event,
                   e.exec_type, e.status_from, e.status_to, e.last_qty, e.last_px, e.cum_qty,
                   e.leaves_qty, e.avg_px, e.exec_id, e.code, e.text, e.at)
            .join(ORDERS, o.id == e.order_id)
            .where(e.tenant_id == tenant_id, o.tenant_id == tenant_id, e.stream_seq > after))
    if until is not None:
        stmt = stmt.where(e.stream_seq <= until)
    if accounts:
        stmt = stmt.where(o.account.in_(list(accounts)))
    with db.tenant_session(tenant_id) as session:
        rows = session.execute(stmt.order_by(e.stream_seq).limit(limit)).all()
    return [_of_row(r) for r in rows]


@dataclass(frozen=True)
class StreamPage(Page[Transition]):
    """Transitions oldest first; each edge's cursor is its position."""

    def cursor(self, item: Any) -> str:
        return str(item.position)


def page(db: Database, tenant_id: str, *, after: str | None, first: int, max_page_size: int,
         accounts: Sequence[str] | None = None) -> StreamPage:
    """The `orderEvents` query: the transitions after `after` (from the start without one)."""
    check_page_size(first, max_page_size)
    position, _ = checked(db, tenant_id, after)
    rows = read(db, tenant_id, position or 0, accounts=accounts, limit=first + 1)
    return StreamPage(rows[:first], len(rows) > first)


class Follower:
    """One subscriber's place in its tenant's stream: each transition delivered once, in stream
    order. What the bus brings in order goes straight out; a gap (a message lost, or one that
    overtook another between threads) is read from the store, whose positions are committed
    in order (module docstring); what has gone out already is dropped."""

    def __init__(self, db: Database, tenant_id: str, position: int,
                 accounts: Sequence[str] | None = None) -> None:
        self.db = db
        self.tenant_id = tenant_id
        self.position = position
        self.accounts = frozenset(accounts or ())

    def in_order(self, transitions: Sequence[Transition]) -> list[Transition] | None:
        """The transitions not delivered yet, when they follow on from the position with no gap
        (the position moves past them); None when the store must fill a gap first."""
        fresh = sorted((t for t in transitions if t.position > self.position),
                       key=lambda t: t.position)
        for k, t in enumerate(fresh):
            if t.position != self.position + 1 + k:
                return None
        if fresh:
            self.position = fresh[-1].position
        return [t for t in fresh if not self.accounts or t.account in self.accounts]

    def catch_up(self, until: int) -> list[Transition]:
        """The next stored transitions up to position `until`; call again while the position
        is below it."""
        rows = read(self.db, self.tenant_id, self.position, until=until,
                    accounts=sorted(self.accounts) or None, limit=REPLAY_CHUNK)
        self.position = until if len(rows) < REPLAY_CHUNK else rows[-1].position
        return rows
