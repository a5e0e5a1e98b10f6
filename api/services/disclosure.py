"""Public disclosure of a unit (执法公示) and its supervision channels, from one source.

The channels are built here for both the unit page and the card profile
(``api.services.card_lookup``): 12328, the unit's own hotline, the unit above, and, on the unit
page, the unit's address and mailbox.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

from tortoise.transactions import in_transaction

from api import clock
from api.db import fits
from api.errors import NotFound
from api.models import StaffUser, Unit, UnitDisclosure
from api.schemas import UnitDisclosureUpdate
from api.services import permissions
from api.services.routing import supervising_unit
from api.settings import ROOT
from api.texts import UNIT_LEVELS

DEFAULTS = ROOT / "config" / "disclosure.toml"
LISTS = ("duties", "legal_bases", "procedures")
HOTLINE = "12328"


@lru_cache(maxsize=4)
def load_defaults(path: Path = DEFAULTS) -> dict[str, dict[str, list[str]]]:
    """Per level, the default lists (a level's own list wins over the shared one)."""
    with path.open("rb") as fh:
        raw = tomllib.load(fh)
    shared = {key: [str(v) for v in raw.get(key, [])] for key in LISTS}
    return {
        level: {key: [str(v) for v in raw.get(level, {}).get(key, shared[key])] for key in LISTS}
        for level in UNIT_LEVELS
    }


def supervision_channels(
    unit: Unit, above: Unit, *, address: str | None = None, mailbox: str | None = None
) -> list[dict[str, str]]:
    channels = [
        {"name": "12328交通运输服务监督电话", "value": HOTLINE},
        {"name": f"{unit.name}监督电话", "value": unit.hotline or HOTLINE},
    ]
    if above.id != unit.id:
        channels.append({"name": f"上级监督：{above.name}", "value": above.hotline or HOTLINE})
    if address:
        channels.append({"name": f"{unit.name}来信来访地址", "value": address})
    if mailbox:
        channels.append({"name": f"{unit.name}监督信箱", "value": mailbox})
    return channels


def _filled(items: list[str], values: dict[str, str]) -> list[str]:
    return [item.format_map(values) for item in items]


async def _view(unit: Unit, own: UnitDisclosure | None) -> dict[str, Any]:
    parent = await Unit.get(id=unit.parent_id) if unit.parent_id else None
    above = await supervising_unit(unit)
    values = {
        "unit": unit.name,
        "division": unit.division_name,
        "parent": parent.name if parent else unit.name,
    }
    defaults = load_defaults()[unit.level] if unit.level in UNIT_LEVELS else {}
    lists = {
        key: (getattr(own, key, None) if own else None) or _filled(defaults.get(key, []), values)
        for key in LISTS
    }
    return {
        "code": unit.code,
        "name": unit.name,
        "level": unit.level,
        "level_label": UNIT_LEVELS.get(unit.level, unit.level),
        "division_name": unit.division_name,
        "parent": {"code": parent.code, "name": parent.name} if parent else None,
        **lists,
        "supervision_channels": supervision_channels(
            unit,
            above,
            address=own.address if own else None,
            mailbox=own.mailbox if own else None,
        ),
        "updated_at": clock.iso(own.updated_at) if own else None,
    }


async def public_unit(code: str) -> dict[str, Any]:
    unit = await Unit.get_or_none(code=code) if code.isdigit() and len(code) <= 12 else None
    if unit is None:
        raise NotFound("未找到该单位", code="unit_not_found")
    return await _view(unit, await UnitDisclosure.get_or_none(unit_id=unit.id))


async def update_disclosure(
    user: StaffUser, code: str, body: UnitDisclosureUpdate
) -> dict[str, Any]:
    """An administrator's text for a unit of their subtree; null puts a list back to default."""
    permissions.require(user, permissions.UNIT_MANAGE)
    own_unit = await Unit.get(id=user.unit_id)
    unit = await Unit.get_or_none(code=code) if fits(Unit, "code", code) else None
    if unit is None or not unit.path.startswith(own_unit.path):
        # Outside the admin's subtree looks the same as a unit that does not exist.
        raise NotFound("未找到该单位", code="unit_not_found")
    # The row exists before it is locked: two first edits at once then take turns.
    await UnitDisclosure.get_or_create(unit_id=unit.id, defaults={"updated_at": clock.now()})
    async with in_transaction() as conn:
        own = await UnitDisclosure.filter(unit_id=unit.id).select_for_update().using_db(conn).get()
        for key in (*LISTS, "address", "mailbox"):
            if key in body.model_fields_set:
                setattr(own, key, getattr(body, key) or None)
        own.updated_at, own.updated_by_id = clock.now(), user.id
        await own.save(using_db=conn)
    return await _view(unit, own)
