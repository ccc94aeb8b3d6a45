"""Seeds the demo catalog and operator on an empty database and writes ``DIR/demo.json``."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridgate.catalog.models import Channel
from gridgate.catalog.schemas import (
    Authorizations,
    BusinessSystemCreate,
    ChannelCreate,
    ComponentCreate,
    InterfaceCreate,
)
from gridgate.catalog.services import CatalogService
from gridgate.demo.catalog import (
    BUSINESS_SYSTEMS,
    CHANNELS,
    COMPONENTS,
    FIELD_RULES,
    FUNCTION_INTERFACES,
    INTERFACES,
    MENUS,
)
from gridgate.demo.data import DemoData
from gridgate.operators.audit import Actor
from gridgate.operators.models import Operator
from gridgate.operators.services import OperatorService
from gridgate.permissions.schemas import FieldRuleIn, FunctionIn, MenuIn
from gridgate.permissions.services import PermissionService
from gridgate.runtime import Runtime
from gridgate.settings import write_private

__all__ = ["DEMO_FILE", "demo_passwords", "read_demo_file", "seed_demo", "write_demo_file"]

DEMO_FILE = "demo.json"
SEED_ACTOR = Actor(username="system:demo-seed")


#: How many demo customers demo.json lists (the rest are in the marketing system).
PUBLISHED_CUSTOMERS = 5


async def seed_demo(runtime: Runtime, data: DemoData) -> dict[str, Any] | None:
    """Seed the demo data when the database is empty; the secrets to publish, or None.

    Refuses in production: a production catalog is built by its operators, never seeded.
    """
    if runtime.settings.production:
        raise RuntimeError("demo data is never seeded in production mode")
    async with runtime.db.transaction() as session:
        has_data = await session.scalar(select(func.count()).select_from(Channel)) or (
            await session.scalar(select(func.count()).select_from(Operator))
        )
        if has_data:
            return None
        catalog = CatalogService(session, runtime.box, SEED_ACTOR)
        systems = []
        for code, name, port in BUSINESS_SYSTEMS:
            password = secrets.token_urlsafe(18)
            await catalog.create_business_system(
                BusinessSystemCreate.model_validate(
                    {
                        "code": code,
                        "name": name,
                        "host": "127.0.0.1",
                        "port": port,
                        "password": password,
                    }
                )
            )
            systems.append({"code": code, "password": password})
        channels = []
        for code, name, kind in CHANNELS:
            created = await catalog.create_channel(
                ChannelCreate.model_validate({"code": code, "name": name, "type": kind})
            )
            channels.append({"code": code, "secret": created.secret})
            for comp_code, comp_name, comp_kind, level in COMPONENTS:
                await catalog.create_component(
                    ComponentCreate.model_validate(
                        {
                            "channel": code,
                            "code": comp_code,
                            "name": comp_name,
                            "kind": comp_kind,
                            "min_level": level,
                        }
                    )
                )
        everyone = Authorizations(channels=[code for code, _, _ in CHANNELS])
        for item in INTERFACES:
            await catalog.create_interface(
                InterfaceCreate.model_validate(
                    {
                        "code": item.code,
                        "name": item.name,
                        "method": item.method,
                        "path": item.path,
                        "provider": item.provider,
                        "target_service": item.target_service,
                        "min_level": item.min_level,
                        "idempotent": item.idempotent,
                        "customer_scope": item.customer_scope,
                    }
                )
            )
            await catalog.set_authorizations(item.code, everyone)
        await _seed_permissions(session)
        operator_password = secrets.token_urlsafe(15)
        await OperatorService(session).ensure("admin", operator_password, ["admin"], SEED_ACTOR)
    return {
        "channels": channels,
        "operator": {"username": "admin", "password": operator_password},
        "business_systems": systems,
        "customers": [
            {
                "customer_no": customer.customer_no,
                "reserved_phone": customer.reserved_phone,
                "service_password": customer.service_password,
            }
            for customer in list(data.customers.values())[:PUBLISHED_CUSTOMERS]
        ],
    }


async def _seed_permissions(session: AsyncSession) -> None:
    """The demo menus of every channel and the demo data-control policy."""
    permissions = PermissionService(session, SEED_ACTOR)
    for code, _, _ in CHANNELS:
        for menu, name, parent, level, functions in MENUS:
            await permissions.create_menu(
                MenuIn(channel=code, code=menu, name=name, parent=parent, min_level=level)
            )
            for function, function_name, function_level in functions:
                await permissions.create_function(
                    FunctionIn(
                        channel=code,
                        menu=menu,
                        code=function,
                        name=function_name,
                        min_level=function_level,
                        interfaces=FUNCTION_INTERFACES.get(function, []),
                    )
                )
    for interface, path, action, below in FIELD_RULES:
        await permissions.create_field_rule(
            FieldRuleIn(interface=interface, path=path, action=action, below_level=below)
        )


def write_demo_file(data_dir: Path, urls: dict[str, str], seeded: dict[str, Any] | None) -> Path:
    """Write ``demo.json`` (mode 0600): URLs of this start, and the secrets of the seed.

    On later starts the secrets already in the file are kept and only the URLs refreshed,
    since the listeners may run on other ports.
    """
    path = data_dir / DEMO_FILE
    content: dict[str, Any] = {}
    if seeded is None and path.exists():
        content = json.loads(path.read_text(encoding="utf-8"))
    content.update(urls)
    if seeded is not None:
        content.update(seeded)
    write_private(path, json.dumps(content, ensure_ascii=False, indent=2) + "\n")
    return path


def read_demo_file(data_dir: Path) -> dict[str, Any]:
    """The content of ``demo.json``, or an empty dict when there is none."""
    path = data_dir / DEMO_FILE
    if not path.exists():
        return {}
    content: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return content


async def demo_passwords(runtime: Runtime, codes: list[str]) -> dict[str, str]:
    """The catalog passwords of the demo business systems that still exist."""
    found = {}
    async with runtime.db.transaction() as session:
        catalog = CatalogService(session, runtime.box, SEED_ACTOR)
        for code in codes:
            password = await catalog.business_system_password(code)
            if password is not None:
                found[code] = password
    return found
