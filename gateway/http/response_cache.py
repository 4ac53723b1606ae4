"""The response cache: answers of queries kept per (tenant, roles, document, variables) and
dropped by the domain events the bus already carries (ALPHINTRA_RESPONSE_CACHE, off by default).

What may be cached is an explicit allow-list of (type, field) pairs, each naming the
invalidation tag its value depends on (`FIELDS`): an operation is cacheable only if it is a
query and every field it selects, at any depth and in any fragment, is on the list. Anything
else (a plugin's field, a field reading the clock or market data, `viewer`, introspection, a
nested type nobody proved) makes the whole operation uncacheable.

The key holds the tenant, its schema (plugins change it), the caller's roles and the policy
generation (roles decide what a resolver shows), the trusted-documents mode, the document's
hash, the variables as canonical JSON and the operation's name; no allow-listed field answers
per user, so the user is not in it (`viewer` is not allowed). Entries never cross tenants.

Invalidation, by tag, on every process (the bus carries the events across replicas):
- `jobs:<tenant>`: the tenant-level `jobs.<tenant>` signal each job write commits beside its
  own `job.<id>` event (gateway/jobs/runner.py);
- `orders:<tenant>`: every message on the tenant's orders topic;
- the whole tenant: a credential change (`credentials.revoked`), a plugin installation change,
  or a new epoch on one of the tenant's topics (the numbering restarted: events may be lost);
- everything: a policy change (and the policy generation is in the key besides).
A lost invalidation is bounded by the TTL. A generation per tag, read before execution and
compared at store time, keeps an answer computed before an invalidation from being stored after.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    TypeInfo,
    TypeInfoVisitor,
    Visitor,
    visit,
)

from gateway.auth.policy import CREDENTIALS_TOPIC, POLICY_TOPIC
from gateway.auth.principal import Principal
from gateway.events import Bus, Event, Listeners
from gateway.jobs.runner import tenant_jobs_topic
from gateway.marketplace.install import CHANGED_TOPIC
from gateway.trading.common import orders_topic

log = logging.getLogger(__name__)

HIT, MISS = "HIT", "MISS"
TENANT = "tenant"  # the tag every entry of a tenant carries: flushing it drops them all

_JOB = ("id", "kind", "status", "region", "progress", "message", "params", "result", "error",
        "attempts", "cancelRequested", "idempotencyKey", "createdAt", "startedAt", "finishedAt",
        "updatedAt")
_ORDER = ("id", "clientOrderId", "account", "symbol", "isin", "mic", "requestedMic", "side",
          "ordType", "timeInForce", "quantity", "limitPrice", "stopPrice", "currency", "expireAt",
          "status", "fixStatus", "cumQty", "leavesQty", "avgPx", "fees", "venueOrderId",
          "rejectCode", "rejectText", "routing", "createdAt", "updatedAt", "version")

# (type, field) -> the tag kind its value depends on (None: only on the tenant-wide events and
# the policy, which drop every entry). Fields left out on purpose: Job.tenant (tenant settings
# change without an event), User.nationalIdentifier (changes without an event), Order's
# instrument/venue/executions/events (not proved yet), positions (valued at current prices).
FIELDS: dict[str, dict[str, str | None]] = {
    "Query": {"job": "jobs", "jobs": "jobs", "jobKinds": None, "order": "orders",
              "orders": "orders"},
    "Job": {**dict.fromkeys(_JOB, "jobs"), "createdBy": "jobs"},
    "JobError": {"code": "jobs", "message": "jobs"},
    "JobConnection": {"edges": "jobs", "pageInfo": "jobs"},
    "JobEdge": {"cursor": "jobs", "node": "jobs"},
    # A user's email and name never change; `roles` change with the policy (flushes all).
    # `active` is left out: reactivating a user publishes no event.
    "User": {"id": None, "email": None, "displayName": None, "createdAt": None, "roles": None},
    "Order": dict.fromkeys(_ORDER, "orders"),
    "OrderConnection": {"edges": "orders", "pageInfo": "orders", "totalCount": "orders"},
    "OrderEdge": {"cursor": "orders", "node": "orders"},
    "PageInfo": {"hasNextPage": None, "endCursor": None},
}


def cacheable_tags(gql: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode
                   ) -> frozenset[str] | None:
    """The tag kinds a query's answer depends on, or None when it may not be cached (not a
    query, or a field anywhere in the document off the allow-list)."""
    if operation.operation != OperationType.QUERY:
        return None
    type_info = TypeInfo(gql)
    kinds: set[str] = set()
    refused: list[str] = []

    class Check(Visitor):
        def enter_field(self, node: FieldNode, *_: Any) -> Any:
            name = node.name.value
            if name == "__typename":
                return None
            parent = type_info.get_parent_type()
            allowed = FIELDS.get(parent.name, {}) if parent is not None else {}
            if name not in allowed:
                refused.append(f"{parent.name if parent else '?'}.{name}")
                return Visitor.BREAK
            kind = allowed[name]
            if kind is not None:
                kinds.add(kind)
            return None

    visit(document, TypeInfoVisitor(type_info, Check()))
    return None if refused else frozenset(kinds)


def tag(kind: str, tenant_id: str) -> str:
    return f"{kind}:{tenant_id}"


def cache_key(principal: Principal, schema_key: str, policy_generation: int, query: str,
              params: dict[str, Any]) -> tuple[Any, ...]:
    variables = params.get("variables") or {}
    try:
        canonical = orjson.dumps(variables, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not plain JSON (cannot come from HTTP); keyed by its repr
        canonical = repr(sorted(variables.items())).encode()
    return (principal.tenant_id, schema_key, tuple(sorted(principal.roles)), policy_generation,
            principal.trusted_documents_only, hashlib.sha256(query.encode()).digest(), canonical,
            params.get("operationName"))


@dataclass(frozen=True)
class Entry:
    body: bytes
    etag: str
    tags: tuple[str, ...]
    expires: float


@dataclass(frozen=True)
class Ticket:
    """What a miss may store, once executed: the tags' generations read before execution."""

    key: tuple[Any, ...]
    tags: tuple[str, ...]
    generations: tuple[int, ...]
    epoch: int


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(t.strip().removeprefix("W/") == etag for t in if_none_match.split(","))


class ResponseCache:
    """Bounded (entries and bytes) LRU of encoded answers, with per-tag generations."""

    def __init__(self, ttl_s: float, max_entries: int, max_bytes: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[Any, ...], Entry] = OrderedDict()
        self._by_tag: dict[str, set[tuple[Any, ...]]] = {}
        self._generations: dict[str, int] = {}
        self._epoch = 0  # bumped by `clear`: every ticket taken before it is void
        self._bytes = 0
        self._topic_epochs: dict[str, str] = {}
        self._watched: set[str] = set()
        # Its own lock: subscribing waits on the event loop, whose listeners take `_lock`.
        self._watch_lock = threading.Lock()
        self._bus: Bus | None = None
        self._listening: Listeners | None = None  # removed by `stop`: the bus may outlive the app
        self._loop: asyncio.AbstractEventLoop | None = None

    # Lookups and stores (request threads).
    def lookup(self, key: tuple[Any, ...]) -> Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.expires <= self._clock():
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return entry

    def ticket(self, key: tuple[Any, ...], tenant_id: str, kinds: Iterable[str]) -> Ticket:
        tags = (tag(TENANT, tenant_id), *sorted(tag(k, tenant_id) for k in kinds))
        with self._lock:
            return Ticket(key, tags, tuple(self._generations.get(t, 0) for t in tags), self._epoch)

    def store(self, ticket: Ticket, body: bytes) -> Entry | None:
        """Keeps `body` unless one of its tags was invalidated since the ticket was taken (the
        answer may predate the change), or it is too large to keep. None: not kept."""
        if len(body) > self.max_bytes or self.max_entries < 1:
            return None
        entry = Entry(body, etag_of(body), ticket.tags, self._clock() + self.ttl_s)
        with self._lock:
            if ticket.epoch != self._epoch or any(
                    self._generations.get(t, 0) != g for t, g in zip(ticket.tags, ticket.generations,
                                                                     strict=True)):
                return None
            if ticket.key in self._entries:
                self._drop(ticket.key)
            self._entries[ticket.key] = entry
            self._bytes += len(body)
            for t in entry.tags:
                self._by_tag.setdefault(t, set()).add(ticket.key)
            while self._entries and (len(self._entries) > self.max_entries
                                     or self._bytes > self.max_bytes):
                self._drop(next(iter(self._entries)))
        return entry

    def _drop(self, key: tuple[Any, ...]) -> None:
        entry = self._entries.pop(key)
        self._bytes -= len(entry.body)
        for t in entry.tags:
            keys = self._by_tag.get(t)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_tag[t]

    def __len__(self) -> int:
        return len(self._entries)

    # Invalidation (bus listeners, any thread).
    def invalidate(self, tag_: str) -> None:
        with self._lock:
            self._generations[tag_] = self._generations.get(tag_, 0) + 1
            for key in list(self._by_tag.get(tag_, ())):
                self._drop(key)

    def invalidate_tenant(self, tenant_id: str) -> None:
        self.invalidate(tag(TENANT, tenant_id))

    def clear(self) -> None:
        with self._lock:
            self._epoch += 1
            self._entries.clear()
            self._by_tag.clear()
            self._bytes = 0

    def _seen(self, event: Event, tenant_id: str) -> None:
        """A new epoch on a topic we follow: events may have been lost, drop the tenant."""
        with self._lock:
            previous = self._topic_epochs.get(event.topic)
            self._topic_epochs[event.topic] = event.epoch
        if previous is not None and previous != event.epoch:
            self.invalidate_tenant(tenant_id)

    def on_tenant_event(self, kind: str, tenant_id: str) -> Callable[[Event], None]:
        def listener(event: Event) -> None:
            self._seen(event, tenant_id)
            self.invalidate(tag(kind, tenant_id))
        return listener

    def on_tenant_changed(self, event: Event) -> None:
        tenant_id = event.payload.get("tenantId") or event.payload.get("tenant_id")
        if tenant_id:
            self.invalidate_tenant(str(tenant_id))
        else:  # a change we cannot place: drop everything rather than guess
            self.clear()

    def on_policy_changed(self, event: Event) -> None:
        self.clear()

    # Listening: the process-wide topics at start-up, a tenant's own when it is first cached.
    async def start(self, bus: Bus) -> None:
        self._bus = bus
        self._listening = listening = Listeners(bus)
        self._loop = asyncio.get_running_loop()
        await listening.listen(POLICY_TOPIC, self.on_policy_changed)
        await listening.listen(CREDENTIALS_TOPIC, self.on_tenant_changed)
        await listening.listen(CHANGED_TOPIC, self.on_tenant_changed)

    async def stop(self) -> None:
        """Stop hearing the bus (the app is going, its runtime's bus perhaps not): from here on
        nothing is stored, as no invalidation would arrive."""
        listening = self._listening
        self._loop, self._bus, self._listening = None, None, None
        # Not under `_watch_lock`: a request thread holding it waits on this loop.
        self._watched = set()
        self.clear()
        if listening is not None:
            await listening.close()

    async def _watch(self, tenant_id: str) -> None:
        listening = self._listening
        if listening is None:
            raise RuntimeError("the response cache has stopped")
        await listening.listen(tenant_jobs_topic(tenant_id), self.on_tenant_event("jobs", tenant_id))
        await listening.listen(orders_topic(tenant_id), self.on_tenant_event("orders", tenant_id))

    def watching(self, tenant_id: str, timeout_s: float = 5.0) -> bool:
        """Whether this process hears the tenant's invalidations (subscribing on first use, from
        a request thread); nothing is stored for a tenant it does not hear."""
        if tenant_id in self._watched:
            return True
        if self._loop is None or self._bus is None:
            return False  # not started (no app lifespan): never store
        with self._watch_lock:
            if tenant_id in self._watched:
                return True
            try:
                asyncio.run_coroutine_threadsafe(self._watch(tenant_id), self._loop).result(timeout_s)
            except Exception:
                log.exception("response cache could not follow the tenant's events")
                return False
            self._watched.add(tenant_id)
        return True
