"""One daemon thread that several owners share (app lifespans, a worker process): the first
`start` starts it, the last `stop` stops and joins it."""

from __future__ import annotations

import threading
from collections.abc import Callable


class SharedThread:
    def __init__(self, name: str, target: Callable[[], None],
                 wake: Callable[[], None] = lambda: None) -> None:
        self.name = name
        self._target = target
        self._wake = wake  # interrupts the target's wait, so a stop is seen at once
        self.stopping = threading.Event()  # the target loops until this is set
        self._thread: threading.Thread | None = None
        self._owners = 0
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        with self._lock:
            self._owners += 1
            if self._thread is not None:
                return
            self.stopping.clear()
            self._thread = threading.Thread(target=self._target, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, *, force: bool = False) -> bool:
        """One owner gone (all with `force`); True when that stopped the thread."""
        with self._lock:
            self._owners = 0 if force else max(self._owners - 1, 0)
            if self._owners or self._thread is None:
                return False
            thread, self._thread = self._thread, None
        self.stopping.set()
        self._wake()
        thread.join(timeout=10)
        return True
