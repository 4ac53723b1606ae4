"""Federations: create, join (opt in), leave, read; and who takes part in a training run.

Visibility is decided here and only here: every read joins the caller's own FederationMember
row (tenant-filtered by the session like any tenant-owned row) with `opted_in` true, so a
tenant sees exactly the federations it is an opted-in member of; anything else is
FEDERATION_NOT_FOUND. Joining needs only the federation's id: an id (a random UUID) is the
invitation, which a member's administrator hands to another institution out of band.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from gateway.auth.principal import Principal
from gateway.db import Database, utcnow
from gateway.errors import Conflict, InvalidInput
from gateway.federated.data import FeatureSpec
from gateway.federated.errors import FederationNameInvalid, FederationNotFound, FederationTooSmall
from gateway.federated.models import Federation, FederationMember
from gateway.pagination import Page, keyset_page
from gateway.tenancy.models import Tenant

DEFAULT_MAX_PAGE = 100


@dataclass(frozen=True)
class Participant:
    tenant_id: str
    slug: str  # the key a participant's data are derived by (gateway/federated/data.py)


class FederationService:
    """Stateless over the database: built where needed (resolvers, the job kind)."""

    def __init__(self, db: Database, max_page_size: int = DEFAULT_MAX_PAGE) -> None:
        self.db = db
        self.max_page_size = max_page_size

    @staticmethod
    def _visible(session: Session, federation_id: str) -> Federation | None:
        return session.exec(
            select(Federation).join(FederationMember, col(FederationMember.federation_id) == Federation.id)
            .where(Federation.id == federation_id, col(FederationMember.opted_in).is_(True))).first()

    # -- reads ------------------------------------------------------------------------------
    def get(self, tenant_id: str, federation_id: str) -> Federation:
        with self.db.tenant_session(tenant_id) as session:
            found = self._visible(session, federation_id)
        if found is None:
            raise FederationNotFound(f"no federation {federation_id}")
        return found

    def list(self, tenant_id: str, *, first: int, after: str | None = None) -> Page[Federation]:
        stmt = (select(Federation)
                .join(FederationMember, col(FederationMember.federation_id) == Federation.id)
                .where(col(FederationMember.opted_in).is_(True)))
        return keyset_page(self.db, tenant_id, stmt, Federation, first=first, after=after,
                           max_page_size=self.max_page_size)

    def memberships(self, tenant_id: str, federation_ids: list[str]) -> dict[str, FederationMember]:
        """The caller's own membership rows, by federation."""
        with self.db.tenant_session(tenant_id) as session:
            rows = session.exec(select(FederationMember)
                                .where(col(FederationMember.federation_id).in_(federation_ids))).all()
        return {m.federation_id: m for m in rows}

    def member_counts(self, tenant_id: str, federation_ids: list[str]) -> dict[str, int]:
        """Opted-in members of the federations the caller can see (a count, never who)."""
        with self.db.tenant_session(tenant_id) as session:
            visible = [f for f in federation_ids if self._visible(session, f) is not None]
        if not visible:
            return {}
        # Counting other tenants' membership rows is the platform's own work.
        with self.db.system_session() as session:
            rows = session.exec(
                select(FederationMember.federation_id, func.count())
                .where(col(FederationMember.federation_id).in_(visible),
                       col(FederationMember.opted_in).is_(True))
                .group_by(FederationMember.federation_id)).all()
        return {federation_id: int(count) for federation_id, count in rows}

    # -- writes -----------------------------------------------------------------------------
    def create(self, principal: Principal, name: str, *, spec: FeatureSpec | None = None,
               idempotency_key: str | None = None) -> Federation:
        """A new federation with the creating tenant as its first (opted-in) member."""
        name = (name or "").strip()
        if not 1 <= len(name) <= 200:
            raise FederationNameInvalid("name must be 1 to 200 characters")
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 128:
            raise InvalidInput("idempotencyKey must be 1 to 128 characters", code="IDEMPOTENCY_KEY_INVALID")
        spec_data = (spec or FeatureSpec()).to_dict()
        with self.db.tenant_session(principal.tenant_id) as session:
            if idempotency_key is not None:
                existing = self._by_key(session, principal.tenant_id, idempotency_key)
                if existing is not None:
                    return self._same(existing, name, spec_data)
            federation = Federation(name=name, feature_spec=spec_data,
                                    created_by_tenant_id=principal.tenant_id,
                                    created_by_user_id=principal.user_id, idempotency_key=idempotency_key)
            try:
                session.add(federation)
                session.flush()  # the member row's foreign key needs the federation first
                session.add(FederationMember(federation_id=federation.id, tenant_id=principal.tenant_id))
                session.commit()
            except IntegrityError:
                session.rollback()  # a concurrent request with the same key won
                existing = self._by_key(session, principal.tenant_id, idempotency_key or "")
                if existing is None:
                    raise
                return self._same(existing, name, spec_data)
        return federation

    @staticmethod
    def _by_key(session: Session, tenant_id: str, key: str) -> Federation | None:
        return session.exec(select(Federation).where(Federation.created_by_tenant_id == tenant_id,
                                                     Federation.idempotency_key == key)).first()

    @staticmethod
    def _same(existing: Federation, name: str, spec: dict[str, Any]) -> Federation:
        if existing.name != name or existing.feature_spec != spec:
            raise Conflict("idempotencyKey was used for a different request", code="IDEMPOTENCY_KEY_REUSED")
        return existing

    def join(self, principal: Principal, federation_id: str) -> Federation:
        """Opt the caller's tenant in (again); the id is the invitation."""
        now = utcnow()
        with self.db.tenant_session(principal.tenant_id) as session:
            federation = session.get(Federation, federation_id)
            if federation is None:
                raise FederationNotFound(f"no federation {federation_id}")
            member = session.exec(select(FederationMember)
                                  .where(FederationMember.federation_id == federation_id)).first()
            if member is None:
                session.add(FederationMember(federation_id=federation_id, tenant_id=principal.tenant_id))
            elif not member.opted_in:
                member.opted_in, member.joined_at, member.left_at, member.updated_at = True, now, None, now
                session.add(member)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()  # joined twice at once: the other request's row stands
        return federation

    def leave(self, principal: Principal, federation_id: str) -> FederationMember:
        with self.db.tenant_session(principal.tenant_id) as session:
            member = session.exec(select(FederationMember)
                                  .where(FederationMember.federation_id == federation_id,
                                         col(FederationMember.opted_in).is_(True))).first()
            if member is None:
                raise FederationNotFound(f"no federation {federation_id}")
            now = utcnow()
            member.opted_in, member.left_at, member.updated_at = False, now, now
            session.add(member)
            session.commit()
            session.refresh(member)
        return member

    # -- training -------------------------------------------------------------------------
    def participants(self, tenant_id: str, federation_id: str) -> tuple[Federation, list[Participant]]:
        """The federation (the caller must be an opted-in member) and its opted-in members in
        joining order; FEDERATION_TOO_SMALL below two."""
        federation = self.get(tenant_id, federation_id)
        with self.db.system_session() as session:
            rows = session.exec(
                select(Tenant.id, Tenant.slug)
                .join(FederationMember, col(FederationMember.tenant_id) == Tenant.id)
                .where(FederationMember.federation_id == federation_id,
                       col(FederationMember.opted_in).is_(True), col(Tenant.active).is_(True))
                .order_by(col(FederationMember.joined_at), col(Tenant.id))).all()
        members = [Participant(tenant, slug) for tenant, slug in rows]
        if len(members) < 2:
            raise FederationTooSmall(
                f"federation {federation.name!r} has {len(members)} opted-in member; federated "
                "training needs at least two (share the federation's id so another tenant can join)")
        return federation, members

    def check_trainable(self, tenant_id: str, federation_id: str) -> None:
        """Raise FEDERATION_NOT_FOUND or FEDERATION_TOO_SMALL before a training job is queued."""
        self.participants(tenant_id, federation_id)
