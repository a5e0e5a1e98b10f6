"""Unit contacts set by administrators: the leader's mobile (escalation SMS) and the hotline.

A phone is normalised and checked here, when the unit is configured, so an escalation never
meets an invalid number when its SMS is due (issue 3, "Firing"); the hotline likewise, since every
card of the unit's officers shows it to citizens (``api.services.hotlines``).
"""

from __future__ import annotations

from typing import Any

from api.db import fits
from api.errors import NotFound
from api.integrations.sms import normalize_phone
from api.models import StaffUser, Unit
from api.schemas import UnitContactUpdate
from api.services import card_cache, permissions
from api.services.context import Services
from api.services.hotlines import normalize_hotline
from api.validation import field_error


async def update_contacts(
    services: Services, user: StaffUser, code: str, body: UnitContactUpdate
) -> dict[str, Any]:
    permissions.require(user, permissions.UNIT_MANAGE)
    own = await Unit.get(id=user.unit_id)
    unit = await Unit.get_or_none(code=code) if fits(Unit, "code", code) else None
    if unit is None or not unit.path.startswith(own.path):
        # Outside the admin's subtree looks the same as a unit that does not exist.
        raise NotFound("未找到该单位", code="unit_not_found")
    changed: list[str] = []
    if "leader_phone" in body.model_fields_set:
        raw = body.leader_phone or ""
        try:
            unit.leader_phone = normalize_phone(raw) if raw else None
        except ValueError as exc:
            raise field_error("leader_phone", str(exc)) from exc
        changed.append("leader_phone")
    if "hotline" in body.model_fields_set:
        raw = body.hotline or ""
        try:
            unit.hotline = normalize_hotline(raw) if raw else None
        except ValueError as exc:
            raise field_error("hotline", str(exc)) from exc
        changed.append("hotline")
    if changed:
        await unit.save(update_fields=changed)
    if "hotline" in changed:
        # The card view shows this unit's hotline and, under "上级监督", the hotline of the unit
        # supervising it: cards of this unit, of its children and of units naming it in config.
        await card_cache.invalidate(services)
    return {
        "code": unit.code,
        "name": unit.name,
        "leader_phone": unit.leader_phone,
        "hotline": unit.hotline,
    }
