"""Compliance decision rows stored compact: the same information in a third of the bytes
(issue 14).

A decision's record (`Decision.record()`, with the order's id) is about 950 bytes of JSON, and
most of it is written elsewhere already or again for every order:
- eight keys repeat the row's own columns (client_order_id, tenant_id, account, passed,
  jurisdictions, decided_at, elapsed_ns, order_id);
- the per-rule timings name every (jurisdiction, rule) an order was judged under, the same
  nineteen pairs for every order judged by the same packs.

`compact` leaves out each key whose value the row's column holds (equal, and of the same JSON
type, as the record wrote it), and puts the timings' (jurisdiction, rule) list once per tenant
into `compliance_rule_set`, named by its digest; the record keeps the digest (`RULE_SET`) and
the nanoseconds (`RULE_NS`), and the row says it is compact (`record_compact`). `expand` gives
the record back exactly: the same keys in the same order with the same values. A record
`compact` could not give back exactly (keys in another order, a rule not named by text) is
stored whole, as every row before this was, and read as it is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlmodel import col, select

from gateway.db import Database, utcnow
from gateway.trading.models import ComplianceDecisionRow, ComplianceRuleSet

RULE_SET, RULE_NS = "rule_set", "rule_ns"
TIMINGS = "timings_ns"
# A record's keys in the order `Decision.record()` writes them, then the order's id; keys
# outside this list (an amendment's "amend") follow in their own order.
ORDER = ("client_order_id", "tenant_id", "account", "symbol", "mic", "isin", "side", "quantity",
         "price", "client_domicile", "passed", "jurisdictions", "plugins", "denials", TIMINGS,
         "decided_at", "elapsed_ns", "order_id")
_KNOWN = frozenset(ORDER)
_RULE_SETS = ComplianceRuleSet.__table__  # type: ignore[attr-defined]
_CACHE_MAX = 4096

RuleSet = tuple[str, list[list[str]]]  # (id, [[jurisdiction, rule], ...])


def _columns(row: Mapping[str, Any]) -> dict[str, Any]:
    """What each column-held key of a record says, as the record writes it."""
    decided = row["decided_at"]
    return {"client_order_id": row["client_order_id"], "tenant_id": row["tenant_id"],
            "account": row["account"], "passed": row["passed"],
            "jurisdictions": list(row["jurisdictions"]),
            "decided_at": None if decided is None else decided.astimezone(UTC).isoformat(),
            "elapsed_ns": row["elapsed_ns"], "order_id": row["order_id"]}


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON: `True == 1` in Python, not in a record."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _timed(timings: Any) -> bool:
    """[[jurisdiction, rule, nanoseconds], ...] with text names and integer times."""
    return isinstance(timings, list) and all(
        type(t) is list and len(t) == 3 and type(t[0]) is str and type(t[1]) is str
        and type(t[2]) is int for t in timings)


def rule_set_id(rules: Sequence[Sequence[str]]) -> str:
    """The digest naming a (jurisdiction, rule) list: 128 bits of SHA-256 over its JSON."""
    text = json.dumps(rules, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:32]


class DecisionRecords:
    """Compacts records for writing and expands rows read back. Rule sets are immutable, so
    the digests computed and the sets read are kept in process (bounded): a cache only, never
    what a read depends on."""

    def __init__(self) -> None:
        self._ids: dict[tuple[tuple[str, str], ...], str] = {}
        self._rules: dict[tuple[str, str], list[list[str]]] = {}

    def compact(self, row: Mapping[str, Any], record: Mapping[str, Any]
                ) -> tuple[dict[str, Any], RuleSet | None]:
        """The record to store for `row` (a decision row's column values) and the rule set it
        names, which must be stored with it (`store_rule_sets`); or the record whole and None
        when it would not come back exactly. The row's `record_compact` is whether a rule set
        came back."""
        timings = record.get(TIMINGS)
        keys = list(record)
        if (RULE_SET in record or RULE_NS in record or not _timed(timings)
                or keys != [k for k in ORDER if k in record] + [k for k in keys if k not in _KNOWN]):
            return dict(record), None
        held = _columns(row)
        if any(key not in record for key in held):
            return dict(record), None  # expand would add the key the record never had
        pairs = tuple((t[0], t[1]) for t in timings)
        rules_id = self._ids.get(pairs)  # text only (_timed): equal keys are equal lists
        if rules_id is None:
            rules_id = rule_set_id([list(p) for p in pairs])
            if len(self._ids) >= _CACHE_MAX:
                self._ids.clear()
            self._ids[pairs] = rules_id
        stored: dict[str, Any] = {}
        for key, value in record.items():
            if key == TIMINGS:
                stored[RULE_SET] = rules_id
                stored[RULE_NS] = [t[2] for t in timings]
            elif key not in held or not _same(held[key], value):
                stored[key] = value
        return stored, (rules_id, [list(p) for p in pairs])

    def store_rule_sets(self, session: Session, tenant_id: str,
                        rule_sets: Iterable[RuleSet | None]) -> None:
        """Insert the rule sets the compact records name (those already there are kept), in
        the transaction that writes the records."""
        values = {found[0]: found[1] for found in rule_sets if found is not None}
        if not values:
            return
        rows = [{"tenant_id": tenant_id, "id": rules_id, "rules": rules, "created_at": utcnow()}
                for rules_id, rules in sorted(values.items())]
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        session.execute(insert(_RULE_SETS).values(rows).on_conflict_do_nothing())

    def expand(self, db: Database, rows: Sequence[ComplianceDecisionRow]
               ) -> list[dict[str, Any]]:
        """Each row's record as `Decision.record()` wrote it; rule sets not in the cache are
        read in each row's own tenant's session."""
        wanted = {(r.tenant_id, r.record[RULE_SET]) for r in rows if r.record_compact}
        found = {key: self._rules[key] for key in wanted if key in self._rules}
        by_tenant: dict[str, list[str]] = {}
        for tenant_id, rules_id in sorted(wanted - found.keys()):
            by_tenant.setdefault(tenant_id, []).append(rules_id)
        for tenant_id, ids in by_tenant.items():
            with db.tenant_session(tenant_id) as session:
                for rule_set in session.exec(select(ComplianceRuleSet).where(
                        col(ComplianceRuleSet.id).in_(ids))):
                    found[(tenant_id, rule_set.id)] = rule_set.rules
        if len(self._rules) + len(found) > _CACHE_MAX:
            self._rules.clear()
        self._rules.update(found)
        return [self._expanded(r, found) for r in rows]

    @staticmethod
    def _expanded(row: ComplianceDecisionRow, found: Mapping[tuple[str, str], list[list[str]]]
                  ) -> dict[str, Any]:
        stored = row.record
        if not row.record_compact:
            return dict(stored)
        rules = found.get((row.tenant_id, stored[RULE_SET]))
        if rules is None or len(rules) != len(stored[RULE_NS]):
            raise LookupError(f"compliance decision {row.id}: its rule set "
                              f"{stored[RULE_SET]} is missing")
        held = _columns({"client_order_id": row.client_order_id, "tenant_id": row.tenant_id,
                         "account": row.account, "passed": row.passed,
                         "jurisdictions": row.jurisdictions, "decided_at": row.decided_at,
                         "elapsed_ns": row.elapsed_ns, "order_id": row.order_id})
        record: dict[str, Any] = {}
        for key in ORDER:
            if key == TIMINGS:
                record[TIMINGS] = [[j, rule, ns] for (j, rule), ns in zip(rules, stored[RULE_NS],
                                                                          strict=True)]
            elif key in stored:
                record[key] = stored[key]
            elif key in held:
                record[key] = held[key]
        record.update((k, v) for k, v in stored.items()
                      if k not in _KNOWN and k not in (RULE_SET, RULE_NS))
        return record
