"""The served chain's key-value store on disk: py-evm's database, written through to an
append-only log and read back into memory at start.

py-evm keeps every block, receipt and state-trie node in one key-value store; persisting that
store is persisting the chain exactly (same blocks, hashes, balances, contracts and nonces),
with no replay. Writes collect in memory until `commit`, which appends them as one frame
(length, CRC-32, records) and fsyncs: the chain process commits once per JSON-RPC request, so
each request is on disk whole or not at all. Loading stops at the first torn or corrupt frame
(a crash mid-write) and cuts the file there. A log mostly made of overwritten values is
rewritten as one snapshot frame when opened (write to a temporary file, fsync, rename).

File layout: the 8-byte magic, then frames `>II` (payload length, CRC-32 of the payload) and
the payload, a sequence of records: `S` key-length key value-length value, or `D` key-length
key (lengths `>I`).
"""

from __future__ import annotations

import fcntl
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from eth.db.backends.base import BaseDB

MAGIC = b"ALPCHN01"
_FRAME = struct.Struct(">II")
_LEN = struct.Struct(">I")
_SET, _DEL = b"S", b"D"
# Rewrite the log when it is this many times the live data (and at least this large).
COMPACT_RATIO = 2
COMPACT_MIN_BYTES = 8 << 20


class ChainStoreCorrupt(RuntimeError):
    """The file is not a chain log (wrong magic): refuse rather than overwrite it."""


class ChainStoreBusy(RuntimeError):
    """Another process has the state open: two writers would fork the chain and overwrite
    each other's frames."""


class LogDB(BaseDB):
    """A dict in memory, its changes appended to `path` on `commit`."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self._fsync = fsync
        self._kv: dict[bytes, bytes] = {}
        self._pending: list[bytes] = []
        self.torn_bytes = 0  # cut from the end at load (a frame a crash left half-written)
        self._lock = self._take_lock()
        try:
            self._file = self._open()
        except BaseException:
            self._lock.close()
            raise

    # ---- BaseDB ----
    def __getitem__(self, key: bytes) -> bytes:
        return self._kv[key]

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._kv[key] = value
        self._pending.append(_SET + _LEN.pack(len(key)) + key + _LEN.pack(len(value)) + value)

    def __delitem__(self, key: bytes) -> None:
        del self._kv[key]
        self._pending.append(_DEL + _LEN.pack(len(key)) + key)

    def _exists(self, key: bytes) -> bool:
        return key in self._kv

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._kv)

    def __len__(self) -> int:
        return len(self._kv)

    # ---- persistence ----
    @property
    def empty(self) -> bool:
        return not self._kv

    def commit(self) -> None:
        """Append the changes since the last commit as one frame, durably."""
        if not self._pending:
            return
        payload = b"".join(self._pending)
        self._pending.clear()
        self._file.write(_FRAME.pack(len(payload), zlib.crc32(payload)) + payload)
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self.commit()
        self._file.close()
        self._lock.close()  # releases the flock

    def _take_lock(self) -> BinaryIO:
        # A lock file beside the state, not the state itself: compaction replaces the state's
        # inode, and a lock on the old one would let a second process in.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.with_name(self.path.name + ".lock").open("a+b")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ChainStoreBusy(f"{self.path} is in use by another chain process") from None
        return handle

    def _open(self) -> BinaryIO:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists() or self.path.stat().st_size == 0:
            return self._fresh(self.path)
        data = self.path.read_bytes()
        if not data.startswith(MAGIC):
            raise ChainStoreCorrupt(f"{self.path} is not a chain state file")
        good, live = self._load(data), sum(len(k) + len(v) for k, v in self._kv.items())
        self.torn_bytes = len(data) - good
        if good > COMPACT_MIN_BYTES and good > COMPACT_RATIO * live:
            return self._compact()
        handle = self.path.open("r+b")
        handle.truncate(good)
        handle.seek(good)
        return handle

    def _load(self, data: bytes) -> int:
        """Apply every whole frame; answer the offset after the last good one."""
        offset = len(MAGIC)
        while offset + _FRAME.size <= len(data):
            length, crc = _FRAME.unpack_from(data, offset)
            start, end = offset + _FRAME.size, offset + _FRAME.size + length
            if end > len(data) or zlib.crc32(data[start:end]) != crc:
                break
            self._apply(memoryview(data)[start:end])
            offset = end
        return offset

    def _apply(self, payload: memoryview) -> None:
        at = 0
        while at < len(payload):
            op = bytes(payload[at:at + 1])
            (klen,) = _LEN.unpack_from(payload, at + 1)
            key = bytes(payload[at + 5:at + 5 + klen])
            at += 5 + klen
            if op == _SET:
                (vlen,) = _LEN.unpack_from(payload, at)
                self._kv[key] = bytes(payload[at + 4:at + 4 + vlen])
                at += 4 + vlen
            else:
                self._kv.pop(key, None)

    def _fresh(self, path: Path) -> BinaryIO:
        handle = path.open("wb")
        handle.write(MAGIC)
        handle.flush()
        return handle

    def _compact(self) -> BinaryIO:
        temporary = self.path.with_name(self.path.name + ".compact")
        with temporary.open("wb") as out:
            out.write(MAGIC)
            payload = b"".join(_SET + _LEN.pack(len(k)) + k + _LEN.pack(len(v)) + v
                               for k, v in self._kv.items())
            out.write(_FRAME.pack(len(payload), zlib.crc32(payload)) + payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)
        handle = self.path.open("r+b")
        handle.seek(0, os.SEEK_END)
        return handle
