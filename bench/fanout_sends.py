"""What one fanned-out message costs the gateway, in parts (issue 14, docs/performance.md):

1. the kernel's: N loopback TCP connections on uvloop (as uvicorn runs), one `transport.write`
   of a 600-byte frame to each, then one write of three such frames to each: CPU per socket;
2. the group's Python: a fan-out group (gateway/http/fanout.py) of N members, each on an outlet
   whose transport only counts writes (no system call), fed 1 result at a time and then 3 ready
   together (one write per socket for the three): CPU per delivered message.

    .venv/bin/python bench/fanout_sends.py [--sockets 2000] [--members 10000] [--rounds 3]

Prints the median over the rounds. Needs an open-file limit above 2 x --sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import uvloop
from strawberry.types.execution import ExecutionResult
from websockets.protocol import State

from gateway.http.fanout import Hub, Member, Outlet, group_key

FRAME = b"x" * 600
TRANSITION = {"orderUpdates": {"sequence": 1, "transition": {
    "cursor": "c" * 30, "orderId": "o" * 36, "clientOrderId": "fanout-1-abcdef", "seq": 2,
    "event": "FILL", "statusFrom": "NEW", "statusTo": "FILLED", "cumQty": "1", "leavesQty": "0",
    "lastQty": "1", "lastPx": "100000.5", "at": "2026-12-06T17:00:00Z"}}}


async def kernel_writes(sockets: int, rounds: int) -> tuple[float, float]:
    """CPU µs per socket for one frame, and for three frames in one write."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transports = [(await loop.create_connection(asyncio.Protocol, "127.0.0.1", port))[0]
                  for _ in range(sockets)]
    await asyncio.sleep(0.5)
    one, three = [], []
    for _ in range(rounds):
        for data, into in ((FRAME, one), (FRAME * 3, three)):
            started = time.process_time()
            for transport in transports:
                transport.write(data)
            into.append((time.process_time() - started) / sockets * 1e6)
            await asyncio.sleep(0.3)  # the peers read it
    for transport in transports:
        transport.close()
    server.close()
    return statistics.median(one), statistics.median(three)


class CountingTransport:
    writes = 0

    def write(self, data: bytes) -> None:
        CountingTransport.writes += 1

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass


def _connection() -> Any:
    """What `Outlet.write` reads of uvicorn's websockets-sansio protocol: open, no extension."""
    writable = asyncio.Event()
    writable.set()
    conn = type("Connection", (), {})()
    conn.conn = type("ServerProtocol", (), {"extensions": [], "state": State.OPEN})()
    conn.close_sent, conn.handshake_complete, conn.initial_response = False, True, None
    conn.writable = writable
    return conn


async def group_python(members: int, together: int, rounds: int) -> float:
    """CPU µs per delivered message with `together` results ready at once."""
    async def send_text(text: str) -> None:
        raise AssertionError("every frame should be written directly")

    connection = _connection()
    hub = Hub(lambda message: "", 0)
    results: asyncio.Queue[ExecutionResult] = asyncio.Queue()

    async def stream() -> Any:
        while True:
            yield await results.get()

    async def opened() -> Any:
        return stream()

    key = group_key(object(), "subscription", {}, None, "tenant", ())
    group = None
    for i in range(members):  # ids differ, as real clients' do: a frame built per member
        outlet = Outlet(send_text, CountingTransport(), 8, lambda: None, connection)
        group = hub.join(key, Member(f"op-{i}", outlet, lambda _: None, lambda _: None), opened)
    assert group is not None and group.task is not None
    await asyncio.sleep(0.01)
    costs = []
    for _ in range(rounds):
        CountingTransport.writes = 0
        started = time.process_time()
        for _ in range(together):
            results.put_nowait(ExecutionResult(TRANSITION, None))
        while CountingTransport.writes < members:
            await asyncio.sleep(0)
        costs.append((time.process_time() - started) / (members * together) * 1e6)
        await asyncio.sleep(0.01)
    group.task.cancel()
    return statistics.median(costs)


async def main(args: argparse.Namespace) -> None:
    one, three = await kernel_writes(args.sockets, args.rounds)
    print(f"kernel, {args.sockets} loopback sockets: one 600-byte frame {one:.1f} µs CPU a write; "
          f"three frames in one write {three:.1f} µs")
    for together in (1, 3):
        cost = await group_python(args.members, together, args.rounds)
        print(f"group of {args.members} members, {together} result(s) ready together: "
              f"{cost:.2f} µs CPU per delivered message (writes not counted)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    uvloop.run(main(parser.parse_args()))
