"""The public side of a card: who the officer is and how to reach supervision (cached: card_cache)."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import unquote

from api import db
from api.errors import Gone, NotFound
from api.models import Card
from api.services import card_cache
from api.services.card_local import Entry
from api.services.cards import normalize_card_code
from api.services.context import Services
from api.services.disclosure import supervision_channels
from api.services.routing import supervising_unit

ACTIONS = [
    {"action": "rate", "label": "评价本次执法"},
    {"action": "report", "label": "投诉举报"},
    {"action": "track", "label": "查询办理进度"},
]


_CARD = "SELECT id, code, officer_id, created_at, revoked_at FROM card WHERE code = $1"


async def active_card(code: str) -> Card:
    normalized = normalize_card_code(unquote(code))
    card = await _card(normalized) if normalized else None
    if card is None:
        raise NotFound("未找到该评议卡，请核对二维码", code="card_not_found")
    if card.revoked_at is not None:
        raise Gone("该评议卡已停用", code="card_revoked")
    return card


async def _card(code: str) -> Card | None:
    if not db.is_postgres():
        return await Card.get_or_none(code=code)
    _, rows = await db.default_connection().execute_query(_CARD, [code])
    return Card(**rows[0]) if rows else None  # read only: never saved from here


async def _profile(card: Card) -> dict[str, Any]:
    officer = card.officer
    unit = officer.unit
    above = await supervising_unit(unit)
    return {
        "code": card.code,
        "officer": {"name": officer.name, "cert_no": officer.cert_no, "active": officer.active},
        "unit": {"code": unit.code, "name": unit.name},
        "channels": supervision_channels(unit, above),
        "actions": ACTIONS,
    }


async def _from_database(code: str) -> tuple[str, str]:
    """(kind, body) of a normalised code, as ``card_cache`` stores it."""
    card = await Card.filter(code=code).select_related("officer__unit").first()
    if card is None:
        return card_cache.UNKNOWN, ""
    if card.revoked_at is not None:
        return card_cache.REVOKED, ""
    body = json.dumps(await _profile(card), ensure_ascii=False, separators=(",", ":"))
    return card_cache.FOUND, body


async def public_card(services: Services, code: str) -> bytes:
    """The JSON body of a card's public view; 404 for an unknown code, 410 for a revoked card.

    From this worker's copy when it has one (no round trip), else from Redis, else from the
    database (``card_local``, ``card_cache``)."""
    normalized = normalize_card_code(unquote(code))
    if normalized is None:
        raise NotFound("未找到该评议卡，请核对二维码", code="card_not_found")
    entry = services.card_local.get(normalized) or await _shared(services, normalized)
    if entry.kind == card_cache.UNKNOWN:
        raise NotFound("未找到该评议卡，请核对二维码", code="card_not_found")
    if entry.kind == card_cache.REVOKED:
        raise Gone("该评议卡已停用", code="card_revoked")
    return entry.body


async def _shared(services: Services, code: str) -> Entry:
    local = services.card_local
    mark = local.mark()
    cached = await card_cache.read(services, code)
    if cached.unavailable:
        local.drop()  # the change channel runs through the same Redis: trust no copy now
    kind, body = cached.kind, cached.body
    if kind is None:
        kind, body = await _from_database(code)
        await card_cache.write(services, code, cached, kind=kind, body=body)
    ttl = card_cache.TTL_SECONDS[kind]
    entry = Entry(kind=kind, body=body.encode(), expires_at=time.monotonic() + ttl)
    local.put(code, mark, cached.generation, entry)
    return entry


async def forget_card(services: Services, code: str) -> None:
    await card_cache.invalidate(services, code)
