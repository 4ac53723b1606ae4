"""Subscriptions that fan out (issue 14, gateway/http/fanout.py): identical subscriptions share
one execution and one encoded frame per event, each socket under its own id; different roles,
tenants or variables never share; a late joiner gets its own start; a slow consumer is closed
with 4413 while the others keep receiving; one member leaving does not stop the others, the
last one stops the group."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
import websockets
from starlette.routing import WebSocketRoute
from websockets.frames import Frame, Opcode

from gateway.app import create_app
from gateway.http.fanout import SLOW_CONSUMER, SLOW_CONSUMER_CLOSE_CODE, Hub, Outlet, text_frame
from gateway.jobs.models import Job
from gateway.jobs.runner import job_topic, snapshot
from gateway.runtime import Runtime
from gateway.trading.common import alerts_topic
from tests.support import LiveServer, TransportWS, onboard, user_key, wait_for

ALERTS = "subscription { complianceAlerts { sequence clientOrderId denials } }"
ORDERS = "subscription($a: [String!]) { orderUpdates(accounts: $a) { sequence } }"
JOB_UPDATED = "subscription($id: ID!) { jobUpdated(id: $id) { sequence job { id status } } }"


def _app(runtime: Runtime, **changes: Any) -> Any:
    settings = runtime.settings.with_(embedded_worker="off", **changes)
    return create_app(runtime=Runtime(**{**runtime.__dict__, "settings": settings}))


def _hub(app: Any) -> Hub | None:
    route = next(r for r in app.routes if isinstance(r, WebSocketRoute) and r.path == "/graphql")
    return route.endpoint.fanout


def _executions(runtime: Runtime, topic: str) -> int:
    """Subscriptions to `topic` in this process: one per running execution of a resolver (on
    Redis, `subscribers` counts processes instead)."""
    return runtime.bus._fanout.count(topic)  # type: ignore[attr-defined]  # both buses have one


def _members(hub: Hub) -> int:
    return sum(len(g.members) for g in hub.running)


@pytest.fixture(scope="module")
def shared(runtime):
    app = _app(runtime, websocket_send_queue=4)
    with LiveServer(app) as server:
        yield server, _hub(app)


@pytest.fixture(scope="module")
def unshared(runtime):
    app = _app(runtime, subscription_fanout=False)
    with LiveServer(app) as server:
        yield server, _hub(app)


def _alert(tenant_id: str, n: int, denials: Any = ("R1",)) -> dict[str, Any]:
    return {"tenant_id": tenant_id, "order_id": f"o{n}", "client_order_id": f"c{n}",
            "account": "A", "symbol": "AAPL", "mic": "XNAS", "denials": list(denials),
            "jurisdictions": ["US"], "decided_at": "2026-01-01T00:00:00Z"}


async def _quiet(ws: TransportWS, seconds: float = 0.5) -> list[dict[str, Any]]:
    """Whatever reaches `ws` within `seconds` (nothing expected)."""
    seen = []
    try:
        while True:
            seen.append(json.loads(await asyncio.wait_for(ws.ws.recv(), seconds)))
    except TimeoutError:
        return seen


@pytest.mark.parametrize("mode", ["shared", "unshared"])
def test_identical_subscriptions_share_one_execution(runtime, mode, request):
    server, hub = request.getfixturevalue(mode)
    tenant = onboard(runtime)
    topic = alerts_topic(tenant.id)

    async def scenario():
        sockets = [await TransportWS(server.ws_url, tenant.key).__aenter__() for _ in range(5)]
        try:
            for i, ws in enumerate(sockets):
                await ws.subscribe(f"op-{i}", ALERTS)
            await asyncio.to_thread(wait_for, lambda: runtime.bus.subscribers(topic) >= 1)
            if hub is not None:
                await asyncio.to_thread(wait_for, lambda: _members(hub) == 5)
            else:
                await asyncio.to_thread(wait_for, lambda: _executions(runtime, topic) == 5)
            executions = _executions(runtime, topic)
            for n in range(3):
                runtime.bus.publish(topic, _alert(tenant.id, n))
            frames = [[await ws.next(op_id=f"op-{i}") for _ in range(3)]
                      for i, ws in enumerate(sockets)]
            return executions, frames
        finally:
            for ws in sockets:
                await ws.__aexit__()

    executions, frames = asyncio.run(scenario())
    assert executions == (1 if mode == "shared" else 5)
    for i, got in enumerate(frames):
        assert [f["id"] for f in got] == [f"op-{i}"] * 3
        assert [f["payload"] for f in got] == [f["payload"] for f in frames[0]]
    assert [f["payload"]["data"]["complianceAlerts"]["clientOrderId"] for f in frames[0]] == \
        ["c0", "c1", "c2"]
    assert wait_for(lambda: _executions(runtime, topic) == 0, timeout=10)


def test_roles_tenants_and_variables_never_share(runtime, shared):
    server, hub = shared
    a, b = onboard(runtime), onboard(runtime)
    _, officer = user_key(runtime, a, "compliance_officer")

    async def scenario():
        admin_a = await TransportWS(server.ws_url, a.key).__aenter__()
        officer_a = await TransportWS(server.ws_url, officer).__aenter__()
        admin_b = await TransportWS(server.ws_url, b.key).__aenter__()
        try:
            before = len(hub.running)
            await admin_a.subscribe("1", ALERTS)
            await officer_a.subscribe("1", ALERTS)
            await admin_b.subscribe("1", ALERTS)
            await admin_a.subscribe("o1", ORDERS, {"a": ["X"]})
            await admin_a.subscribe("o2", ORDERS, {"a": ["Y"]})
            await admin_a.subscribe("o3", ORDERS, {"a": ["X"]})  # shares with o1
            await asyncio.to_thread(wait_for, lambda: _members(hub) >= 6)
            groups = len(hub.running) - before
            runtime.bus.publish(alerts_topic(a.id), _alert(a.id, 1))
            got_admin = await admin_a.next(op_id="1")
            got_officer = await officer_a.next(op_id="1")
            leaked = await _quiet(admin_b)
            return groups, got_admin, got_officer, leaked
        finally:
            for ws in (admin_a, officer_a, admin_b):
                await ws.__aexit__()

    groups, got_admin, got_officer, leaked = asyncio.run(scenario())
    assert groups == 5  # alerts: A's admin, A's officer, B's admin; orders: X, Y
    assert got_admin["payload"]["data"]["complianceAlerts"]["clientOrderId"] == "c1"
    assert got_officer["payload"] == got_admin["payload"]
    assert leaked == []  # B's socket never sees A's group's frames


def _queued_job(runtime: Runtime, tenant_id: str, user_id: str) -> Job:
    with runtime.db.tenant_transaction(tenant_id) as session:
        job = Job(kind="diagnostics", params={}, region="americas", created_by=user_id,
                  tenant_id=tenant_id)
        session.add(job)
        session.flush()
        session.refresh(job)
        session.expunge(job)
    return job


def test_late_joiner_gets_its_own_snapshot(runtime, shared):
    server, _ = shared
    tenant = onboard(runtime)
    job = _queued_job(runtime, tenant.id, tenant.admin_id)
    topic = job_topic(job.id)

    async def scenario():
        async with TransportWS(server.ws_url, tenant.key) as first, \
                TransportWS(server.ws_url, tenant.key) as late:
            await first.subscribe("j", JOB_UPDATED, {"id": job.id})
            start = await first.next(op_id="j")
            runtime.bus.publish(topic, {**snapshot(job), "status": "RUNNING"})
            running = await first.next(op_id="j")
            await late.subscribe("j", JOB_UPDATED, {"id": job.id})
            late_start = await late.next(op_id="j")
            await asyncio.to_thread(wait_for, lambda: _executions(runtime, topic) == 2)
            runtime.bus.publish(topic, {**snapshot(job), "status": "SUCCEEDED"})
            ends = [await ws.next(op_id="j") for ws in (first, late)]
            completes = [await ws.next(op_id="j") for ws in (first, late)]
            return start, running, late_start, ends, completes

    start, running, late_start, ends, completes = asyncio.run(scenario())
    assert start["payload"]["data"]["jobUpdated"]["sequence"] is None
    assert running["payload"]["data"]["jobUpdated"]["job"]["status"] == "RUNNING"
    # its own snapshot (the stored state), not the first group's stream joined halfway
    assert late_start["payload"]["data"]["jobUpdated"] == {
        "sequence": None, "job": {"id": job.id, "status": "QUEUED"}}
    assert [e["payload"]["data"]["jobUpdated"]["job"]["status"] for e in ends] == ["SUCCEEDED"] * 2
    assert [c["type"] for c in completes] == ["complete", "complete"]


def test_one_member_leaving_keeps_the_others_and_the_last_stops_the_group(runtime, shared):
    server, hub = shared
    tenant = onboard(runtime)
    topic = alerts_topic(tenant.id)

    async def scenario():
        async with TransportWS(server.ws_url, tenant.key) as one, \
                TransportWS(server.ws_url, tenant.key) as two:
            await one.subscribe("x", ALERTS)
            await two.subscribe("y", ALERTS)
            await two.subscribe("z", ALERTS)  # same socket, same group
            await asyncio.to_thread(wait_for, lambda: _executions(runtime, topic) == 1)
            group = next(g for g in hub.running if g.key[4] == tenant.id)
            await asyncio.to_thread(wait_for, lambda: len(group.members) == 3)
            await one.ws.send(json.dumps({"id": "x", "type": "complete"}))
            await asyncio.to_thread(wait_for, lambda: len(group.members) == 2)
            runtime.bus.publish(topic, _alert(tenant.id, 7))
            got = [await two.next(op_id="y"), await two.next(op_id="z")]
            after_leaving = await _quiet(one)
            await two.ws.send(json.dumps({"id": "y", "type": "complete"}))
            await two.ws.send(json.dumps({"id": "z", "type": "complete"}))
            await asyncio.to_thread(wait_for, lambda: group.task is not None and group.task.done())
            return got, after_leaving, _executions(runtime, topic), group in hub.running

    got, after_leaving, subscribers, still_running = asyncio.run(scenario())
    assert [g["payload"]["data"]["complianceAlerts"]["clientOrderId"] for g in got] == ["c7", "c7"]
    assert after_leaving == []
    assert subscribers == 0 and not still_running  # the last member's leaving ended the execution


def test_slow_consumer_is_closed_and_the_others_keep_receiving(runtime, shared):
    server, hub = shared
    tenant = onboard(runtime)
    topic = alerts_topic(tenant.id)
    big = ["x" * 200] * 40  # ~8 KB a frame: the slow peer's socket buffers fill in ~400
    events = 1000

    async def scenario():
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", int(server.ws_url.split(":")[2].split("/")[0])))
        # max_queue: the client library stops reading from the socket after 2 frames
        slow = await websockets.connect(server.ws_url, sock=raw, max_queue=2,
                                        subprotocols=["graphql-transport-ws"])
        await slow.send(json.dumps({"type": "connection_init",
                                    "payload": {"Authorization": f"Bearer {tenant.key}"}}))
        assert json.loads(await slow.recv())["type"] == "connection_ack"
        await slow.send(json.dumps({"id": "s", "type": "subscribe", "payload": {"query": ALERTS}}))
        async with TransportWS(server.ws_url, tenant.key) as fast:
            await fast.subscribe("f", ALERTS)
            await asyncio.to_thread(wait_for, lambda: _members(hub) >= 2)
            received: list[str] = []

            async def read_fast() -> None:
                while len(received) < events:
                    message = await fast.next(op_id="f")
                    received.append(message["payload"]["data"]["complianceAlerts"]["clientOrderId"])

            reader = asyncio.create_task(read_fast())
            for n in range(events):
                runtime.bus.publish(topic, _alert(tenant.id, n, big))
                while n - len(received) > 8 and not reader.done():  # a few frames behind at most
                    await asyncio.sleep(0.005)
            await asyncio.wait_for(reader, 60)
            # the slow peer reads again: its backlog, then the close with the code
            code = None
            started = time.monotonic()
            try:
                while time.monotonic() - started < 30:
                    await asyncio.wait_for(slow.recv(), 10)
            except websockets.ConnectionClosed as closed:
                code = (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else None
            return received, code

    received, code = asyncio.run(scenario())
    assert received == [f"c{n}" for n in range(events)]  # nothing lost, nothing slowed away
    assert code == (SLOW_CONSUMER_CLOSE_CODE, SLOW_CONSUMER)
    assert wait_for(lambda: _executions(runtime, topic) == 0, timeout=10)


def test_over_the_size_cap_every_member_gets_the_error(runtime):
    app = _app(runtime, max_response_bytes=2_000)
    tenant = onboard(runtime)
    topic = alerts_topic(tenant.id)
    with LiveServer(app) as server:
        hub = _hub(app)

        async def scenario():
            async with TransportWS(server.ws_url, tenant.key) as one, \
                    TransportWS(server.ws_url, tenant.key) as two:
                await one.subscribe("a", ALERTS)
                await two.subscribe("b", ALERTS)
                await asyncio.to_thread(wait_for, lambda: _members(hub) == 2)
                runtime.bus.publish(topic, _alert(tenant.id, 1, ["y" * 3_000]))
                runtime.bus.publish(topic, _alert(tenant.id, 2))
                return ([await one.next(op_id="a"), await one.next(op_id="a")],
                        [await two.next(op_id="b"), await two.next(op_id="b")])

        got_one, got_two = asyncio.run(scenario())
    for got in (got_one, got_two):
        too_large, fine = got
        assert too_large["payload"]["data"] is None
        assert too_large["payload"]["errors"][0]["extensions"]["code"] == "RESPONSE_TOO_LARGE"
        assert fine["payload"]["data"]["complianceAlerts"]["clientOrderId"] == "c2"


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 70_000])
def test_a_prebuilt_frame_is_the_frame_websockets_writes(size):
    """`text_frame` writes what the websockets library would (header and length forms)."""
    payload = ("é" * size).encode()[:size]
    expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert text_frame(payload) == expected


@pytest.mark.parametrize("compression", [False, True])
def test_frames_go_straight_to_the_transport_unless_compressed(runtime, monkeypatch, compression):
    """Without compression the fanned-out frames are written to the transport directly, the
    frames of events ready together in one write (the clients parse them as usual, each under
    its own id, in order); with per-message deflate negotiated, the library frames (and
    compresses) each instead."""
    written: list[bool] = []
    write = Outlet.write

    def spy(self: Outlet, member: Any, wire: bytes) -> bool:
        done = write(self, member, wire)
        written.append(done)
        return done

    monkeypatch.setattr(Outlet, "write", spy)
    app = _app(runtime, websocket_compression=compression)
    tenant = onboard(runtime)
    topic = alerts_topic(tenant.id)
    with LiveServer(app) as server:
        hub = _hub(app)

        async def scenario():
            async with TransportWS(server.ws_url, tenant.key) as one, \
                    TransportWS(server.ws_url, tenant.key) as two:
                deflate = [bool(ws.ws.protocol.extensions) for ws in (one, two)]
                await one.subscribe("same", ALERTS)
                await two.subscribe("an id of its own", ALERTS)
                await asyncio.to_thread(wait_for, lambda: _members(hub) == 2)
                for n in range(3):
                    runtime.bus.publish(topic, _alert(tenant.id, n, ["z" * 100 * n]))
                return deflate, [[await ws.next(op_id=op) for _ in range(3)]
                                 for ws, op in ((one, "same"), (two, "an id of its own"))]

        deflate, got = asyncio.run(scenario())
    assert deflate == [compression, compression]
    for frames, op in zip(got, ("same", "an id of its own"), strict=True):
        assert [f["id"] for f in frames] == [op] * 3
        assert [f["payload"]["data"]["complianceAlerts"]["denials"] for f in frames] == \
            [["z" * 100 * n] for n in range(3)]
    # one write per socket and batch: the three events, published together, are one to six
    assert 2 <= len(written) <= 6 and set(written) == {not compression}


class _Transport:
    """A connection's transport that records what is written to it."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass


def _frames(data: bytes) -> list[dict[str, Any]]:
    """The text frames in `data` (unmasked, as a server writes them), decoded."""
    frames = []
    while data:
        assert data[0] == 0x81
        n, at = data[1], 2
        if n == 126:
            n, at = int.from_bytes(data[2:4], "big"), 4
        elif n == 127:
            n, at = int.from_bytes(data[2:10], "big"), 10
        frames.append(json.loads(data[at:at + n]))
        data = data[at + n:]
    return frames


def test_a_batch_is_one_write_per_socket_and_keeps_its_order():
    """Results ready together go to a direct connection as one write of all their frames, in
    order, under each member's id; a batch with a result that must be encoded per member (its
    errors) goes frame by frame through `send`, still in order."""
    from graphql import GraphQLError
    from strawberry.types.execution import ExecutionResult
    from websockets.protocol import State

    from gateway.http.fanout import Member, group_key

    def ok(n: int) -> ExecutionResult:
        return ExecutionResult({"n": n}, None)

    async def scenario(results: list[ExecutionResult]) -> list[tuple[list[bytes], list[str]]]:
        writable = asyncio.Event()
        writable.set()
        hub = Hub(lambda message: json.dumps(message), 0)
        sockets, members = [], []
        for op_id in ("a", "b"):
            transport, texts = _Transport(), []

            async def send_text(text: str, texts: list[str] = texts) -> None:
                texts.append(text)

            connection = type("Conn", (), {})()
            connection.conn = type("WS", (), {"extensions": [], "state": State.OPEN})()
            connection.close_sent, connection.handshake_complete = False, True
            connection.initial_response, connection.writable = None, writable
            outlet = Outlet(send_text, transport, 8, lambda: None, connection)
            members.append(Member(op_id, outlet, lambda _: None, lambda _: None))
            sockets.append((transport.written, texts))

        async def stream() -> Any:
            for result in results:
                yield result

        async def opened() -> Any:
            return stream()

        key = group_key(object(), "subscription { n }", {}, None, "t", ())
        group = None
        for member in members:
            group = hub.join(key, member, opened)
        assert group is not None and group.task is not None
        await asyncio.wait_for(group.task, 5)
        return sockets

    plain = asyncio.run(scenario([ok(1), ok(2), ok(3)]))
    for (written, texts), op_id in zip(plain, ("a", "b"), strict=True):
        assert len(written) == 1 and texts[-1:] == [f'{{"id":"{op_id}","type":"complete"}}']
        assert _frames(written[0]) == [{"id": op_id, "type": "next", "payload": {"data": {"n": n}}}
                                       for n in (1, 2, 3)]
    failing = ExecutionResult(None, [GraphQLError("boom")])
    mixed = asyncio.run(scenario([ok(1), failing, ok(3)]))
    for (written, texts), op_id in zip(mixed, ("a", "b"), strict=True):
        assert written == []
        sent = [json.loads(t) for t in texts]
        assert [m["type"] for m in sent] == ["next", "next", "next", "complete"]
        assert [m["id"] for m in sent] == [op_id] * 4
        assert sent[0]["payload"] == {"data": {"n": 1}} and sent[2]["payload"] == {"data": {"n": 3}}
        assert sent[1]["payload"]["errors"][0]["message"] == "boom"
