"""户号 binding (R7, 203) and notice subscriptions.

A customer proves control of a 户号 either with an SMS code sent to the phone the marketing
system has on file for it, or with the 户号's service password; binding raises the account from
registered (0) to primary (1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridgate.accounts.directory import CustomerDirectory, CustomerRecord
from gridgate.accounts.models import Account, Binding, ServicePasswordLock, Subscription
from gridgate.accounts.services import MAX_BOUND_IN_TOKEN
from gridgate.accounts.sms import SmsCodes
from gridgate.errors import BadCredentials, Conflict, InvalidRequest, Locked, NotFound
from gridgate.pii import mask_phone
from gridgate.storage.models import utcnow

__all__ = ["BindingService", "Challenge", "SubscriptionItem"]

SERVICE_PASSWORD_FAILURES = 5
SERVICE_PASSWORD_LOCK = timedelta(minutes=30)
TOPICS = frozenset({"bill", "outage"})
MAX_BINDINGS = MAX_BOUND_IN_TOKEN


@dataclass(frozen=True, slots=True)
class Challenge:
    """A binding challenge sent: where (masked) and for how long."""

    masked_phone: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class SubscriptionItem:
    """One subscription (api.md: customer_no, topic, channel, enabled)."""

    customer_no: str
    topic: str
    channel: str
    enabled: bool


class BindingService:
    """Binding, unbinding and subscriptions inside one transaction."""

    def __init__(
        self,
        session: AsyncSession,
        directory: CustomerDirectory,
        sms: SmsCodes,
        *,
        allow_shared: bool = True,
    ) -> None:
        self.session = session
        self.directory = directory
        self.sms = sms
        self.allow_shared = allow_shared

    async def _record(self, customer_no: str) -> CustomerRecord:
        if not (customer_no.isascii() and customer_no.isdigit() and len(customer_no) == 10):
            raise InvalidRequest("a 户号 has 10 digits", field="customer_no")
        record = await self.directory.customer(customer_no)
        if record is None:
            raise NotFound("no such 户号")
        return record

    async def challenge(self, customer_no: str, *, client_ip: str) -> Challenge:
        """Send a binding code to the 户号's reserved phone."""
        record = await self._record(customer_no)
        expires_in, _ = await self.sms.send(record.reserved_phone, "bind", client_ip=client_ip)
        return Challenge(mask_phone(record.reserved_phone), expires_in)

    async def bindings(self, account_id: str) -> list[Binding]:
        """The account's bindings, oldest first."""
        rows = await self.session.scalars(
            select(Binding).where(Binding.account_id == account_id).order_by(Binding.bound_at)
        )
        return list(rows)

    async def bind(
        self,
        account: Account,
        customer_no: str,
        *,
        sms_code: str | None = None,
        service_password: str | None = None,
    ) -> Binding:
        """Bind after proof by SMS code or service password; raises the level to primary."""
        if (sms_code is None) == (service_password is None):
            raise InvalidRequest("give either sms_code or service_password", field="sms_code")
        record = await self._record(customer_no)
        mine = (
            await self.session.scalars(
                select(Binding).where(
                    Binding.account_id == account.id, Binding.customer_no == customer_no
                )
            )
        ).first()
        if mine is None and len(await self.bindings(account.id)) >= MAX_BINDINGS:
            # Tokens carry the bound 户号 for data scope; beyond this they would not fit.
            raise Conflict(f"an account can bind at most {MAX_BINDINGS} 户号")
        if not self.allow_shared and mine is None:
            taken = await self.session.scalar(
                select(func.count()).select_from(Binding).where(Binding.customer_no == customer_no)
            )
            if taken:
                raise Conflict("this 户号 is already bound to another account")
        if sms_code is not None:
            await self.sms.verify(record.reserved_phone, "bind", sms_code)
        else:
            assert service_password is not None  # noqa: S101 - checked above
            await self._check_service_password(customer_no, service_password)
        if mine is None:
            mine = Binding(
                account_id=account.id,
                customer_no=customer_no,
                supply_region=record.supply_region,
                meter_book=record.meter_book,
            )
            self.session.add(mine)
        account.level = max(account.level, 1)
        await self.session.flush()
        return mine

    async def _check_service_password(self, customer_no: str, password: str) -> None:
        lock = await self.session.get(ServicePasswordLock, customer_no)
        now = utcnow()
        if lock is not None and lock.locked_until is not None and lock.locked_until > now:
            retry = int((lock.locked_until - now).total_seconds()) + 1
            raise Locked("too many wrong service passwords for this 户号", retry_after=retry)
        if await self.directory.service_password_matches(customer_no, password):
            if lock is not None:
                lock.failures, lock.locked_until = 0, None
            return
        if lock is None:
            lock = ServicePasswordLock(customer_no=customer_no, failures=0)
            self.session.add(lock)
        lock.failures += 1
        if lock.failures >= SERVICE_PASSWORD_FAILURES:
            lock.failures, lock.locked_until = 0, now + SERVICE_PASSWORD_LOCK
        await self.session.flush()
        raise BadCredentials("the service password is wrong")

    async def unbind(self, account: Account, customer_no: str) -> None:
        """Unbind one of the account's own 户号 (another account's cannot be touched)."""
        result = await self.session.execute(
            delete(Binding).where(
                Binding.account_id == account.id, Binding.customer_no == customer_no
            )
        )
        if not getattr(result, "rowcount", 0):
            raise NotFound("this 户号 is not bound to your account")
        await self.session.execute(
            delete(Subscription).where(
                Subscription.account_id == account.id, Subscription.customer_no == customer_no
            )
        )
        if account.level == 1 and not await self.bindings(account.id):
            account.level = 0

    async def subscriptions(self, account_id: str) -> list[SubscriptionItem]:
        """The account's notice subscriptions."""
        rows = await self.session.scalars(
            select(Subscription)
            .where(Subscription.account_id == account_id)
            .order_by(Subscription.customer_no, Subscription.topic, Subscription.channel)
        )
        return [SubscriptionItem(r.customer_no, r.topic, r.channel, r.enabled) for r in rows]

    async def replace_subscriptions(
        self, account_id: str, items: list[SubscriptionItem]
    ) -> list[SubscriptionItem]:
        """Replace every subscription; only bound 户号 may be subscribed."""
        bound = {b.customer_no for b in await self.bindings(account_id)}
        for index, item in enumerate(items):
            if item.topic not in TOPICS:
                raise InvalidRequest("topic must be bill or outage", field=f"items.{index}.topic")
            if item.customer_no not in bound:
                raise InvalidRequest(
                    "only a bound 户号 can be subscribed", field=f"items.{index}.customer_no"
                )
        await self.session.execute(
            delete(Subscription).where(Subscription.account_id == account_id)
        )
        unique = {(i.customer_no, i.topic, i.channel): i for i in items}
        for item in unique.values():
            self.session.add(
                Subscription(
                    account_id=account_id,
                    customer_no=item.customer_no,
                    topic=item.topic,
                    channel=item.channel,
                    enabled=item.enabled,
                )
            )
        await self.session.flush()
        return await self.subscriptions(account_id)
