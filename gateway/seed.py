"""The demo tenant that `make run` serves."""

from __future__ import annotations

from sqlmodel import select

from gateway.auth import apikeys
from gateway.errors import NotFound
from gateway.runtime import Runtime
from gateway.tenancy.models import ApiKey, User

DEMO_SLUG = "demo"
DEMO_ADMIN = "admin@demo.alphintra.local"


def seed_demo(runtime: Runtime) -> str:
    """Idempotent: a second run leaves the tenant alone and only adds a newly configured key."""
    configured = runtime.settings.demo_api_key
    if configured is not None and apikeys.parse(configured) is None:
        raise ValueError("ALPHINTRA_DEMO_API_KEY must read alp_<16 hex>_<32+ characters>")
    try:
        tenant = runtime.tenancy.tenant_by_slug(DEMO_SLUG)
    except NotFound:
        _, _, (_, key) = runtime.tenancy.onboard(DEMO_SLUG, "Demo Capital", DEMO_ADMIN,
                                                 admin_key=configured)
        if configured:
            return "demo tenant created; its admin key is ALPHINTRA_DEMO_API_KEY"
        return f"demo tenant created; admin API key (shown once): {key}"
    if configured is None:
        return "demo tenant exists; its admin key was printed when it was created"
    key_id, _ = apikeys.parse(configured)  # type: ignore[misc]
    with runtime.db.tenant_session(tenant.id) as session:
        if session.exec(select(ApiKey).where(ApiKey.key_id == key_id)).first() is not None:
            return "demo tenant exists with ALPHINTRA_DEMO_API_KEY"
        admin = session.exec(select(User).where(User.email == DEMO_ADMIN)).one()
    runtime.tenancy.create_api_key(tenant.id, admin.id, "demo", token=configured)
    return "demo tenant exists; ALPHINTRA_DEMO_API_KEY added as an admin key"
