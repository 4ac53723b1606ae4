"""Rate limits: token buckets per API key (or JWT user) and per tenant.

A request takes one token from each of its buckets, or none when any is empty: then it is
refused RATE_LIMITED (HTTP 429) with `Retry-After`, the seconds until every bucket has a token.
Buckets refill continuously at `rate` tokens a second up to `burst`.

In memory for one process (the embedded default); with Redis, one Lua script takes from all of
a request's buckets atomically on Redis's own clock, so every replica shares them. Should Redis
fail, requests are let through (and logged once a minute): a limiter must not turn a Redis
outage into a full one. A response-cache hit answered on the event loop takes its tokens with
`acheck`: the same buckets, Redis's script awaited through redis.asyncio.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis
import redis.asyncio

from gateway.auth.principal import Principal
from gateway.errors import DomainError
from gateway.settings import Settings

log = logging.getLogger(__name__)
RATE_LIMITED = "RATE_LIMITED"
MEMORY_BUCKETS = 100_000  # bounded: the least recently used bucket (a full one, by then) goes


class RateLimited(DomainError):
    code = RATE_LIMITED
    http_status = 429

    def __init__(self, scope: str, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(f"too many requests for this {scope}; retry in {self.retry_after} s",
                         details={"scope": scope, "retryAfter": self.retry_after})


@dataclass(frozen=True)
class Bucket:
    key: str
    scope: str  # "key" | "tenant": named in the refusal
    rate: float
    burst: int


class Buckets(Protocol):
    def take(self, buckets: list[Bucket]) -> tuple[str, float] | None:
        """Take a token from each bucket, or from none: (scope, seconds to wait) when refused."""
        ...


class MemoryBuckets:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def take(self, buckets: list[Bucket]) -> tuple[str, float] | None:
        now = self._clock()
        with self._lock:
            levels = []
            refused: tuple[str, float] | None = None
            for b in buckets:
                tokens, at = self._state.get(b.key, (float(b.burst), now))
                tokens = min(float(b.burst), tokens + (now - at) * b.rate)
                levels.append(tokens)
                if tokens < 1:
                    wait = (1 - tokens) / b.rate
                    if refused is None or wait > refused[1]:
                        refused = (b.scope, wait)
            for b, tokens in zip(buckets, levels, strict=True):
                self._state[b.key] = (tokens if refused else tokens - 1, now)
                self._state.move_to_end(b.key)
            while len(self._state) > MEMORY_BUCKETS:
                self._state.popitem(last=False)
        return refused


# KEYS: the buckets; ARGV: rate, burst for each in turn. Returns {} when taken, else
# {index of the bucket that waits longest (1-based), wait in ms}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local levels = {}
local worst, wait = 0, 0
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens, at = tonumber(state[1]), tonumber(state[2])
  if tokens == nil then tokens, at = burst, now end
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
  levels[i] = tokens
  if tokens < 1 then
    local w = math.ceil((1 - tokens) * 1000 / rate)
    if w > wait then worst, wait = i, w end
  end
end
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local tokens = levels[i]
  if worst == 0 then tokens = tokens - 1 end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', now)
  redis.call('PEXPIRE', key, math.ceil(burst * 1000 / rate) + 1000)
end
if worst == 0 then return {} end
return {worst, wait}
"""


class RedisBuckets:
    def __init__(self, url: str, namespace: str) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._script = self._redis.register_script(_TAKE)
        self._prefix = f"{namespace}:rate:"
        self._warned_at = 0.0

        self._url = url
        # The same script on redis.asyncio, for the event loop (`atake`): made in the loop that
        # first uses it (its connections belong to that loop).
        self._async: tuple[asyncio.AbstractEventLoop, Any] | None = None

    def take(self, buckets: list[Bucket]) -> tuple[str, float] | None:
        try:
            result = self._script(keys=[self._prefix + b.key for b in buckets], args=_args(buckets))
        except redis.RedisError:
            self._unavailable()
            return None
        return _refusal(buckets, result)

    async def atake(self, buckets: list[Bucket]) -> tuple[str, float] | None:
        """`take` without blocking the event loop (a response-cache hit answered there)."""
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            client = redis.asyncio.Redis.from_url(self._url, socket_timeout=1.0,
                                                  socket_connect_timeout=1.0)
            self._async = (loop, client.register_script(_TAKE))
        try:
            result = await self._async[1](keys=[self._prefix + b.key for b in buckets],
                                          args=_args(buckets))
        except redis.RedisError:
            self._unavailable()
            return None
        return _refusal(buckets, result)

    def _unavailable(self) -> None:
        if time.monotonic() - self._warned_at > 60:
            self._warned_at = time.monotonic()
            log.warning("rate limits unavailable (Redis); requests pass unlimited", exc_info=True)


def _args(buckets: list[Bucket]) -> list[float | int]:
    args: list[float | int] = []
    for b in buckets:
        args += [b.rate, b.burst]
    return args


def _refusal(buckets: list[Bucket], result: Any) -> tuple[str, float] | None:
    if not result:
        return None
    index, wait_ms = int(result[0]), int(result[1])
    return buckets[index - 1].scope, wait_ms / 1000


class RateLimiter:
    """The buckets of one principal's request, from settings."""

    def __init__(self, settings: Settings, buckets: Buckets | None = None) -> None:
        self.settings = settings
        if buckets is None:
            buckets = (RedisBuckets(settings.redis_url, settings.redis_namespace)
                       if settings.redis_url else MemoryBuckets())
        self.buckets = buckets

    @property
    def blocks(self) -> bool:
        """Whether `acheck` could stop the event loop: buckets other than these two (in memory,
        or Redis awaited through redis.asyncio) with a limit on."""
        s = self.settings
        limited = s.rate_limit_key_per_second > 0 or s.rate_limit_tenant_per_second > 0
        return limited and not isinstance(self.buckets, MemoryBuckets | RedisBuckets)

    def check(self, principal: Principal) -> None:
        """RateLimited when the caller's key or tenant has no token left."""
        wanted = self._wanted(principal)
        if not wanted:
            return
        refused = self.buckets.take(wanted)
        if refused is not None:
            raise RateLimited(*refused)

    async def acheck(self, principal: Principal) -> None:
        """`check` on the event loop: in memory at once, on Redis awaited (see `blocks`)."""
        wanted = self._wanted(principal)
        if not wanted:
            return
        buckets = self.buckets
        refused = (await buckets.atake(wanted) if isinstance(buckets, RedisBuckets)
                   else buckets.take(wanted))
        if refused is not None:
            raise RateLimited(*refused)

    def _wanted(self, principal: Principal) -> list[Bucket]:
        s = self.settings
        wanted = []
        if s.rate_limit_key_per_second > 0:
            who = f"key:{principal.api_key_id}" if principal.api_key_id else f"user:{principal.user_id}"
            wanted.append(Bucket(who, "key", s.rate_limit_key_per_second, s.rate_limit_key_burst))
        if s.rate_limit_tenant_per_second > 0:
            wanted.append(Bucket(f"tenant:{principal.tenant_id}", "tenant",
                                 s.rate_limit_tenant_per_second, s.rate_limit_tenant_burst))
        return wanted
