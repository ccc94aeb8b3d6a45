"""Real-name authentication (实名认证, R7, 204): submit, review, level advanced.

Name and ID number are sensitive personal information (PIPL art. 28): sealed at rest, a keyed
hash to find duplicates, masked wherever shown. The ID image goes to a file store, checked by
its content, never by what the client claims it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridgate.accounts.files import FileStore, check_image
from gridgate.accounts.models import Account, RealnameApplication
from gridgate.errors import Conflict, InvalidRequest, NotFound
from gridgate.operators.audit import Actor, record
from gridgate.pii import mask_id_number, mask_name, validate_id_number
from gridgate.storage.crypto import SecretBox
from gridgate.storage.models import utcnow

__all__ = ["ApplicationView", "RealnameService"]

NAME = "realname.name"
ID_NUMBER = "realname.id_number"
MAX_NAME = 64


@dataclass(frozen=True, slots=True)
class ApplicationView:
    """An application as reviewers see it (name and ID number masked)."""

    id: int
    account_id: str
    status: str
    name: str
    id_number: str
    reason: str | None
    submitted_at: datetime
    decided_at: datetime | None
    reviewer: str | None


class RealnameService:
    """Submissions by customers and decisions by reviewers, in one transaction."""

    def __init__(self, session: AsyncSession, box: SecretBox, files: FileStore) -> None:
        self.session = session
        self.box = box
        self.files = files

    def _view(self, row: RealnameApplication) -> ApplicationView:
        return ApplicationView(
            id=row.id,
            account_id=row.account_id,
            status=row.status,
            name=mask_name(self.box.open(row.name_sealed, NAME)),
            id_number=mask_id_number(self.box.open(row.id_number_sealed, ID_NUMBER)),
            reason=row.reason,
            submitted_at=row.submitted_at,
            decided_at=row.decided_at,
            reviewer=row.reviewer,
        )

    async def latest(self, account_id: str) -> RealnameApplication | None:
        """The account's newest application."""
        rows = await self.session.scalars(
            select(RealnameApplication)
            .where(RealnameApplication.account_id == account_id)
            .order_by(RealnameApplication.submitted_at.desc(), RealnameApplication.id.desc())
        )
        return rows.first()

    async def submit(self, account: Account, name: str, id_number: str, image: bytes) -> None:
        """Store a pending application (one at a time; none after approval)."""
        name = name.strip()
        if not 1 <= len(name) <= MAX_NAME or any(ord(c) < 32 for c in name):
            raise InvalidRequest(f"name must have 1 to {MAX_NAME} characters", field="name")
        try:
            id_number = validate_id_number(id_number.strip())
        except ValueError as exc:
            raise InvalidRequest(str(exc), field="id_number") from None
        try:
            content_type = check_image(image)
        except ValueError as exc:
            raise InvalidRequest(str(exc), field="id_image") from None
        current = await self.latest(account.id)
        if current is not None and current.status in {"pending", "approved"}:
            raise Conflict(f"a real-name application is already {current.status}")
        ref = await self.files.put(image, content_type=content_type, owner=account.id)
        self.session.add(
            RealnameApplication(
                account_id=account.id,
                name_sealed=self.box.seal(name, NAME),
                id_number_sealed=self.box.seal(id_number, ID_NUMBER),
                id_number_hash=self.box.lookup_hash(id_number, ID_NUMBER),
                image_ref=ref,
                image_type=content_type,
                status="pending",
            )
        )
        await self.session.flush()

    async def applications(
        self, *, status: str | None, page: int, page_size: int
    ) -> tuple[list[ApplicationView], int]:
        """Applications for review, oldest first (the queue order)."""
        where = [RealnameApplication.status == status] if status else []
        total = await self.session.scalar(
            select(func.count()).select_from(RealnameApplication).where(*where)
        )
        rows = await self.session.scalars(
            select(RealnameApplication)
            .where(*where)
            .order_by(RealnameApplication.submitted_at, RealnameApplication.id)
            .offset((page - 1) * page_size)
            .limit(page_size)
        )
        return [self._view(row) for row in rows], int(total or 0)

    async def uploads(self, account_id: str) -> list[ApplicationView]:
        """Every application (uploaded materials) of an account, newest first."""
        rows = await self.session.scalars(
            select(RealnameApplication)
            .where(RealnameApplication.account_id == account_id)
            .order_by(RealnameApplication.submitted_at.desc())
        )
        return [self._view(row) for row in rows]

    async def decide(
        self, application_id: int, *, approve: bool, reason: str | None, actor: Actor
    ) -> ApplicationView:
        """Approve (the account becomes advanced) or reject with a reason; audited."""
        row = await self.session.get(RealnameApplication, application_id)
        if row is None:
            raise NotFound(f"application {application_id} does not exist")
        if row.status != "pending":
            raise Conflict(f"the application is already {row.status}")
        if not approve and not (reason and reason.strip()):
            raise InvalidRequest("a rejection needs a reason", field="reason")
        before = self._view(row)
        row.status = "approved" if approve else "rejected"
        row.reason = None if approve else (reason or "").strip()
        row.reviewer = actor.username
        row.decided_at = utcnow()
        if approve:
            account = await self.session.get(Account, row.account_id)
            if account is not None:
                account.level = 2
        await self.session.flush()
        after = self._view(row)
        await record(
            self.session,
            actor,
            "realname.approve" if approve else "realname.reject",
            "realname_application",
            str(application_id),
            before=_audit(before),
            after=_audit(after),
        )
        return after


def _audit(view: ApplicationView) -> dict[str, object]:
    return {
        "account_id": view.account_id,
        "status": view.status,
        "name": view.name,
        "id_number": view.id_number,
        "reason": view.reason,
        "reviewer": view.reviewer,
    }
