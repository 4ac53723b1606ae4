"""Jobs end to end: a mutation queues work, a Dramatiq worker runs it, the row and the events
tell its story. Runs on the in-process broker, or on Redis when ALPHINTRA_REDIS_URL is set."""

import asyncio
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import event
from sqlmodel import func, select

from gateway.auth.principal import Principal
from gateway.db import utcnow
from gateway.jobs.actors import RUN_JOB
from gateway.jobs.kinds import JobKind
from gateway.jobs.models import Job
from gateway.jobs.runner import job_topic
from tests.support import TransportWS, error_codes, user_key, wait_for

JOB_FIELDS = ("id kind status progress message result error { code message } attempts "
              "region createdAt startedAt finishedAt createdBy { email }")
START = f"mutation($i: RunDiagnosticsInput) {{ runDiagnostics(input: $i) {{ {JOB_FIELDS} }} }}"
GET = f"query($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} }} }}"


def principal(tenant):
    return Principal(tenant_id=tenant.id, tenant_slug=tenant.slug, user_id=tenant.admin_id,
                     via="api_key", roles=("admin",))


@pytest.fixture(scope="session")
def test_kinds(runtime):
    calls = {"flaky": 0}
    lock = threading.Lock()

    def flaky(ctx, params):
        with lock:
            calls["flaky"] += 1
        if ctx.attempt == 1:
            raise RuntimeError("transient: connection reset")
        return {"attempt": ctx.attempt}

    def broken(ctx, params):
        raise ValueError("bug in the job kind")

    runtime.job_kinds.register(JobKind("test-flaky", "fails once", flaky))
    runtime.job_kinds.register(JobKind("test-broken", "always fails", broken))
    return calls


def finished(runtime, tenant, job_id, timeout=30):
    return wait_for(lambda: (j := runtime.jobs.get(tenant.id, job_id)).finished_at and j,
                    timeout=timeout)


def test_diagnostics_job_end_to_end(gql, runtime, tenant):
    job = gql.data(START, {"i": {"steps": 4, "stepSeconds": 0.01}}, key=tenant.key)["runDiagnostics"]
    assert job["status"] == "QUEUED" and job["region"] == "americas" and job["progress"] == 0
    finished(runtime, tenant, job["id"])
    done = gql.data(GET, {"id": job["id"]}, key=tenant.key)["job"]
    assert done["status"] == "SUCCEEDED" and done["progress"] == 1 and done["error"] is None
    assert done["attempts"] == 1 and done["createdBy"]["email"] == f"admin@{tenant.slug}.test"
    assert [c["name"] for c in done["result"]["checks"]] == ["database", "bus"]
    assert done["result"]["checks"][0]["detail"] == tenant.slug  # ran in the job's tenant scope
    assert done["startedAt"] <= done["finishedAt"]


def test_region_queue_and_bad_params_persist_nothing(gql, runtime, tenant):
    job = gql.data(START, {"i": {"steps": 2, "stepSeconds": 0, "region": "apac"}},
                   key=tenant.key)["runDiagnostics"]
    assert job["region"] == "apac"
    assert finished(runtime, tenant, job["id"]).status == "SUCCEEDED"

    def count():
        with runtime.db.tenant_session(tenant.id) as s:
            return s.exec(select(func.count()).select_from(Job)).one()

    before = count()
    for bad, code in (({"steps": 0}, "JOB_PARAMS_INVALID"), ({"stepSeconds": -1}, "JOB_PARAMS_INVALID"),
                      ({"failAtStep": 9, "steps": 3}, "JOB_PARAMS_INVALID"),
                      ({"region": "mars"}, "REGION_UNKNOWN"),
                      ({"idempotencyKey": "x" * 129}, "IDEMPOTENCY_KEY_INVALID")):
        assert error_codes(gql(START, {"i": bad}, key=tenant.key)) == [code], bad
    assert count() == before


def test_idempotency_key_returns_the_first_job(gql, runtime, tenant):
    args = {"i": {"steps": 2, "stepSeconds": 0, "idempotencyKey": "order-batch-7"}}
    first = gql.data(START, args, key=tenant.key)["runDiagnostics"]
    again = gql.data(START, args, key=tenant.key)["runDiagnostics"]
    assert again["id"] == first["id"]
    other = gql(START, {"i": {"steps": 3, "stepSeconds": 0, "idempotencyKey": "order-batch-7"}},
                key=tenant.key)
    assert error_codes(other) == ["IDEMPOTENCY_KEY_REUSED"]


def test_failure_reported_with_code(gql, runtime, tenant):
    job = gql.data(START, {"i": {"steps": 3, "stepSeconds": 0, "failAtStep": 2}},
                   key=tenant.key)["runDiagnostics"]
    done = finished(runtime, tenant, job["id"])
    assert done.status == "FAILED" and done.error_code == "DIAGNOSTICS_REQUESTED_FAILURE"
    assert done.attempts == 1  # a failure the kind understands is not retried


def test_unexpected_errors_are_retried_with_backoff(runtime, tenant, test_kinds, server):
    job = runtime.jobs.start(principal(tenant), "test-flaky", {})
    done = finished(runtime, tenant, job.id)
    assert done.status == "SUCCEEDED" and done.attempts == 2 and done.result == {"attempt": 2}

    job = runtime.jobs.start(principal(tenant), "test-broken", {})
    done = finished(runtime, tenant, job.id)
    assert done.status == "FAILED" and done.error_code == "INTERNAL_SERVER_ERROR"
    assert done.attempts == runtime.settings.job_max_retries + 1
    assert "bug in the job kind" not in (done.error_message or "")  # masked for the client


def test_cancel_running_job(gql, runtime, tenant):
    job = gql.data(START, {"i": {"steps": 40, "stepSeconds": 0.05}}, key=tenant.key)["runDiagnostics"]
    wait_for(lambda: runtime.jobs.get(tenant.id, job["id"]).progress > 0)
    canceled = gql.data("mutation($id: ID!) { cancelJob(id: $id) { status cancelRequested } }",
                        {"id": job["id"]}, key=tenant.key)["cancelJob"]
    assert canceled == {"status": "RUNNING", "cancelRequested": True}
    done = finished(runtime, tenant, job["id"])
    assert done.status == "CANCELED" and done.progress < 1
    again = gql("mutation($id: ID!) { cancelJob(id: $id) { status } }", {"id": job["id"]},
                key=tenant.key)
    assert error_codes(again) == ["JOB_ALREADY_FINISHED"]


def test_redelivered_message_never_finishes_a_job_twice(gql, runtime, tenant):
    job = gql.data(START, {"i": {"steps": 2, "stepSeconds": 0}}, key=tenant.key)["runDiagnostics"]
    first = finished(runtime, tenant, job["id"])
    runtime.broker.get_actor(RUN_JOB)(job["id"], tenant.id)  # the same message, delivered again
    assert runtime.jobs.get(tenant.id, job["id"]) == first


def test_a_superseded_run_cannot_write(runtime, tenant, server):
    # 6 steps: the reap below must land while the first run still sleeps, even on a loaded
    # machine (with 3, a stall of 4 s let it finish first)
    job = runtime.jobs.start(principal(tenant), "diagnostics", {"steps": 6, "step_seconds": 2})
    wait_for(lambda: runtime.jobs.get(tenant.id, job.id).progress > 0)  # in its sleeping step
    # As if its worker had died: the lease runs out, the job is re-queued and claimed again.
    later = utcnow() + timedelta(milliseconds=runtime.settings.job_lease_ms + 1000)
    # The reaper skips a row its worker is writing (SKIP LOCKED) and takes it at its next pass:
    # passes are asked for until one takes it.
    assert wait_for(lambda: runtime.job_reaper.reap(now=later).requeued, timeout=5, interval=0.1) == 1
    done = finished(runtime, tenant, job.id, timeout=40)
    assert done.status == "SUCCEEDED" and done.attempts == 2 and done.result["attempt"] == 2
    time.sleep(2.5)  # the first run wakes from its step: its next write is refused
    assert runtime.jobs.get(tenant.id, job.id) == done
    assert runtime.jobs.rows.claim(job.id, tenant.id) is None  # finished: not claimable


def test_job_pagination_and_filters(gql, runtime, tenant):
    ids = [gql.data(START, {"i": {"steps": 2, "stepSeconds": 0, "failAtStep": 1 if i == 0 else None}},
                    key=tenant.key)["runDiagnostics"]["id"] for i in range(5)]
    for job_id in ids:
        finished(runtime, tenant, job_id)
    page = "query($a: String, $s: JobStatus) { jobs(first: 2, after: $a, status: $s) " \
           "{ edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }"
    seen, after = [], None
    while True:
        jobs = gql.data(page, {"a": after}, key=tenant.key)["jobs"]
        seen += [e["node"]["id"] for e in jobs["edges"]]
        if not jobs["pageInfo"]["hasNextPage"]:
            break
        after = jobs["pageInfo"]["endCursor"]
    assert seen == list(reversed(ids))  # newest first, no gaps, no repeats
    failed = gql.data(page, {"s": "FAILED"}, key=tenant.key)["jobs"]["edges"]
    assert [e["node"]["id"] for e in failed] == [ids[0]]
    kind = gql.data('{ jobs(first: 50, kind: "nothing-like-this") { edges { node { id } } } }',
                    key=tenant.key)
    assert kind["jobs"]["edges"] == []
    assert error_codes(gql("{ jobs(first: 0) { edges { cursor } } }", key=tenant.key)) == \
        ["PAGE_SIZE_INVALID"]
    assert error_codes(gql("{ jobs(first: 500) { edges { cursor } } }", key=tenant.key)) == \
        ["PAGE_SIZE_INVALID"]
    assert error_codes(gql('{ jobs(after: "garbage!") { edges { cursor } } }', key=tenant.key)) == \
        ["CURSOR_INVALID"]


BACKGROUND_THREADS = {"outbox-dispatcher", "job-reaper", "job-leases", "audit-checkpoints"}


def test_a_page_costs_a_constant_number_of_queries(gql, runtime, tenant):
    for _ in range(3):
        user_key(runtime, tenant, "trader")
    keys = [user_key(runtime, tenant, "trader")[1] for _ in range(4)]
    started = [gql.data(START, {"i": {"steps": 2, "stepSeconds": 0}}, key=key)["runDiagnostics"]
               for key in keys for _ in range(3)]  # several creators: createdBy needs several users
    for job in started:  # quiet workers, so only the request's statements are counted
        finished(runtime, tenant, job["id"])
    gql.data("{ viewer { authenticatedBy } }", key=tenant.key)  # records the key's first use
    statements = []

    def count(conn, cursor, statement, *args):
        # the request's statements only, not the gateway's background loops polling meanwhile
        if threading.current_thread().name not in BACKGROUND_THREADS:
            statements.append(statement)

    query = "query($n: Int!) { jobs(first: $n) { edges { node { id createdBy { email } } } } }"
    smalls, larges = [], []
    event.listen(runtime.db.engine, "before_cursor_execute", count)
    try:
        # Twice each, the fewest kept: a request may also refresh a credential or the policy
        # (one statement, now and then, whatever the page's size); N+1 would grow every time.
        for _ in range(2):
            statements.clear()
            gql.data(query, {"n": 2}, key=tenant.key)
            smalls.append(len(statements))
            statements.clear()
            data = gql.data(query, {"n": 12}, key=tenant.key)
            larges.append(len(statements))
    finally:
        event.remove(runtime.db.engine, "before_cursor_execute", count)
    assert len({e["node"]["createdBy"]["email"] for e in data["jobs"]["edges"]}) >= 4
    assert min(smalls) == min(larges), (smalls, larges)


def test_job_updates_stream_over_a_real_websocket(server, gql, runtime, tenant):
    job = gql.data(START, {"i": {"steps": 5, "stepSeconds": 0.1}}, key=tenant.key)["runDiagnostics"]

    async def follow():
        updates = []
        async with TransportWS(server.ws_url, tenant.key) as ws:
            assert ws.ack == {"type": "connection_ack", "payload": {"tenant": tenant.slug}}
            await ws.subscribe("j", "subscription($id: ID!) { jobUpdated(id: $id) "
                                    "{ sequence job { status progress } } }", {"id": job["id"]})
            while True:
                message = await ws.next()
                if message["type"] == "complete":
                    return updates
                assert message["type"] == "next", message
                updates.append(message["payload"]["data"]["jobUpdated"])

    updates = asyncio.run(follow())
    assert updates[0]["sequence"] is None  # the snapshot
    assert updates[-1]["job"] == {"status": "SUCCEEDED", "progress": 1.0}
    sequences = [u["sequence"] for u in updates[1:]]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    progress = [u["job"]["progress"] for u in updates]
    assert progress == sorted(progress)
    # No gaps from the first live event to the last one.
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))


@pytest.mark.parametrize("payload, code", [({}, 4403), ({"Authorization": "Bearer alp_nope"}, 4403),
                                           ({"Authorization": "Basic abc"}, 4403)])
def test_websocket_authentication_in_connection_init(server, payload, code):
    import json

    import websockets

    async def connect():
        async with websockets.connect(server.ws_url, subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code
            return None

    assert asyncio.run(connect()) == code


def test_subscription_limits_and_codes_on_websocket(server, tenant):
    async def scenario():
        async with TransportWS(server.ws_url, tenant.key) as ws:
            await ws.subscribe("1", "subscription { jobUpdated(id: \"nope\") { job { id } } }")
            missing = await ws.next(op_id="1")
            many = " ".join(f"a{i}: jobUpdated(id: \"x\") {{ sequence }}" for i in range(40))
            await ws.subscribe("2", "subscription { " + many + " }")
            return missing, await ws.next(op_id="2")

    missing, limited = asyncio.run(scenario())
    errors = missing["payload"]["errors"] if missing["type"] == "next" else missing["payload"]
    assert [e["extensions"]["code"] for e in errors] == ["JOB_NOT_FOUND"]
    assert limited["type"] == "error"
    assert {e["extensions"]["code"] for e in limited["payload"]} >= {"QUERY_TOO_COMPLEX"}


def test_job_topic_is_per_job():
    assert job_topic("abc") == "job.abc"


def test_a_worker_frozen_inside_its_write_does_not_keep_the_job_from_the_reaper(runtime, tenant,
                                                                               monkeypatch):
    """A worker stopped (SIGSTOP, a VM pause) between its UPDATE and its COMMIT holds the job's
    row lock, which the reaper skips: PostgreSQL ends that session after half the lease."""
    if runtime.db.engine.dialect.name != "postgresql":
        pytest.skip("row locks held by an idle transaction are PostgreSQL's (CI's first pass)")
    from gateway.jobs.runner import Claim, JobRows

    # a long step: whichever worker runs it sleeps while this test writes as that run
    job = runtime.jobs.start(principal(tenant), "diagnostics", {"steps": 2, "step_seconds": 10})
    rows = JobRows(runtime.db, runtime.outbox, runtime.jobs.rows.messages, lease_s=1.0)
    claim = rows.claim(job.id, tenant.id)
    if claim is None:  # a worker claimed it first: write as its run
        row = wait_for(lambda: (j := runtime.jobs.get(tenant.id, job.id)).status == "RUNNING" and j)
        with runtime.db.tenant_session(tenant.id) as session:
            token = session.exec(select(Job.run_token).where(Job.id == job.id)).one()
        claim = Claim(job.id, tenant.id, token, row.attempts, row.kind, dict(row.params))
    frozen = threading.Event()

    def freeze(session, job_row):  # inside the write's transaction, after its UPDATE
        frozen.set()
        time.sleep(3.0)

    monkeypatch.setattr(rows, "event", freeze)
    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            rows.progress(claim, 0.5, "frozen")
            outcome.append(None)
        except BaseException as exc:  # the session was ended under it
            outcome.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    assert frozen.wait(5)
    later = utcnow() + timedelta(seconds=5)  # the lease long gone
    reaped = wait_for(lambda: runtime.job_reaper.reap(now=later).requeued, timeout=2.5, interval=0.1)
    assert reaped == 1
    thread.join(10)
    assert outcome and outcome[0] is not None  # the frozen write never landed
    assert runtime.jobs.get(tenant.id, job.id).status in ("QUEUED", "RUNNING", "SUCCEEDED")
