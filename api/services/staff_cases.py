"""Use cases of supervisors: the inbox of their unit's subtree and the actions on a case."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q
from tortoise.functions import Count
from tortoise.transactions import in_transaction

from api.errors import Forbidden, NotFound
from api.models import Case, StaffUser, Unit
from api.services import lifecycle, permissions
from api.services.context import Services
from api.services.views import staff_summary, staff_view


async def _scope(user: StaffUser) -> Q:
    unit = await Unit.get(id=user.unit_id)
    return permissions.case_scope(user, unit.path)


async def inbox(user: StaffUser, *, status: str | None = None, limit: int = 50) -> dict[str, Any]:
    permissions.require(user, permissions.CASE_VIEW)
    scope = await _scope(user)
    query = Case.filter(scope)
    if status:
        query = query.filter(status=status)
    # Most urgent first: the nearest running deadline (breached ones are the earliest), then age.
    cases = await query.order_by("next_due_at", "received_at").limit(limit)
    ordered = [c for c in cases if c.next_due_at] + [c for c in cases if not c.next_due_at]
    counts = (
        await Case.filter(scope).annotate(n=Count("id")).group_by("status").values("status", "n")
    )
    return {
        "items": [staff_summary(c) for c in ordered],
        "counts": {row["status"]: row["n"] for row in counts},
    }


async def case_in_scope(user: StaffUser, ticket_no: str) -> Case:
    permissions.require(user, permissions.CASE_VIEW)
    case = await Case.filter(await _scope(user), ticket_no=ticket_no).first()
    if case is None:
        raise NotFound("未找到该案件", code="case_not_found")
    return case


async def view_case(user: StaffUser, ticket_no: str) -> dict[str, Any]:
    return await staff_view(await case_in_scope(user, ticket_no))


Action = Callable[[Case, BaseDBAsyncClient], Awaitable[None]]


async def _act(user: StaffUser, ticket_no: str, action: Action) -> dict[str, Any]:
    permissions.require(user, permissions.CASE_ACT)
    case = await case_in_scope(user, ticket_no)
    async with in_transaction() as conn:
        # The row lock makes two supervisors acting at once take turns; the loser sees the new state.
        case = await Case.filter(id=case.id).select_for_update().using_db(conn).get()
        if case.handling_unit_id != user.unit_id:
            raise Forbidden("只有承办单位可以办理此案件", code="not_handling_unit")
        await action(case, conn)
    return await staff_view(case)


async def acknowledge(user: StaffUser, ticket_no: str) -> dict[str, Any]:
    return await _act(
        user, ticket_no, lambda case, conn: lifecycle.acknowledge(case, staff_id=user.id, conn=conn)
    )


async def reply(
    services: Services, user: StaffUser, ticket_no: str, message: str
) -> dict[str, Any]:
    return await _act(
        user,
        ticket_no,
        lambda case, conn: lifecycle.reply(
            services, case, staff_id=user.id, message=message, conn=conn
        ),
    )
