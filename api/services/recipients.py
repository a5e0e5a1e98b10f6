"""Who is told about a case: the people to reach, found in one place.

Conflict of interest (DOMAIN.md, routing and independence): the officer a case is about never
learns of it. No staff notice of the case goes to a phone of theirs — the phone of any staff
account linked to the officer — even when they are a handler, or the leader of a unit the notice
is for; a leader's notice then goes to the leader of the unit above instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from tortoise.expressions import Q

from api.db import column
from api.models import StaffUser, Unit
from api.services.clocks import Conn
from api.services.routing import supervising_unit

HANDLER_ROLES = ("handler", "supervisor")


async def accused_phones(officer_ids: Iterable[int], *, conn: Conn = None) -> dict[int, set[str]]:
    """Per officer, the phones of the staff accounts linked to them."""
    ids = set(officer_ids)
    rows = (
        await StaffUser.filter(officer_id__in=ids, phone__isnull=False)
        .using_db(conn)
        .values_list("officer_id", "phone")
        if ids
        else []
    )
    found: dict[int, set[str]] = {i: set() for i in ids}
    for officer_id, phone in rows:
        found[officer_id].add(phone)
    return found


async def phones_of_accused(officer_id: int, *, conn: Conn = None) -> set[str]:
    return (await accused_phones([officer_id], conn=conn))[officer_id]


async def handler_phones(*, unit_id: int, officer_id: int, conn: Conn = None) -> list[str]:
    """Phones of the unit's active handlers — never the accused officer's own account or phone."""
    handlers = StaffUser.filter(
        Q(officer_id__isnull=True) | ~Q(officer_id=officer_id),
        unit_id=unit_id,
        role__in=HANDLER_ROLES,
        is_active=True,
        phone__isnull=False,
    ).using_db(conn)
    accused = await phones_of_accused(officer_id, conn=conn)
    return [phone for phone in await column(handlers, "phone") if phone not in accused]


async def leader_phone(unit: Unit, *, accused: set[str]) -> str | None:
    """The phone for a notice to the unit's leader: theirs, or — when the leader is the accused
    officer — the leader's of the unit above (and so on up); None when no one is left."""
    seen = {unit.id}
    while unit.leader_phone and unit.leader_phone in accused:
        unit = await supervising_unit(unit)
        if unit.id in seen:  # the top (or a loop of supervising units named in config)
            return None
        seen.add(unit.id)
    return unit.leader_phone
