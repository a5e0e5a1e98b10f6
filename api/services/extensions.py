"""延期 (extension): asked for once, at most 10 working days, decided one level up (DOMAIN.md).

Approved, the deadline moves and the citizen is told why; refused, nothing moves and the citizen
sees nothing (the request itself is internal). Either way the one who asked — or, without a
phone of theirs, the handling unit's handlers — hears of the decision by SMS through the outbox.
Like lifecycle.py, every function runs inside the caller's transaction and never commits.
"""

from __future__ import annotations

from tortoise.backends.base.client import BaseDBAsyncClient

from api import clock
from api.errors import Conflict
from api.models import Case, CaseClock, ExtensionRequest, StaffUser, Unit
from api.models.case import CaseStatus
from api.models.clock import ClockStatus
from api.models.extension import ExtensionStatus
from api.services import clocks
from api.services.case_actions import PAUSABLE, WORKING
from api.services.context import Services
from api.services.lifecycle import require_status, save_case
from api.services.outbox import enqueue_sms
from api.services.recipients import handler_phones, leader_phone, phones_of_accused
from api.services.routing import supervising_unit
from api.services.timeline import record_event
from api.validation import field_error

EXTENDABLE = PAUSABLE  # the reply clocks


async def _extendable_clock(case: Case, conn: BaseDBAsyncClient) -> CaseClock:
    found = (
        await CaseClock.filter(
            case_id=case.id,
            kind__in=EXTENDABLE,
            status__in=(ClockStatus.RUNNING, ClockStatus.PAUSED),
        )
        .using_db(conn)
        .first()
    )
    if found is None:
        raise Conflict(
            "当前没有可以延期的办理时限", code="nothing_to_extend", details={"status": case.status}
        )
    return found


async def request_extension(
    services: Services,
    case: Case,
    *,
    staff_id: int,
    days: int,
    reason: str,
    conn: BaseDBAsyncClient,
) -> ExtensionRequest:
    require_status(case, *WORKING, CaseStatus.WAITING)
    if (
        case.extension_count
        or await ExtensionRequest.filter(case_id=case.id).using_db(conn).exists()
    ):
        raise Conflict(
            "每个案件只能申请一次延期", code="extension_used", details={"status": case.status}
        )
    most = services.profile(case.sla_profile).limits.max_extension_days
    if not 1 <= days <= most:
        raise field_error("days", f"延期天数应为 1–{most} 个工作日")
    current = await Unit.get(id=case.handling_unit_id, using_db=conn)
    above = await supervising_unit(current)
    if above.id == current.id:
        raise Conflict(
            "最高一级单位的案件没有上级可以审批延期",
            code="no_unit_above",
            details={"status": case.status},
        )
    target = await _extendable_clock(case, conn)
    request = await ExtensionRequest.create(
        case_id=case.id,
        clock_kind=target.kind,
        days=days,
        reason=reason,
        requested_by_id=staff_id,
        created_at=clock.now(),
        using_db=conn,
    )
    case.extension_count += 1
    await save_case(case, conn, "extension_count")
    await record_event(
        case,
        "extension_requested",
        actor="staff",
        staff_id=staff_id,
        public=False,
        conn=conn,
        days=days,
        reason=reason,
    )
    leader = await leader_phone(above, accused=await phones_of_accused(case.officer_id, conn=conn))
    if leader:
        await enqueue_sms(
            services,
            phone=leader,
            template="approval_needed",
            purpose="extension",
            params={"ticket": case.ticket_no, "unit": current.name},
            case_id=case.id,
            conn=conn,
        )
    return request


async def decide_extension(
    services: Services,
    case: Case,
    *,
    approver: StaffUser,
    approve: bool,
    note: str,
    conn: BaseDBAsyncClient,
) -> None:
    # A request is decided while the case is still being worked on; once replied or closed, the
    # deadline it would move has stopped. Nothing pending is a state too: 409 with the state.
    require_status(case, *WORKING, CaseStatus.WAITING)
    request = (
        await ExtensionRequest.filter(case_id=case.id, status=ExtensionStatus.PENDING)
        .using_db(conn)
        .first()
    )
    if request is None:
        raise Conflict(
            "该案件没有待审批的延期申请",
            code="no_pending_extension",
            details={"status": case.status, "version": case.version},
        )
    request.status = ExtensionStatus.APPROVED if approve else ExtensionStatus.REFUSED
    request.decided_by_id, request.decided_at, request.decision_note = (
        approver.id,
        clock.now(),
        note,
    )
    await request.save(using_db=conn)
    target = await CaseClock.get(case_id=case.id, kind=request.clock_kind, using_db=conn)
    if not approve:
        await record_event(
            case,
            "extension_refused",
            actor="staff",
            staff_id=approver.id,
            public=False,
            conn=conn,
            note=note or "无",
        )
        await _tell_requester(services, case, request, target, conn)
        return
    policy = services.profile(case.sla_profile)
    await clocks.extend_clock(
        target,
        days=request.days,
        policy=policy,
        calendar=await services.calendar(policy),
        conn=conn,
    )
    await clocks.refresh_next_due(case, conn=conn)
    unit = await Unit.get(id=approver.unit_id, using_db=conn)
    due = clock.to_china(target.due_at)
    await record_event(
        case,
        "extension_approved",
        actor="staff",
        staff_id=approver.id,
        conn=conn,
        unit=unit.name,
        due=f"{due:%Y年%m月%d日%H:%M}",
        reason=request.reason,
    )
    await _tell_requester(services, case, request, target, conn)


async def _tell_requester(
    services: Services,
    case: Case,
    request: ExtensionRequest,
    target: CaseClock,
    conn: BaseDBAsyncClient,
) -> None:
    """The decision reaches the one who asked, with the deadline that now holds."""
    accused = await phones_of_accused(case.officer_id, conn=conn)
    requester = await StaffUser.get(id=request.requested_by_id, using_db=conn)
    phones = [requester.phone] if requester.is_active and requester.phone else []
    if not phones:
        phones = await handler_phones(
            unit_id=case.handling_unit_id, officer_id=case.officer_id, conn=conn
        )
    approved = request.status == ExtensionStatus.APPROVED
    for phone in dict.fromkeys(p for p in phones if p and p not in accused):
        await enqueue_sms(
            services,
            phone=phone,
            template="extension_decided",
            purpose="extension_decided",
            case_id=case.id,
            conn=conn,
            params={
                "ticket": case.ticket_no,
                "result": "已获批准" if approved else "未获批准",
                "due": f"{clock.to_china(target.due_at):%m月%d日%H:%M}",
            },
        )
