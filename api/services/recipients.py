"""Who is told about a case: the people to reach, found in one place."""

from __future__ import annotations

from tortoise.expressions import Q

from api.db import column
from api.models import StaffUser
from api.services.clocks import Conn

HANDLER_ROLES = ("handler", "supervisor")


async def handler_phones(*, unit_id: int, officer_id: int, conn: Conn = None) -> list[str]:
    """Phones of the unit's active handlers — never the accused officer's own account."""
    handlers = StaffUser.filter(
        Q(officer_id__isnull=True) | ~Q(officer_id=officer_id),
        unit_id=unit_id,
        role__in=HANDLER_ROLES,
        is_active=True,
        phone__isnull=False,
    ).using_db(conn)
    return await column(handlers, "phone")
