"""Back office (R8, 202): account search and the account 360 view.

Operators see personal data masked: the phone (138****5678), the e-mail address
(z***@example.com), the customer's name and address as marketing knows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridgate.accounts.bindings import BindingService
from gridgate.accounts.interfaces import CustomerDirectory
from gridgate.accounts.models import Account, Binding
from gridgate.accounts.profile import ProfileService, email_hash
from gridgate.accounts.realname import ApplicationView, RealnameService
from gridgate.accounts.schemas import (
    AccountSummaryOut,
    AccountViewOut,
    ApplicationOut,
    BindingOut,
    ChannelAccountOut,
    RealnameBrief,
    SubscriptionModel,
)
from gridgate.accounts.services import AccountService
from gridgate.errors import GridgateError, NotFound
from gridgate.pii import mask_address, mask_email, mask_name, mask_phone

__all__ = ["AccountFilter", "BackOfficeService", "application_out"]


@dataclass(frozen=True, slots=True)
class AccountFilter:
    """Which accounts to find; the binding conditions must all hold for one binding."""

    region: str | None = None
    meter_book: str | None = None
    bound_from: datetime | None = None
    bound_to: datetime | None = None
    phone: str | None = None
    customer_no: str | None = None
    level: int | None = None
    #: Normalized (:func:`gridgate.accounts.schemas.normalize_email`); found by its hash.
    email: str | None = None


def application_out(view: ApplicationView) -> ApplicationOut:
    """A real-name application as reviewers see it."""
    return ApplicationOut.model_validate(view, from_attributes=True)


def _binding_out(binding: Binding) -> BindingOut:
    return BindingOut(
        customer_no=binding.customer_no,
        bound_at=binding.bound_at,
        supply_region=binding.supply_region,
        meter_book=binding.meter_book,
    )


class BackOfficeService:
    """Account look-ups for operators inside one transaction."""

    def __init__(
        self,
        session: AsyncSession,
        *,
        accounts: AccountService,
        bindings: BindingService,
        realname: RealnameService,
        profiles: ProfileService,
        directory: CustomerDirectory,
    ) -> None:
        self.session = session
        self.accounts = accounts
        self.bindings = bindings
        self.realname = realname
        self.profiles = profiles
        self.directory = directory

    def _email(self, account: Account) -> str | None:
        email = self.profiles.email_of(account)
        return mask_email(email) if email is not None else None

    async def search(
        self, where: AccountFilter, *, page: int, page_size: int
    ) -> tuple[list[AccountSummaryOut], int]:
        """Accounts matching ``where``, newest first, and how many match in all."""
        query = select(Account)
        binding_filters = []
        if where.region:
            # Regions are paths (浙江省/杭州市/西湖区): a prefix or any level matches, and what
            # the operator typed matches as typed (a ``%`` or ``_`` is no wildcard).
            binding_filters.append(Binding.supply_region.contains(where.region, autoescape=True))
        if where.meter_book:
            binding_filters.append(Binding.meter_book == where.meter_book)
        if where.bound_from:
            binding_filters.append(Binding.bound_at >= where.bound_from)
        if where.bound_to:
            binding_filters.append(Binding.bound_at < where.bound_to)
        if where.customer_no:
            binding_filters.append(Binding.customer_no == where.customer_no)
        if binding_filters:
            matching = select(Binding.account_id).where(*binding_filters)
            query = query.where(Account.id.in_(matching))
        if where.level is not None:
            query = query.where(Account.level == where.level)
        if where.phone:
            query = query.where(Account.phone_hash == self.accounts.phone_hash(where.phone))
        if where.email:
            query = query.where(Account.email_hash == email_hash(self.accounts.box, where.email))
        total = await self.session.scalar(select(func.count()).select_from(query.subquery()))
        rows = list(
            await self.session.scalars(
                query.order_by(Account.created_at.desc(), Account.id)
                .offset((page - 1) * page_size)
                .limit(page_size)
            )
        )
        bound = await self._bindings([row.id for row in rows])
        items = [
            AccountSummaryOut(
                account_id=row.id,
                phone=mask_phone(self.accounts.phone_of(row)),
                username=row.username,
                email=self._email(row),
                level=row.level,
                status=row.status,
                created_at=row.created_at,
                bindings=[_binding_out(b) for b in bound[row.id]],
            )
            for row in rows
        ]
        return items, int(total or 0)

    async def _bindings(self, account_ids: list[str]) -> dict[str, list[Binding]]:
        found: dict[str, list[Binding]] = {a: [] for a in account_ids}
        if account_ids:
            rows = await self.session.scalars(
                select(Binding)
                .where(Binding.account_id.in_(account_ids))
                .order_by(Binding.bound_at)
            )
            for row in rows:
                found[row.account_id].append(row)
        return found

    async def _customer(self, binding: Binding) -> BindingOut:
        """A binding with the customer's masked name, voltage and masked address."""
        out = _binding_out(binding)
        try:
            record = await self.directory.customer(binding.customer_no)
        except GridgateError:
            return out  # marketing unreachable: the rest of the view still helps
        if record is not None:
            out.name = mask_name(record.name)
            out.voltage = record.voltage
            out.address = mask_address(record.address)
        return out

    async def view(self, account_id: str) -> AccountViewOut:
        """Basic information from marketing, channel accounts, level, bindings, real-name,
        uploads, subscriptions (the service trajectory is the log service's)."""
        account = await self.accounts.get(account_id)
        if account is None:
            raise NotFound("no such account")
        bindings = [await self._customer(b) for b in await self.bindings.bindings(account_id)]
        uploads = await self.realname.uploads(account_id)
        channel_accounts = await self.accounts.channel_accounts(account_id)
        subscriptions = await self.bindings.subscriptions(account_id)
        return AccountViewOut(
            account_id=account.id,
            phone=mask_phone(self.accounts.phone_of(account)),
            username=account.username,
            email=self._email(account),
            level=account.level,
            status=account.status,
            created_at=account.created_at,
            attributes=dict(account.attributes or {}),
            channel_accounts=[
                ChannelAccountOut.model_validate(c, from_attributes=True) for c in channel_accounts
            ],
            bindings=bindings,
            realname=RealnameBrief(status=uploads[0].status if uploads else "none"),
            uploads=[application_out(u) for u in uploads],
            subscriptions=[
                SubscriptionModel.model_validate(s, from_attributes=True) for s in subscriptions
            ],
        )

    async def uploads(self, account_id: str) -> list[ApplicationOut]:
        """Real-name applications of the account (masked), newest first."""
        return [application_out(u) for u in await self.realname.uploads(account_id)]

    async def subscriptions(self, account_id: str) -> list[SubscriptionModel]:
        """Bill and outage notices per 户号 and channel."""
        items = await self.bindings.subscriptions(account_id)
        return [SubscriptionModel.model_validate(i, from_attributes=True) for i in items]
