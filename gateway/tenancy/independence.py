"""Separation of duties: is an approver independent of the person whose work it approves?

Not when it is that person; when that person made the approver's user within the approval
window (a tenant admin creating a colleague to approve its own strategy); or when the approver
acts through an API key that person made (whoever holds a key acts as its user, whenever it
was made). The rule serves strategy approvals (gateway/strategies/service.py) and role grants
that need a second person (gateway/tenancy/service.py).
"""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, select

from gateway.auth.principal import Principal
from gateway.db import utcnow
from gateway.tenancy.models import ApiKey, User


def independence_problem(session: Session, approver: Principal, other_user_id: str,
                         window: timedelta) -> str | None:
    """Why `approver` is not independent of `other_user_id` (a phrase), or None."""
    if approver.user_id == other_user_id:
        return "is the same user"
    user = session.exec(select(User).where(User.id == approver.user_id)).first()
    if (user is not None and user.created_by == other_user_id
            and user.created_at > utcnow() - window):
        return (f"was made by that user less than {window.total_seconds() / 3600:g} h ago "
                "(the approval window)")
    if approver.api_key_id is not None:
        key = session.exec(select(ApiKey).where(ApiKey.id == approver.api_key_id)).first()
        if key is not None and key.created_by == other_user_id:
            return "acts through an API key that user made"
    return None
