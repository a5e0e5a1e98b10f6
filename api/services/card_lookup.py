"""The public side of a card: who the officer is and how to reach supervision, cached in Redis."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from api.errors import Gone, NotFound
from api.models import Card, Officer, Unit
from api.services.cards import normalize_card_code
from api.services.context import Services
from api.services.disclosure import supervision_channels
from api.services.routing import supervising_unit

CACHE_SECONDS = 300
ACTIONS = [
    {"action": "rate", "label": "评价本次执法"},
    {"action": "report", "label": "投诉举报"},
    {"action": "track", "label": "查询办理进度"},
]


async def active_card(code: str) -> Card:
    normalized = normalize_card_code(unquote(code))
    card = await Card.get_or_none(code=normalized) if normalized else None
    if card is None:
        raise NotFound("未找到该评议卡，请核对二维码", code="card_not_found")
    if card.revoked_at is not None:
        raise Gone("该评议卡已停用", code="card_revoked")
    return card


async def _profile(card: Card) -> dict[str, Any]:
    officer = await Officer.get(id=card.officer_id)
    unit = await Unit.get(id=officer.unit_id)
    above = await supervising_unit(unit)
    return {
        "code": card.code,
        "officer": {"name": officer.name, "cert_no": officer.cert_no, "active": officer.active},
        "unit": {"code": unit.code, "name": unit.name},
        "channels": supervision_channels(unit, above),
        "actions": ACTIONS,
    }


async def public_card(services: Services, code: str) -> dict[str, Any]:
    normalized = normalize_card_code(unquote(code))
    if normalized is None:
        raise NotFound("未找到该评议卡，请核对二维码", code="card_not_found")
    key = services.key("card", normalized)
    cached = await services.redis.get(key)
    if cached is not None:
        data: dict[str, Any] = json.loads(cached)
        if data.get("revoked"):
            raise Gone("该评议卡已停用", code="card_revoked")
        return data
    try:
        card = await active_card(code)
    except Gone:
        await services.redis.set(key, json.dumps({"revoked": True}), ex=CACHE_SECONDS)
        raise
    profile = await _profile(card)
    await services.redis.set(key, json.dumps(profile, ensure_ascii=False), ex=CACHE_SECONDS)
    return profile


async def forget_card(services: Services, code: str) -> None:
    await services.redis.delete(services.key("card", code))
