"""A tenant's own market data files, uploaded through the API (`putMarketDataFile`).

A file is read whole by the file source (plugins/builtin/file_source.py: its layout, its
checks) before anything is stored: a file that breaks the layout answers
MARKETDATA_FILE_INVALID naming its row, column and the layout's own code, and nothing is
written. So is a file that would make the tenant's set unreadable as a whole (an instrument's
rows that disagree with another file's). The bytes go to the database, with an audit record in
the same transaction, so every replica and every job worker serves the same data.

Serving: each process writes a tenant's files into a private folder of its own and reads them
with one file source, again when the set changes (checked at most every `RECHECK_S`). They
serve that tenant only, before any other source of the same instrument (its real data wins).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete, select

from gateway.audit import AuditEntry, AuditTrail
from gateway.db import Database
from gateway.errors import Conflict, InvalidInput, NotFound
from gateway.marketdata.models import TenantDataFile
from gateway.marketdata.service import OWN_FILES
from plugins.builtin.file_source import FileSource
from plugins.sdk import MarketDataSource, VenueDirectory

log = logging.getLogger(__name__)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}\.(csv|parquet)$")
MAX_BYTES = 20 << 20
MAX_FILES = 50
RECHECK_S = 2.0


class FileInvalid(InvalidInput):
    code = "MARKETDATA_FILE_INVALID"


@dataclass(frozen=True)
class StoredFile:
    name: str
    sha256: str
    size: int
    instruments: int
    bars: int
    created_at: datetime
    created_by: str | None


def _stored(row: TenantDataFile) -> StoredFile:
    return StoredFile(row.name, row.sha256, row.size, row.instruments, row.bars, row.created_at,
                      row.created_by)


class TenantUploads:
    def __init__(self, db: Database, audit: AuditTrail, venues: VenueDirectory | None,
                 adjust: bool = False) -> None:
        self.db = db
        self.audit = audit
        self.venues = venues
        self.adjust = adjust
        self._root: Path | None = None
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}  # one load of a tenant's folder at a time
        # tenant -> (its files' (name, sha256), when checked, what it serves)
        self._served: dict[str, tuple[tuple[tuple[str, str], ...], float,
                                      tuple[tuple[str, MarketDataSource], ...]]] = {}

    # -- managing -------------------------------------------------------------------------------

    def list(self, tenant_id: str) -> list[StoredFile]:
        with self.db.tenant_session(tenant_id) as session:
            rows = session.exec(select(TenantDataFile).order_by(col(TenantDataFile.name))).all()
            return [_stored(r) for r in rows]

    def put(self, tenant_id: str, user_id: str | None, name: str, content: bytes) -> StoredFile:
        """Store `content` as the tenant's file `name` (replacing one of that name), after the
        file source has read it whole, alone and with the tenant's other files."""
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise InvalidInput("a file name is letters, digits, '.', '_' or '-', ending .csv or .parquet",
                               code="MARKETDATA_FILE_NAME_INVALID", details={"name": str(name)[:100]})
        if not content:
            raise FileInvalid("the file is empty", details={"name": name})
        if len(content) > MAX_BYTES:
            raise FileInvalid(f"a file is at most {MAX_BYTES >> 20} MB", details={"name": name,
                                                                                   "size": len(content)})
        with self.db.tenant_session(tenant_id) as session:
            others = {r.name: r.content for r in session.exec(select(TenantDataFile)) if r.name != name}
        if len(others) >= MAX_FILES:
            raise FileInvalid(f"a tenant keeps at most {MAX_FILES} files: delete one first",
                              details={"name": name})
        alone = self._read({name: content}, name)
        if others:
            self._read({**others, name: content}, name)
        digest = hashlib.sha256(content).hexdigest()
        row = TenantDataFile(tenant_id=tenant_id, name=name, sha256=digest, size=len(content),
                             instruments=len(alone.instruments()), bars=alone.bar_count, content=content,
                             created_by=user_id)
        try:
            with self.db.tenant_transaction(tenant_id) as session:
                session.exec(delete(TenantDataFile).where(col(TenantDataFile.name) == name))
                session.add(row)
                self.audit.append(session, tenant_id, [AuditEntry(
                    "marketdata.file_stored", name,
                    {"sha256": digest, "size": len(content), "instruments": row.instruments,
                     "bars": row.bars}, user_id)])
        except IntegrityError:  # another upload of this name committed meanwhile
            raise Conflict("another upload of this file name was stored meanwhile: send it again",
                           code="MARKETDATA_FILE_CONFLICT", details={"name": name}) from None
        self._forget(tenant_id)
        return StoredFile(name, digest, len(content), row.instruments, row.bars, row.created_at, user_id)

    def delete(self, tenant_id: str, user_id: str | None, name: str) -> None:
        with self.db.tenant_transaction(tenant_id) as session:
            found = session.exec(select(TenantDataFile).where(col(TenantDataFile.name) == name)).first()
            if found is None:
                raise NotFound(f"no market data file {name!r}", code="MARKETDATA_FILE_NOT_FOUND",
                               details={"name": str(name)[:100]})
            session.delete(found)
            self.audit.append(session, tenant_id, [AuditEntry(
                "marketdata.file_deleted", name, {"sha256": found.sha256}, user_id)])
        self._forget(tenant_id)

    def _read(self, files: dict[str, bytes], checking: str) -> FileSource:
        with tempfile.TemporaryDirectory(prefix="alphintra-upload-") as folder:
            for file_name, data in files.items():
                (Path(folder) / file_name).write_bytes(data)
            try:
                return FileSource([folder], adjust=self.adjust, venues=self.venues, root=folder)
            except ValueError as exc:
                where = getattr(exc, "file", None)
                details = {"name": checking, "file": Path(where).name if where else None,
                           "row": getattr(exc, "row", None), "column": getattr(exc, "column", None),
                           "problem": getattr(exc, "problem", str(exc))[:500],
                           "layoutCode": getattr(exc, "code", None)}
                raise FileInvalid(f"{details['file'] or checking}: {details['problem']}",
                                  details=details) from None

    # -- serving --------------------------------------------------------------------------------

    def sources(self, tenant_id: str) -> Sequence[tuple[str, MarketDataSource]]:
        now = time.monotonic()
        with self._lock:
            found = self._served.get(tenant_id)
        if found is not None and now - found[1] < RECHECK_S:
            return found[2]
        with self.db.tenant_session(tenant_id) as session:
            stamp = tuple(session.exec(select(TenantDataFile.name, TenantDataFile.sha256)
                                       .order_by(col(TenantDataFile.name))).all())
        if found is not None and found[0] == stamp:
            served = found[2]
        else:
            with self._lock:
                loading = self._loading.setdefault(tenant_id, threading.Lock())
            with loading:
                served = self._load(tenant_id, stamp)
        with self._lock:
            self._served[tenant_id] = (stamp, now, served)
        return served

    def _load(self, tenant_id: str, stamp: tuple[tuple[str, str], ...]
              ) -> tuple[tuple[str, MarketDataSource], ...]:
        if not stamp:
            return ()
        folder = self._folder(tenant_id)
        with self.db.tenant_session(tenant_id) as session:
            rows = session.exec(select(TenantDataFile)).all()
            for path in folder.iterdir():
                path.unlink()
            for row in rows:
                (folder / row.name).write_bytes(row.content)
        try:
            source = FileSource([folder], adjust=self.adjust, venues=self.venues, root=folder,
                                name=f"uploads-{tenant_id[:8]}")
        except (OSError, ValueError) as exc:  # checked at upload: only a changed layout gets here
            log.error("a tenant's uploaded market data files do not load",
                      extra={"tenant_id": tenant_id, "detail": str(exc)[:500]})
            return ()
        return ((OWN_FILES, source),)

    def _folder(self, tenant_id: str) -> Path:
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="alphintra-uploads-"))
                atexit.register(shutil.rmtree, self._root, True)
            folder = self._root / tenant_id
        folder.mkdir(exist_ok=True)
        return folder

    def _forget(self, tenant_id: str) -> None:
        with self._lock:
            self._served.pop(tenant_id, None)
