"""The demo catalog: the three demo channels, the business systems behind api.md's demo
interfaces, those interfaces, and the components each channel exposes."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BUSINESS_SYSTEMS",
    "CHANNELS",
    "COMPONENTS",
    "FIELD_RULES",
    "FUNCTION_INTERFACES",
    "INTERFACES",
    "MENUS",
    "DemoInterface",
]

#: (code, name, type)
CHANNELS: list[tuple[str, str, str]] = [
    ("app", "网上国网 App", "app"),
    ("wechat", "国网电力微信公众号", "wechat"),
    ("web95598", "95598 网站", "web"),
]

#: (code, name, nominal port). Demo systems really run on free ports and register themselves
#: in the service center; the catalog keeps their identity and credentials (R3).
BUSINESS_SYSTEMS: list[tuple[str, str, int]] = [
    ("accounts", "统一账户服务", 9101),
    ("permissions", "统一权限服务", 9102),
    ("marketing", "营销业务系统", 9103),
    ("billing", "电费核算系统", 9104),
    ("payment", "缴费系统", 9105),
    ("notices", "停电公告系统", 9106),
    ("consultation", "客户咨询系统", 9107),
]


@dataclass(frozen=True, slots=True)
class DemoInterface:
    """One interface of api.md as the demo catalog registers it."""

    code: str
    name: str
    method: str
    path: str
    provider: str
    min_level: int = 0
    idempotent: bool | None = None
    #: Where the request names a 户号 the caller must have bound (data scope).
    customer_scope: str | None = None

    @property
    def target_service(self) -> str:
        """Demo providers register under their own code in the service center."""
        return self.provider


INTERFACES: list[DemoInterface] = [
    DemoInterface("sms.send", "发送短信验证码", "POST", "/api/v1/sms/codes", "accounts"),
    DemoInterface("account.register", "注册统一账户", "POST", "/api/v1/accounts", "accounts"),
    DemoInterface("auth.token", "登录与令牌", "POST", "/api/v1/auth/token", "accounts"),
    DemoInterface("auth.logout", "退出登录", "POST", "/api/v1/auth/logout", "accounts"),
    DemoInterface("me.read", "我的账户", "GET", "/api/v1/me", "accounts"),
    DemoInterface("me.menus", "我的菜单", "GET", "/api/v1/me/menus", "permissions"),
    DemoInterface("me.profile_read", "我的资料", "GET", "/api/v1/me/profile", "accounts"),
    # A JSON merge patch gives the same result however often it is applied.
    DemoInterface(
        "me.profile_update",
        "修改资料",
        "PATCH",
        "/api/v1/me/profile",
        "accounts",
        idempotent=True,
    ),
    DemoInterface(
        "me.binding_challenge", "户号绑定验证", "POST", "/api/v1/me/bindings/challenge", "accounts"
    ),
    DemoInterface("me.binding_create", "绑定户号", "POST", "/api/v1/me/bindings", "accounts"),
    DemoInterface(
        "me.binding_delete",
        "解绑户号",
        "DELETE",
        "/api/v1/me/bindings/{customer_no}",
        "accounts",
        idempotent=True,
    ),
    DemoInterface("me.realname_submit", "提交实名认证", "POST", "/api/v1/me/realname", "accounts"),
    DemoInterface("me.realname_read", "实名认证状态", "GET", "/api/v1/me/realname", "accounts"),
    DemoInterface(
        "me.subscriptions_read", "我的订阅", "GET", "/api/v1/me/subscriptions", "accounts"
    ),
    DemoInterface(
        "me.subscriptions_update",
        "修改订阅",
        "PUT",
        "/api/v1/me/subscriptions",
        "accounts",
        idempotent=True,
    ),
    DemoInterface(
        "customer.read",
        "户号信息",
        "GET",
        "/api/v1/customers/{customer_no}",
        "marketing",
        1,
        customer_scope="path:customer_no",
    ),
    DemoInterface(
        "customer.bills",
        "电费账单",
        "GET",
        "/api/v1/customers/{customer_no}/bills",
        "billing",
        1,
        customer_scope="path:customer_no",
    ),
    DemoInterface(
        "customer.usage",
        "日用电量",
        "GET",
        "/api/v1/customers/{customer_no}/usage",
        "billing",
        1,
        customer_scope="path:customer_no",
    ),
    # A payment is never retried by the gateway: idempotent stays false.
    DemoInterface(
        "payment.create",
        "电费缴纳",
        "POST",
        "/api/v1/payments",
        "payment",
        1,
        False,
        customer_scope="body:customer_no",
    ),
    DemoInterface("notice.outages", "停电公告", "GET", "/api/v1/notices/outages", "notices"),
    DemoInterface(
        "consultation.create", "业务咨询", "POST", "/api/v1/consultations", "consultation"
    ),
]

#: (code, name, kind, min_level): registered for every demo channel (R6).
COMPONENTS: list[tuple[str, str, str, int]] = [
    ("outage_notices", "停电公告", "function", 0),
    ("consultation", "业务咨询", "function", 0),
    ("binding", "户号绑定", "function", 0),
    ("realname", "实名认证", "function", 0),
    ("bill_query", "电费查询", "function", 1),
    ("usage_query", "用电量查询", "function", 1),
    ("payment", "电费缴纳", "function", 1),
]

#: The demo data-control policy (api.md / issue 6): primary accounts see a customer's name,
#: address and phone masked, advanced ones whole; bills show the address masked below advanced.
#: (interface, path, action, below_level)
FIELD_RULES: list[tuple[str, str, str, int]] = [
    ("customer.read", "name", "mask:name", 2),
    ("customer.read", "address", "mask:address", 2),
    ("customer.read", "reserved_phone", "mask:phone", 2),
    ("customer.bills", "items[].address", "mask:address", 2),
    ("customer.bills", "address", "mask:address", 2),
]

#: The demo app menus of every channel: (code, name, parent, min_level, functions).
MENUS: list[tuple[str, str, str | None, int, list[tuple[str, str, int]]]] = [
    ("home", "首页", None, 0, [("outages", "停电公告", 0), ("consult", "业务咨询", 0)]),
    ("account", "我的户号", None, 0, [("bind", "绑定户号", 0), ("realname", "实名认证", 0)]),
    ("bills", "电费账单", "account", 1, [("bill_query", "账单查询", 1), ("usage", "用电量", 1)]),
    ("pay", "电费缴纳", "account", 1, [("pay_bill", "缴纳电费", 1)]),
    ("profile", "户号详情", "account", 2, [("full_profile", "完整户主信息", 2)]),
]

#: The interfaces each demo function covers (function code → interface codes): on its channel
#: the gateway asks at least the function's level for them. The levels agree with the
#: interfaces' own, so the demo behaves as without them; raise a function's level and the
#: gateway follows. ``full_profile`` covers nothing: below level 2 ``customer.read`` answers
#: with masked fields rather than not at all.
FUNCTION_INTERFACES: dict[str, list[str]] = {
    "outages": ["notice.outages"],
    "consult": ["consultation.create"],
    "bind": ["me.binding_challenge", "me.binding_create"],
    "realname": ["me.realname_submit", "me.realname_read"],
    "bill_query": ["customer.bills"],
    "usage": ["customer.usage"],
    "pay_bill": ["payment.create"],
}
