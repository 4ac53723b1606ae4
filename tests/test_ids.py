"""Random ids from kernel randomness read in blocks (gateway/tenancy/ids.py): the same form as
`str(uuid.uuid4())`, never the same bytes twice across threads or across a fork."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from gateway.tenancy import ids
from gateway.tenancy.models import new_id


def test_ids_are_random_version_4_uuids_in_canonical_text() -> None:
    made = [new_id() for _ in range(1000)]  # spans several blocks
    assert len(set(made)) == len(made)
    for text in made:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_the_bytes_come_from_os_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []

    def urandom(n: int) -> bytes:
        reads.append(n)
        return bytes(range(256)) * (n // 256)

    monkeypatch.setattr(os, "urandom", urandom)
    monkeypatch.setattr(ids, "_POOL", ids._Pool())
    first, second = ids.uuid4_text(), ids.uuid4_text()
    assert reads == [ids._BLOCK]  # one read serves both
    assert uuid.UUID(first).bytes[9:] == bytes(range(9, 16))
    assert uuid.UUID(second).bytes[9:] == bytes(range(25, 32))


class _Yielding(bytes):
    """A block whose length, read inside `take`, lets other threads run (sleep releases the
    interpreter lock): without the pool's lock two threads would read the same position."""

    def __len__(self) -> int:
        time.sleep(0.0001)
        return super().__len__()


def test_threads_never_share_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.urandom
    monkeypatch.setattr(os, "urandom", lambda n: _Yielding(real(n)))
    pool = ids._Pool()
    taken: list[list[bytes]] = [[] for _ in range(4)]

    def take(into: list[bytes]) -> None:
        for _ in range(500):
            into.append(pool.take())

    threads = [threading.Thread(target=take, args=(t,)) for t in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [b for t in taken for b in t]
    assert len(every) == 2000 and len(set(every)) == 2000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_hands_out_its_parents_bytes() -> None:
    pool = ids._Pool()
    pool.take()  # the parent now holds a block with 255 ids to come
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next five takes, to the parent
        try:
            os.close(read_end)
            os.write(write_end, b"".join(pool.take() for _ in range(5)))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    parent = b"".join(pool.take() for _ in range(5))
    assert len(child) == 80
    assert {child[i:i + 16] for i in range(0, 80, 16)}.isdisjoint(
        parent[i:i + 16] for i in range(0, 80, 16))
