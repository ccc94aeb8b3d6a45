"""户号 binding (R7, 203) and notice subscriptions.

A customer proves control of a 户号 either with an SMS code sent to the phone the marketing
system has on file for it, or with the 户号's service password; binding raises the account from
registered (0) to primary (1).

Service passwords are six digits, so they are guarded on every side (ASVS 2.2.1): per 户号
(five failures, then one try per 30 minutes), and across 户号 per account, per device (the
sign-in session) and per client address, with waits that grow per failure. The reserved phone
hears of failed and successful service-password bindings. Locking a 户号's service password
never locks its owner out: the SMS code to the reserved phone still binds. And no answer tells
whether a 户号 exists: an unknown one is challenged with a stable decoy phone (the SMS is not
sent) and its service password is simply wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridgate.accounts.directory import CustomerDirectory, CustomerRecord
from gridgate.accounts.models import Account, Binding, Subscription
from gridgate.accounts.services import MAX_BOUND_IN_TOKEN
from gridgate.accounts.sms import SmsCodeInvalid, SmsCodes, SmsNotices
from gridgate.addresses import client_bucket
from gridgate.attempts import AttemptStore, Backoff
from gridgate.errors import (
    BadCredentials,
    Conflict,
    InvalidRequest,
    Locked,
    NotFound,
    TooManyFailures,
    UpstreamUnavailable,
)
from gridgate.pii import mask_phone
from gridgate.settings import Settings
from gridgate.storage.crypto import SecretBox

__all__ = ["BindingLimits", "BindingService", "Challenge", "SubscriptionItem"]

#: Wrong service passwords for one 户号 (from anyone) before each further try waits 30 min.
SERVICE_PASSWORD_FAILURES = 5
SERVICE_PASSWORD_LOCK_S = 1800
TOPICS = frozenset({"bill", "outage"})
MAX_BINDINGS = MAX_BOUND_IN_TOKEN
#: Look-up hash purpose of the decoy phone of an unknown 户号.
_DECOY = "binding.decoy_phone"
#: Mainland mobile prefixes a decoy phone starts with, so its masked form looks like any other.
_MOBILE_PREFIXES = (
    *(f"13{d}" for d in range(10)),
    *("150", "151", "152", "153", "155", "156", "157", "158", "159"),
    *("166", "175", "176", "177", "178"),
    *(f"18{d}" for d in range(10)),
    *("198", "199"),
)
FAILED_NOTICE = (
    "【网上国网】有人用错误的服务密码尝试绑定您尾号{tail}的户号。如非您本人操作，"
    "请勿向他人透露服务密码；您仍可凭本手机收到的短信验证码绑定。"
)
BOUND_NOTICE = (
    "【网上国网】您尾号{tail}的户号已凭服务密码绑定到一个网上国网账户。"
    "如非您本人操作，请致电 95598。"
)


@dataclass(frozen=True, slots=True)
class BindingLimits:
    """Service-password failures across 户号 (settings ``accounts_binding_*``)."""

    free_failures: int = 5
    free_failures_per_address: int = 20
    backoff_base_s: float = 60
    backoff_cap_s: float = 3600
    window_s: float = 86_400
    notice_interval_s: float = 86_400

    @classmethod
    def from_settings(cls, settings: Settings) -> BindingLimits:
        """The limits the settings name."""
        return cls(
            free_failures=settings.accounts_binding_free_failures,
            free_failures_per_address=settings.accounts_binding_free_failures_per_address,
            backoff_base_s=settings.accounts_binding_backoff_base_s,
            backoff_cap_s=settings.accounts_binding_backoff_cap_s,
            window_s=settings.accounts_binding_failure_window_s,
            notice_interval_s=settings.accounts_binding_notice_interval_s,
        )

    def _rule(self, key: str, free: int) -> Backoff:
        return Backoff(key, free, self.backoff_base_s, self.backoff_cap_s, self.window_s)

    def across(self, account_id: str, session_id: str | None, client_ip: str) -> list[Backoff]:
        """The caller's rules: its account, its device (sign-in session), its address."""
        rules = [self._rule(f"bind:account:{account_id}", self.free_failures)]
        if session_id:
            rules.append(self._rule(f"bind:device:{session_id}", self.free_failures))
        if client_ip:
            rules.append(
                self._rule(
                    f"bind:address:{client_bucket(client_ip)}", self.free_failures_per_address
                )
            )
        return rules

    def of_customer(self, customer_no: str) -> Backoff:
        """The 户号's own rule, whoever tries."""
        return Backoff(
            f"bind:customer:{customer_no}",
            SERVICE_PASSWORD_FAILURES,
            SERVICE_PASSWORD_LOCK_S,
            SERVICE_PASSWORD_LOCK_S,
            self.window_s,
        )


def _tail(customer_no: str) -> str:
    return customer_no[-4:]


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
        attempts: AttemptStore,
        notices: SmsNotices,
        box: SecretBox,
        limits: BindingLimits | None = None,
        allow_shared: bool = True,
    ) -> None:
        self.session = session
        self.directory = directory
        self.sms = sms
        self.attempts = attempts
        self.notices = notices
        self.box = box
        self.limits = limits or BindingLimits()
        self.allow_shared = allow_shared

    @staticmethod
    def _check_format(customer_no: str) -> None:
        if not (customer_no.isascii() and customer_no.isdigit() and len(customer_no) == 10):
            raise InvalidRequest("a 户号 has 10 digits", field="customer_no")

    def decoy_phone(self, customer_no: str) -> str:
        """The reserved phone an unknown 户号 seems to have: plausible, and the same on every
        call (a keyed hash of the 户号), so that asking twice gives nothing away."""
        digest = int(self.box.lookup_hash(customer_no, _DECOY), 16)
        prefix = _MOBILE_PREFIXES[digest % len(_MOBILE_PREFIXES)]
        return f"{prefix}{(digest // len(_MOBILE_PREFIXES)) % 100_000_000:08d}"

    async def _phone_for_code(self, customer_no: str) -> tuple[CustomerRecord | None, str]:
        """The 户号's record and where its codes go: the reserved phone, or the decoy."""
        self._check_format(customer_no)
        record = await self.directory.customer(customer_no)
        phone = record.reserved_phone if record is not None else self.decoy_phone(customer_no)
        return record, phone

    async def challenge(self, customer_no: str, *, client_ip: str, holder: str) -> Challenge:
        """Send a binding code, for the account ``holder`` only, to the 户号's reserved phone.

        An unknown 户号 gets the same answer with its decoy phone, and the same limits; only
        the SMS is not sent.
        """
        record, phone = await self._phone_for_code(customer_no)
        expires_in, _ = await self.sms.send(
            phone, "bind", client_ip=client_ip, holder=holder, deliver=record is not None
        )
        return Challenge(mask_phone(phone), expires_in)

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
        session_id: str | None = None,
        client_ip: str = "",
    ) -> Binding:
        """Bind after proof by SMS code or service password; raises the level to primary.

        ``session_id`` (the caller's device) and ``client_ip`` count service-password failures
        beside the account. Nothing is said about the 户号 before the proof: an unknown one
        fails its proof as a wrong one does.
        """
        if (sms_code is None) == (service_password is None):
            raise InvalidRequest("give either sms_code or service_password", field="sms_code")
        self._check_format(customer_no)
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
        record: CustomerRecord | None
        if sms_code is not None:
            record, phone = await self._phone_for_code(customer_no)
            await self.sms.verify(phone, "bind", sms_code, holder=account.id)
            if record is None:  # a decoy's code was never sent: nobody can hold it
                raise SmsCodeInvalid
        else:
            assert service_password is not None  # noqa: S101 - checked above
            record = await self._check_service_password(
                account.id, customer_no, service_password, session_id, client_ip
            )
        # Only after the proof: whether a 户号 is bound elsewhere is its owner's business.
        if not self.allow_shared and mine is None:
            taken = await self.session.scalar(
                select(func.count()).select_from(Binding).where(Binding.customer_no == customer_no)
            )
            if taken:
                raise Conflict("this 户号 is already bound to another account")
        if mine is not None:
            account.level = max(account.level, 1)
            await self.session.flush()
            return mine
        mine = Binding(
            account_id=account.id,
            customer_no=customer_no,
            supply_region=record.supply_region,
            meter_book=record.meter_book,
        )
        self.session.add(mine)
        account.level = max(account.level, 1)
        await self.session.flush()
        if service_password is not None:
            self.notices.send_later(
                record.reserved_phone,
                BOUND_NOTICE.format(tail=_tail(customer_no)),
                purpose="bind_notice",
                once_per=(f"bound:{customer_no}:{account.id}", self.limits.notice_interval_s),
            )
        return mine

    async def _check_service_password(
        self,
        account_id: str,
        customer_no: str,
        password: str,
        session_id: str | None,
        client_ip: str,
    ) -> CustomerRecord:
        """The 户号's record if ``password`` is its service password; every failure counted.

        Attempts are counted before marketing is asked, so that concurrent guesses cannot
        pass the counts: first across 户号 (429 ``auth.too_many_failures``), then for the 户号
        (423 ``auth.locked``). A right password gives the caller its attempt back and clears
        the 户号's count; a wrong one tells the reserved phone (at most once per interval).
        """
        across = self.limits.across(account_id, session_id, client_ip)
        wait = await self.attempts.attempt(across)
        if wait > 0:
            raise TooManyFailures(
                "too many wrong service passwords; try again later",
                retry_after=math.ceil(wait),
            )
        own = self.limits.of_customer(customer_no)
        wait = await self.attempts.attempt([own])
        if wait > 0:
            # Nothing was checked: no failure of the caller's (the 户号's lock says enough).
            await self.attempts.refund([rule.key for rule in across])
            raise Locked(
                "too many wrong service passwords for this 户号; bind with an SMS code instead",
                retry_after=math.ceil(wait),
            )
        try:
            record = await self.directory.customer(customer_no)
            # Asked for an unknown 户号 too (marketing says no): the same calls either way.
            matches = await self.directory.service_password_matches(customer_no, password)
        except UpstreamUnavailable:
            # Nothing was checked: the attempt was no failure.
            await self.attempts.refund([rule.key for rule in [*across, own]])
            raise
        if record is None or not matches:
            if record is not None:
                self.notices.send_later(
                    record.reserved_phone,
                    FAILED_NOTICE.format(tail=_tail(customer_no)),
                    purpose="bind_notice",
                    once_per=(f"bind-failed:{customer_no}", self.limits.notice_interval_s),
                )
            raise BadCredentials("the service password is wrong")
        await self.attempts.refund([rule.key for rule in across])
        await self.attempts.reset([own.key])
        return record

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
