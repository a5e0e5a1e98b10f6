"""Use cases of supervisors: the inbox of their unit's subtree and the actions on a case."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from api.errors import Conflict, Forbidden, NotFound
from api.models import Case, StaffUser, Unit
from api.schemas import ContactCreate, ExtensionCreate, ExtensionDecision, TransferCreate
from api.services import case_actions, extensions, lifecycle, permissions
from api.services.audit import audit_identity_view
from api.services.context import Services
from api.services.views import staff_view


async def _scope(user: StaffUser) -> Q:
    unit = await Unit.get(id=user.unit_id)
    return permissions.case_scope(user, unit.path)


async def case_in_scope(user: StaffUser, ticket_no: str) -> Case:
    permissions.require(user, permissions.CASE_VIEW)
    case = None
    if lifecycle.is_ticket_no(ticket_no):
        case = await Case.filter(await _scope(user), ticket_no=ticket_no).first()
    if case is None:
        raise NotFound("未找到该案件", code="case_not_found")
    return case


async def view_case(user: StaffUser, ticket_no: str) -> dict[str, Any]:
    case = await case_in_scope(user, ticket_no)
    reveal = case.handler_id == user.id and not case.anonymous and bool(case.contact_phone)
    if reveal:
        # Every view of a reporter's identity is written to the audit log (执法全过程可回溯).
        await audit_identity_view(case, staff_id=user.id)
    may_review = permissions.can(user, permissions.CONTENT_REVIEW)
    return await staff_view(case, reveal_phone=reveal, may_review=may_review)


Action = Callable[[Case, BaseDBAsyncClient], Awaitable[None]]


async def _act(
    user: StaffUser,
    ticket_no: str,
    action: Action,
    *,
    capability: str = permissions.CASE_ACT,
    own_unit: bool = True,
) -> dict[str, Any]:
    # Scope first: a case outside it is "not found" for every role, whatever they may do.
    case = await case_in_scope(user, ticket_no)
    permissions.require(user, capability)
    try:
        async with in_transaction() as conn:
            # The row lock makes two supervisors acting at once take turns; the loser gets 409.
            case = await Case.filter(id=case.id).select_for_update().using_db(conn).get()
            if own_unit and case.handling_unit_id != user.unit_id:
                raise Forbidden("只有承办单位可以办理此案件", code="not_handling_unit")
            await action(case, conn)
    except Conflict as exc:
        fresh = await Case.get(id=case.id)
        exc.details = {**(exc.details or {}), "case": await staff_view(fresh)}
        raise
    return await staff_view(case)


async def acknowledge(
    user: StaffUser, ticket_no: str, services: Services | None = None
) -> dict[str, Any]:
    return await _act(
        user,
        ticket_no,
        lambda case, conn: lifecycle.acknowledge(
            case, staff_id=user.id, conn=conn, services=services
        ),
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


async def log_contact(user: StaffUser, ticket_no: str, body: ContactCreate) -> dict[str, Any]:
    return await _act(
        user,
        ticket_no,
        lambda case, conn: case_actions.log_contact(
            case, staff_id=user.id, outcome=body.outcome, contacted_at=body.contacted_at, conn=conn
        ),
    )


async def request_info(
    services: Services, user: StaffUser, ticket_no: str, message: str
) -> dict[str, Any]:
    return await _act(
        user,
        ticket_no,
        lambda case, conn: case_actions.request_info(
            services, case, staff_id=user.id, message=message, conn=conn
        ),
    )


async def add_note(user: StaffUser, ticket_no: str, text: str) -> dict[str, Any]:
    # Any staff who may see the case may leave an internal note on it.
    return await _act(
        user,
        ticket_no,
        lambda case, conn: case_actions.add_note(case, staff_id=user.id, text=text, conn=conn),
        capability=permissions.CASE_VIEW,
        own_unit=False,
    )


async def transfer(
    services: Services, user: StaffUser, ticket_no: str, body: TransferCreate
) -> dict[str, Any]:
    return await _act(
        user,
        ticket_no,
        lambda case, conn: case_actions.transfer(
            services,
            case,
            staff_id=user.id,
            unit_code=body.unit_code,
            reason=body.reason,
            conn=conn,
        ),
    )


async def escalate(
    services: Services, user: StaffUser, ticket_no: str, reason: str
) -> dict[str, Any]:
    return await _act(
        user,
        ticket_no,
        lambda case, conn: case_actions.escalate(
            services, case, staff_id=user.id, reason=reason, conn=conn
        ),
    )


async def request_extension(
    services: Services, user: StaffUser, ticket_no: str, body: ExtensionCreate
) -> dict[str, Any]:
    async def action(case: Case, conn: BaseDBAsyncClient) -> None:
        await extensions.request_extension(
            services, case, staff_id=user.id, days=body.days, reason=body.reason, conn=conn
        )

    return await _act(user, ticket_no, action)


async def decide_extension(
    services: Services, user: StaffUser, ticket_no: str, body: ExtensionDecision
) -> dict[str, Any]:
    unit = await Unit.get(id=user.unit_id)

    async def action(case: Case, conn: BaseDBAsyncClient) -> None:
        # Decided one level up: by a unit above the handling unit, never by the handling unit.
        if case.handling_path == unit.path or not case.handling_path.startswith(unit.path):
            raise Forbidden("延期申请须由上级单位审批", code="not_approving_unit")
        await extensions.decide_extension(
            services, case, approver=user, approve=body.approve, note=body.note, conn=conn
        )

    return await _act(
        user, ticket_no, action, capability=permissions.EXTENSION_APPROVE, own_unit=False
    )


async def close(services: Services, user: StaffUser, ticket_no: str) -> dict[str, Any]:
    return await _act(
        user,
        ticket_no,
        lambda case, conn: case_actions.close_after_feedback_window(
            services, case, staff_id=user.id, conn=conn
        ),
    )
