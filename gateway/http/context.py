"""What every resolver gets as `info.context`."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from gateway.auth.principal import Principal
from gateway.errors import Forbidden, Unauthenticated
from gateway.runtime import Runtime

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BatchLoader(Generic[K, V]):
    """A synchronous data loader for depth-first (sync) execution.

    A list resolver announces the keys its children will ask for (`want`); the first child
    `load` fetches every wanted key in one query. A page of N rows with a nested object thus
    costs one query for the page and one per nested type, not N.
    """

    def __init__(self, load_many: Callable[[list[K]], dict[K, V]]) -> None:
        self._load_many = load_many
        self._wanted: set[K] = set()
        self._cache: dict[K, V | None] = {}

    def want(self, keys: Iterable[K]) -> None:
        self._wanted.update(k for k in keys if k is not None and k not in self._cache)

    def load(self, key: K) -> V | None:
        if key not in self._cache:
            batch = list(self._wanted | {key})
            found = self._load_many(batch)
            for k in batch:
                self._cache[k] = found.get(k)
            self._wanted.clear()
        return self._cache[key]


@dataclass
class RequestContext:
    runtime: Runtime
    request_id: str
    principal: Principal | None = None
    connection_params: dict[str, Any] | None = None
    loaders: dict[str, BatchLoader[Any, Any]] = field(default_factory=dict)
    # The tenant's plugin view the request started with (HTTP): a request in flight keeps its
    # plugins even if an install, uninstall or delisting swaps the tenant's view meanwhile.
    plugin_view: Any = None

    @property
    def me(self) -> Principal:
        if self.principal is None:
            raise Unauthenticated("authentication required", code="UNAUTHENTICATED")
        return self.principal

    @property
    def tenant_id(self) -> str:
        return self.me.tenant_id

    def require(self, obj: str, act: str) -> Principal:
        """Raise FORBIDDEN unless the caller may `act` on `obj` in its own tenant."""
        me = self.me
        if not self.runtime.policy.allowed(me.user_id, me.tenant_id, obj, act):
            raise Forbidden(f"{act} on {obj} is not allowed for this user", code="FORBIDDEN")
        return me

    def require_platform_admin(self) -> Principal:
        me = self.me
        if not self.runtime.policy.is_platform_admin(me.user_id):
            raise Forbidden("platform administrators only", code="FORBIDDEN")
        return me

    def loader(self, name: str, load_many: Callable[[list[Any]], dict[Any, Any]]) -> BatchLoader[Any, Any]:
        if name not in self.loaders:
            self.loaders[name] = BatchLoader(load_many)
        return self.loaders[name]
