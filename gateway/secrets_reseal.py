"""`alphintra secrets reseal`: every sealed value moved to the current secret key.

The second half of a key rotation (docs/operations.md, "Rotate keys"): with the new key as
`secret_key` and the old one in `secret_keys_previous`, each value not yet sealed with the
current key is opened (with whichever key it names) and sealed again under the same context.
Each row is updated only if its value is still the one read (a concurrent reconfiguration wins
and is already current), a batch per transaction; running it again finds nothing to do. A
value that opens with no configured key is counted and named (table and row id), never
overwritten.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update

from gateway.audit.checkpoints import KEY_CONTEXT
from gateway.audit.models import AuditSigningKey
from gateway.db import Database
from gateway.defi.keys import key_context
from gateway.defi.models import DefiKey
from gateway.marketplace.install import secret_context
from gateway.marketplace.install_models import PluginInstallation
from gateway.secrets import SecretBox, SecretUnreadable

log = logging.getLogger(__name__)
BATCH = 200


@dataclass(frozen=True)
class SealedColumn:
    model: Any
    column: str
    context: Callable[[Any], str]  # the row's context, as its service seals it


SEALED = (
    SealedColumn(PluginInstallation, "sealed_secrets",
                 lambda r: secret_context(r.tenant_id, r.plugin_id)),
    SealedColumn(PluginInstallation, "previous_sealed_secrets",
                 lambda r: secret_context(r.tenant_id, r.plugin_id)),
    SealedColumn(DefiKey, "sealed_key", lambda r: key_context(r.tenant_id, r.chain_id)),
    SealedColumn(AuditSigningKey, "sealed_key", lambda r: KEY_CONTEXT),
)


@dataclass
class ResealReport:
    resealed: int = 0
    current: int = 0  # already sealed with the current key
    changed: int = 0  # rewritten by someone else meanwhile (and so sealed with the current key)
    unreadable: list[str] = field(default_factory=list)  # "table:id"


def reseal(db: Database, box: SecretBox) -> ResealReport:
    report = ResealReport()
    for sealed in SEALED:
        for batch in _batches(db, sealed):
            _reseal_batch(db, box, sealed, batch, report)
    log.info("secrets resealed", extra={"resealed": report.resealed, "current": report.current,
                                        "unreadable": len(report.unreadable)})
    return report


def _batches(db: Database, sealed: SealedColumn) -> Iterator[list[Any]]:
    table = sealed.model.__table__
    column = table.c[sealed.column]
    after = ""
    while True:
        with db.system_session() as session:
            rows = list(session.execute(
                select(table).where(column.is_not(None), table.c.id > after)
                .order_by(table.c.id).limit(BATCH)).all())
        if not rows:
            return
        after = rows[-1].id
        yield rows


def _reseal_batch(db: Database, box: SecretBox, sealed: SealedColumn, rows: list[Any],
                  report: ResealReport) -> None:
    table = sealed.model.__table__
    column = table.c[sealed.column]
    with db.system_transaction() as session:
        for row in rows:
            old = getattr(row, sealed.column)
            if box.is_current(old):
                report.current += 1
                continue
            context = sealed.context(row)
            try:
                plain = box.open(old, context)
            except SecretUnreadable:
                report.unreadable.append(f"{table.name}.{sealed.column}:{row.id}")
                continue
            done = session.execute(update(table).where(table.c.id == row.id, column == old)
                                   .values({sealed.column: box.seal(plain, context)}))
            if done.rowcount == 1:
                report.resealed += 1
            else:
                report.changed += 1
