"""Selected reads (issue 14): `jobs` and `job(id)` read only the columns a query asked for, in
one statement with the creator joined, and answer exactly what the whole-row read answers."""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

import schema.jobs
from gateway.db import utcnow
from gateway.jobs.models import Job
from schema.jobs import JobRead
from tests.support import onboard, user_key

BACKGROUND_THREADS = {"outbox-dispatcher", "job-reaper", "job-leases", "audit-checkpoints"}
FAR = utcnow() + timedelta(days=3650)  # a RUNNING job the reaper leaves alone

ALL_FIELDS = """id kind status region progress message params result error { code message }
    attempts cancelRequested idempotencyKey createdAt startedAt finishedAt updatedAt
    tenant { id slug } createdBy { id email displayName active createdAt roles }"""


def add_jobs(runtime: Any, tenant_id: str, creators: list[str | None], *, n: int,
             kind_prefix: str) -> list[str]:
    """`n` jobs of varied shape; several share a created_at (the cursor then orders by id)."""
    base, ids = utcnow() - timedelta(hours=1), []
    statuses = ["SUCCEEDED", "FAILED", "CANCELED", "RUNNING"]
    with runtime.db.tenant_transaction(tenant_id) as session:
        for i in range(n):
            status = statuses[i % 4]
            job = Job(kind=f"{kind_prefix}-{'ab'[i % 2]}", status=status, region="emea",
                      progress=(i % 5) / 4, message=f"step {i}", params={"i": i, "xs": [i, "x"]},
                      result={"ok": i} if status == "SUCCEEDED" else None,
                      error_code="BOOM" if status == "FAILED" else None,
                      error_message=None if i % 8 == 1 else f"failed at {i}",
                      idempotency_key=f"k{i}" if i % 3 == 0 else None,
                      created_by=creators[i % len(creators)], attempts=i % 3,
                      cancel_requested=i % 7 == 0, tenant_id=tenant_id,
                      lease_expires_at=FAR if status == "RUNNING" else None,
                      created_at=base + timedelta(seconds=i // 3),
                      started_at=base + timedelta(seconds=i) if i % 2 else None,
                      finished_at=base + timedelta(seconds=i + 1) if status != "RUNNING" else None,
                      updated_at=base + timedelta(seconds=i + 2))
            session.add(job)
            ids.append(job.id)
    return ids


@pytest.fixture(scope="module")
def data(runtime: Any) -> dict[str, Any]:
    a, b = onboard(runtime), onboard(runtime)
    viewer_id, _ = user_key(runtime, a, "viewer")
    b_viewer, _ = user_key(runtime, b, "viewer")
    # One of A's jobs names B's admin as creator: the join must not find B's user.
    a_ids = add_jobs(runtime, a.id, [a.admin_id, viewer_id, None, b.admin_id], n=26,
                     kind_prefix="sel")
    b_ids = add_jobs(runtime, b.id, [b.admin_id, b_viewer], n=9, kind_prefix="sel")
    b_users = {u.email for u in runtime.tenancy.users(b.id, first=50).items}
    return {"a": a, "b": b, "a_ids": a_ids, "b_ids": b_ids, "b_users": b_users,
            "b_admin": b.admin_id}


class Recorder:
    """The SQL a request runs (not the gateway's background loops')."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.statements = engine, []

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.current_thread().name not in BACKGROUND_THREADS:
            self.statements.append(statement)

    def __enter__(self) -> Recorder:
        event.listen(self.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self)

    def touching(self, table: str) -> list[str]:
        return [s for s in self.statements
                if re.search(rf'\bFROM "?{table}"?\b|\bJOIN "?{table}"?\b', s)
                and "api_key" not in s]  # authentication's look-ups, when not cached


def both_paths(gql: Any, runtime: Any, monkeypatch: pytest.MonkeyPatch, query: str,
               variables: dict[str, Any] | None, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The answer of the selected read and of the whole-row read (the fallback every selection
    this cannot map takes), each checked to have taken its path."""
    with Recorder(runtime.db.engine) as selected:
        new = gql(query, variables, key=key)
    with monkeypatch.context() as m:
        m.setattr(JobRead, "of", classmethod(lambda cls, fields: None))
        with Recorder(runtime.db.engine) as whole:
            old = gql(query, variables, key=key)
    # run_token is no GraphQL field: only a whole-row read selects it.
    assert not any("run_token" in s for s in selected.touching("job")), selected.statements
    assert any("run_token" in s for s in whole.touching("job")), whole.statements
    return new, old


QUERIES: list[tuple[str, dict[str, Any] | None]] = [
    ("{ jobs(first: 7) { edges { node { id status } } pageInfo { hasNextPage endCursor } } }",
     None),
    (f"{{ jobs(first: 50) {{ edges {{ cursor node {{ {ALL_FIELDS} }} }} }} }}", None),
    ("{ jobs(first: 50) { edges { node { id kind status progress createdAt "
     "createdBy { email } } } } }", None),
    ("{ jobs(first: 30) { edges { node { createdBy { __typename id } } } } }", None),
    ("{ jobs(first: 30) { edges { node { id createdBy { roles displayName } } } } }", None),
    # nationalIdentifier is not a user column: the creator comes by the loader.
    ("{ jobs(first: 30) { edges { node { id createdBy { email nationalIdentifier "
     "{ identifier } } } } } }", None),
    ("{ jobs(first: 30) { edges { node { error { code message } result } } } }", None),
    ("""query { jobs(first: 12) { ...C } }
        fragment C on JobConnection { __typename edges { __typename cursor node { ...J
          ... on Job { progress createdBy { ...U } } ... { message } } } }
        fragment J on Job { id kind __typename }
        fragment U on User { email }""", None),
    ("""{ a: jobs(first: 3) { edges { node { x: id y: status } } }
          b: jobs(first: 4, kind: "sel-b") { edges { node { id z: createdBy { email } } } }
          jobs(first: 5) { edges { node { id } } edges { node { kind createdBy { id } } } } }""",
     None),
    ("query($s: JobStatus, $k: String) { jobs(first: 20, status: $s, kind: $k) "
     "{ edges { node { id status kind finishedAt } } pageInfo { hasNextPage } } }",
     {"s": "FAILED", "k": None}),
    ("query($s: JobStatus, $k: String) { jobs(first: 20, status: $s, kind: $k) "
     "{ edges { node { id status kind startedAt } } } }", {"s": None, "k": "sel-a"}),
    ("query($s: JobStatus) { jobs(first: 20, status: $s) { edges { node { id } } } }",
     {"s": "QUEUED"}),
    ("query($x: Boolean!) { jobs(first: 9) { edges { node { id params @include(if: $x) "
     "updatedAt @skip(if: $x) } } } }", {"x": False}),
    ("{ jobs(first: 3) { pageInfo { hasNextPage endCursor } } }", None),
]


@pytest.mark.parametrize("query,variables", QUERIES)
def test_selected_read_answers_what_the_whole_row_read_answers(gql, runtime, data, monkeypatch,
                                                               query, variables):
    new, old = both_paths(gql, runtime, monkeypatch, query, variables, data["a"].key)
    assert "errors" not in new, new
    assert new == old
    text = repr(new)
    assert not any(job_id in text for job_id in data["b_ids"])
    assert not any(email in text for email in data["b_users"])


def test_pages_walked_by_cursor_are_the_same(gql, runtime, data, monkeypatch):
    query = ("query($after: String) { jobs(first: 4, after: $after) { edges { cursor node "
             "{ id createdAt createdBy { email } } } pageInfo { hasNextPage endCursor } } }")
    after, seen = None, []
    while True:
        new, old = both_paths(gql, runtime, monkeypatch, query, {"after": after},
                              data["a"].key)
        assert new == old
        page = new["data"]["jobs"]
        seen += [e["node"]["id"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert sorted(seen) == sorted(data["a_ids"]) and len(seen) == len(set(seen))


def test_job_by_id_reads_the_selected_columns(gql, runtime, data, monkeypatch):
    for job_id in data["a_ids"][:8]:
        query = f"query($id: ID!) {{ job(id: $id) {{ {ALL_FIELDS} }} }}"
        new, old = both_paths(gql, runtime, monkeypatch, query, {"id": job_id}, data["a"].key)
        assert new == old and new["data"]["job"]["id"] == job_id
        small = "query($id: ID!) { job(id: $id) { status createdBy { email } } }"
        new, old = both_paths(gql, runtime, monkeypatch, small, {"id": job_id}, data["a"].key)
        assert new == old
    # Another tenant's job: not found on both paths.
    query = "query($id: ID!) { job(id: $id) { id createdBy { email } } }"
    new, old = both_paths(gql, runtime, monkeypatch, query, {"id": data["b_ids"][0]},
                          data["a"].key)
    assert new == old and new["errors"][0]["extensions"]["code"] == "JOB_NOT_FOUND"


def columns_of(statement: str) -> set[str]:
    """The columns a SELECT lists, as `table.column` (quotes and labels dropped)."""
    listed = re.search(r"SELECT (.*?)\s+FROM ", statement, re.S)
    assert listed, statement
    return {re.sub(r"\s+AS\s+\S+$", "", c.strip()).replace('"', "")
            for c in listed.group(1).split(",")}


def test_one_statement_selects_only_the_requested_columns(gql, runtime, data, single_execution):
    query = ("{ jobs(first: 50) { edges { node { id kind status progress createdAt "
             "createdBy { email } } } } }")
    with Recorder(runtime.db.engine) as sql:
        answer = gql.data(query, key=data["a"].key)
    reads = [s for s in sql.statements if s in sql.touching("job") + sql.touching("user")]
    assert len(reads) == 1, sql.statements  # the page and its creators: one statement
    assert columns_of(reads[0]) == {"job.id", "job.created_at", "job.kind", "job.status",
                                    "job.progress", "user.id", "user.email"}
    assert "LEFT OUTER JOIN" in reads[0]
    assert len(answer["jobs"]["edges"]) == len(data["a_ids"])

    # A creator field that is not a user column: the page, then the creators by the loader.
    query = "{ jobs(first: 50) { edges { node { id createdBy { nationalIdentifier { scheme } } } } } }"
    with Recorder(runtime.db.engine) as sql:
        gql.data(query, key=data["a"].key)
    assert [columns_of(s) for s in sql.touching("job")] == [
        {"job.id", "job.created_at", "job.created_by"}]
    assert len(sql.touching("user")) == 1

    with Recorder(runtime.db.engine) as sql:
        gql.data("{ jobs(first: 5) { pageInfo { hasNextPage } } }", key=data["a"].key)
    assert [columns_of(s) for s in sql.touching("job")] == [{"job.id", "job.created_at"}]


def test_the_join_never_crosses_tenants(gql, runtime, data):
    """A's job naming B's admin as its creator answers no creator; B sees only its own jobs,
    with its own creators."""
    foreign = [job_id for i, job_id in enumerate(data["a_ids"]) if i % 4 == 3]
    query = "{ jobs(first: 50) { edges { node { id createdBy { id email } } } } }"
    a_page = {e["node"]["id"]: e["node"]["createdBy"]
              for e in gql.data(query, key=data["a"].key)["jobs"]["edges"]}
    assert set(a_page) == set(data["a_ids"])
    assert all(a_page[job_id] is None for job_id in foreign)
    b_page = gql.data(query, key=data["b"].key)["jobs"]["edges"]
    assert {e["node"]["id"] for e in b_page} == set(data["b_ids"])
    assert {e["node"]["createdBy"]["email"] for e in b_page} <= data["b_users"]
    job = gql.data("query($id: ID!) { job(id: $id) { createdBy { email } } }",
                   {"id": foreign[0]}, key=data["a"].key)["job"]
    assert job["createdBy"] is None


def test_a_selection_this_cannot_map_reads_whole_rows(gql, runtime, data):
    # A fragment on the federation union Job belongs to: not followed, so the whole-row read.
    query = "{ jobs(first: 5) { edges { node { ... on _Entity { ... on Job { id kind } } } } } }"
    with Recorder(runtime.db.engine) as sql:
        answer = gql.data(query, key=data["a"].key)
    assert any("run_token" in s for s in sql.touching("job"))
    assert len(answer["jobs"]["edges"]) == 5 and all(e["node"]["kind"]
                                                     for e in answer["jobs"]["edges"])


def test_every_job_field_is_mapped_to_columns(settings):
    from schema.compose import build_schema

    fields = set(build_schema(settings)._schema.type_map["Job"].fields)  # type: ignore[attr-defined]
    mapped = set(schema.jobs._JOB_COLUMNS) - {"__typename"}
    # A new field of Job left out of the map still answers (whole-row reads), only slower.
    assert fields == mapped | {"createdBy"}
