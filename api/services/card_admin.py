"""Administrators revoke a card (lost, stolen, the officer left) or issue an officer a new one.

Both take effect for citizens at once: the cached card views are invalidated after the commit
(api/services/card_cache.py), so a revoked card answers 410 on the next scan in every worker and
a new code is never hidden by a cached "unknown".
"""

from __future__ import annotations

import asyncio
from typing import Any

from tortoise.transactions import in_transaction

from api import clock
from api.db import fits
from api.errors import NotFound
from api.models import Card, Officer, StaffUser, Unit
from api.services import card_cache, permissions
from api.services.cards import card_url, new_card_code, normalize_card_code, render_card_png
from api.services.context import Services


async def _own_path(user: StaffUser) -> str:
    permissions.require(user, permissions.UNIT_MANAGE)
    own = await Unit.get(id=user.unit_id)
    return own.path


async def revoke_card(services: Services, user: StaffUser, code: str) -> dict[str, Any]:
    path = await _own_path(user)
    normalized = normalize_card_code(code)
    async with in_transaction() as conn:
        card = (
            await Card.filter(code=normalized, officer__unit__path__startswith=path)
            .select_for_update()
            .using_db(conn)
            .first()
            if normalized
            else None
        )
        if card is None:  # outside the admin's subtree looks like a card that does not exist
            raise NotFound("未找到该评议卡，请核对二维码", code="card_not_found")
        if card.revoked_at is None:
            card.revoked_at = clock.now()
            await card.save(update_fields=["revoked_at"], using_db=conn)
    await card_cache.invalidate(services, card.code)
    return {"code": card.code, "revoked_at": clock.iso(card.revoked_at)}


async def reissue_card(services: Services, user: StaffUser, cert_no: str) -> dict[str, Any]:
    """A new card for the officer; the cards the officer held until now are revoked."""
    path = await _own_path(user)
    now = clock.now()
    async with in_transaction() as conn:
        officer = (
            await Officer.filter(cert_no=cert_no, unit__path__startswith=path)
            .select_for_update()
            .using_db(conn)
            .first()
            if fits(Officer, "cert_no", cert_no)
            else None
        )
        if officer is None:
            raise NotFound("未找到该执法人员", code="officer_not_found")
        old = await Card.filter(officer_id=officer.id, revoked_at__isnull=True).using_db(conn)
        await Card.filter(id__in=[c.id for c in old]).using_db(conn).update(revoked_at=now)
        card = await Card.create(code=new_card_code(), officer_id=officer.id, using_db=conn)
    await card_cache.invalidate(services, card.code, *(c.code for c in old))
    unit = await Unit.get(id=officer.unit_id)
    url = card_url(services.settings.public_base_url, card.code)
    png = services.settings.cards_dir / f"{officer.cert_no}-{card.code}.png"
    await asyncio.to_thread(
        render_card_png,
        url=url,
        path=png,
        officer_name=officer.name,
        cert_no=officer.cert_no,
        unit_name=unit.name,
    )
    return {"code": card.code, "url": url, "revoked": [c.code for c in old]}
