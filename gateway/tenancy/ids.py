"""Random (version 4) UUIDs as text, from kernel randomness read in blocks.

`uuid.uuid4()` makes an `os.urandom(16)` syscall per id and builds a `UUID` object; order intake
takes about five ids an order. Here 4 KiB of `os.urandom` serve 256 ids: the same
cryptographic randomness (ids must not be guessable), a syscall per 256 ids. The block is taken
under a lock (request threads share it), and a forked child drops its parent's block so that
the two processes never hand out the same bytes.
"""

from __future__ import annotations

import os
import threading

_BLOCK = 4096  # bytes read at once: 256 ids


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._block = b""
        self._pos = 0
        self._fork_hook = False

    def take(self) -> bytes:
        """16 bytes no other caller (in this process or a forked one) is given."""
        with self._lock:
            pos = self._pos
            if pos + 16 > len(self._block):
                if not self._fork_hook:
                    # Registered on first use, not at import (no import-time side effects).
                    os.register_at_fork(after_in_child=self._forget)
                    self._fork_hook = True
                self._block = os.urandom(_BLOCK)
                pos = 0
            self._pos = pos + 16
            return self._block[pos:pos + 16]

    def _forget(self) -> None:
        # In the child: the parent's unread bytes are the parent's ids to come. A fresh lock
        # too, as a thread of the parent may have held this one at the fork.
        self._lock = threading.Lock()
        self._block = b""
        self._pos = 0


_POOL = _Pool()


def uuid4_text() -> str:
    """A random UUID in its canonical text form, as `str(uuid.uuid4())` writes it."""
    raw = bytearray(_POOL.take())
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
