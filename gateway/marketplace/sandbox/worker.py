"""One worker process and the RPC to it (plugins/wire.py frames over a socketpair).

`Worker.spawn` starts the process through launch.prepare (fresh fork+exec of a command line:
the worker never holds the gateway's memory), sends `init` (the tenant's context of the
plugin, secrets included, only over the socket) and waits for the import under a deadline.
A reader thread takes every frame the worker sends: replies complete their call's future,
stream items go to their subscription's queue, and the worker's own questions (venue facts,
egress, log lines) are answered on a small shared pool. A call that passes its deadline kills
the worker (its other calls fail with it); the supervisor decides about restarting.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from gateway.marketplace.sandbox.launch import Launch
from plugins import wire

log = logging.getLogger(__name__)
# The worker's questions to the gateway: answered off the reader thread.
_ASKS = ThreadPoolExecutor(4, thread_name_prefix="plugin-asks")


class WorkerGone(Exception):
    """The worker exited, was killed or broke the protocol. `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CallTimedOut(Exception):
    pass


class RemoteError(Exception):
    """The plugin raised; `payload` is wire.error_payload of what it raised."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(str(payload.get("message", "")))
        self.payload = payload

    @property
    def type_name(self) -> str:
        return str(self.payload.get("type", "Exception"))


Answerer = Callable[[str, dict[str, Any]], Any]  # (method, args) -> result for a worker's question


@dataclass
class _Stream:
    queue: asyncio.Queue[Any]
    loop: asyncio.AbstractEventLoop


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    sock: socket.socket
    launch: Launch
    answer: Answerer
    started_at: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    layers: list[str] = field(default_factory=list)
    implemented: list[str] = field(default_factory=list)
    gone: str | None = None
    counted: bool = False  # its death was counted towards quarantine
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _pending: dict[int, Future[Any]] = field(default_factory=dict)
    _streams: dict[int, _Stream] = field(default_factory=dict)
    _write: threading.Lock = field(default_factory=threading.Lock)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def spawn(cls, name: str, launch: Launch, child: socket.socket, parent: socket.socket,
              answer: Answerer) -> Worker:
        try:
            process = subprocess.Popen(launch.args, env=launch.env, **launch.popen_kwargs())
        finally:
            child.close()
        worker = cls(name=name, process=process, sock=parent, launch=launch, answer=answer)
        threading.Thread(target=worker._read, name=f"plugin-read-{name}"[:40], daemon=True).start()
        return worker

    # Calls.
    def call(self, method: str, args: dict[str, Any], timeout_s: float) -> Any:
        future = self._send(method, args)
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout:
            self.kill(f"no answer to {method} within {timeout_s:g} s")
            raise CallTimedOut(f"no answer within {timeout_s:g} s") from None

    async def acall(self, method: str, args: dict[str, Any], timeout_s: float) -> Any:
        future = self._send(method, args)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
        except TimeoutError:
            self.kill(f"no answer to {method} within {timeout_s:g} s")
            raise CallTimedOut(f"no answer within {timeout_s:g} s") from None

    async def stream(self, method: str, args: dict[str, Any]) -> AsyncIterator[Any]:
        """Items of a worker-side stream until it ends; closing the iterator cancels it."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1000)
        future = self._send(method, args, stream=_Stream(queue, loop))
        call_id = future.call_id  # type: ignore[attr-defined]
        done = asyncio.wrap_future(future)
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                finished, _ = await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
                if getter in finished:
                    yield getter.result()
                    continue
                getter.cancel()
                while not queue.empty():
                    yield queue.get_nowait()
                done.result()  # raises what ended the stream, if anything
                return
        finally:
            if not done.done():
                self._cancel(call_id)
            self._streams.pop(call_id, None)

    def _send(self, method: str, args: dict[str, Any], stream: _Stream | None = None) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self.gone is not None:
                raise WorkerGone(self.gone)
            call_id = next(self._ids)
            future.call_id = call_id  # type: ignore[attr-defined]
            self._pending[call_id] = future
            if stream is not None:
                self._streams[call_id] = stream
        self.last_used = time.monotonic()
        try:
            self._write_frame({"i": call_id, "m": method, "a": args})
        except (OSError, wire.WireError, TypeError) as exc:
            with self._lock:
                self._pending.pop(call_id, None)
                self._streams.pop(call_id, None)
            if isinstance(exc, OSError):
                self.kill(f"the socket broke: {exc}")
                raise WorkerGone(self.gone or "gone") from None
            raise
        return future

    def _cancel(self, call_id: int) -> None:
        with contextlib.suppress(OSError, wire.WireError):
            self._write_frame({"i": 0, "m": "cancel", "a": {"id": call_id}})

    def _write_frame(self, message: dict[str, Any]) -> None:
        data = wire.frame(message)
        with self._write:
            self.sock.sendall(data)

    # The reader thread.
    def _read(self) -> None:
        reason = "the worker exited"
        try:
            while True:
                message = wire.read_frame(self.sock)
                if message is None:
                    break
                if "w" in message:
                    self._asked(message)
                else:
                    self._answered(message)
        except (wire.WireError, ValueError, TypeError, KeyError) as exc:
            reason = f"the worker broke the protocol: {exc}"
        except OSError:
            pass
        self.kill(reason)

    def _answered(self, message: dict[str, Any]) -> None:
        call_id = int(message["i"])
        if "s" in message:
            stream = self._streams.get(call_id)
            if stream is not None:
                stream.loop.call_soon_threadsafe(_put, stream.queue, message["s"])
            return
        with self._lock:
            future = self._pending.pop(call_id, None)
        if future is None or future.done():
            return
        if "e" in message:
            future.set_exception(RemoteError(dict(message["e"] or {})))
        else:
            future.set_result(message.get("r"))

    def _asked(self, message: dict[str, Any]) -> None:
        ask_id, method, args = int(message["w"]), str(message.get("m")), message.get("a") or {}
        if ask_id == 0:  # a log line: no answer
            log.log(int(args.get("level", logging.INFO)), "plugin: %s", str(args.get("message", ""))[:2000],
                    extra={"worker": self.name})
            return

        def run() -> None:
            try:
                reply: dict[str, Any] = {"w": ask_id, "r": self.answer(method, args)}
            except Exception as exc:
                reply = {"w": ask_id, "e": {"type": type(exc).__name__, "message": str(exc)[:500]}}
            with contextlib.suppress(OSError, wire.WireError, TypeError):
                self._write_frame(reply)

        _ASKS.submit(run)

    # Ending.
    def kill(self, reason: str) -> None:
        with self._lock:
            if self.gone is not None:
                return
            self.gone = reason
            pending, self._pending = list(self._pending.values()), {}
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.sock.close()
        for future in pending:
            if not future.done():
                future.set_exception(WorkerGone(reason))
        threading.Thread(target=self._reap, name="plugin-reap", daemon=True).start()

    def _reap(self) -> None:
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.error("a plugin worker did not exit after SIGKILL", extra={"worker": self.name})
        if self.launch.cgroup is not None:
            self.launch.cgroup.remove()

    def oom_killed(self) -> bool:
        return self.launch.cgroup is not None and self.launch.cgroup.oom_killed()

    @property
    def alive(self) -> bool:
        return self.gone is None


def _put(queue: asyncio.Queue[Any], item: Any) -> None:
    try:
        queue.put_nowait(item)
    except asyncio.QueueFull:  # a consumer this slow loses items rather than the worker's memory
        log.warning("a plugin subscription consumer is too slow; an item was dropped")
