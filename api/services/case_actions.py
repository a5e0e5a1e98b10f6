"""Supervisor actions on a case beyond acknowledge and reply (DOMAIN.md; issue rules in config).

Like lifecycle.py, every function runs inside the caller's transaction and never commits.
"""

from __future__ import annotations

from datetime import datetime

from tortoise.backends.base.client import BaseDBAsyncClient

from api import clock
from api.errors import Conflict
from api.models import Case, CaseClock, Unit
from api.models.case import CaseStatus
from api.services import clocks
from api.services.catalog import is_serious
from api.services.context import Services
from api.services.lifecycle import close_case, require_status, save_case, tell_handlers
from api.services.outbox import enqueue_sms
from api.services.recipients import leader_phone, phones_of_accused
from api.services.routing import supervising_unit
from api.services.timeline import record_event
from api.validation import field_error

# Clocks that stop while the case waits for the citizen: the reply clocks.
PAUSABLE = ("reply", "reply_urgent", "recheck", "bad_rating_rectify")
WORKING = (CaseStatus.ACKNOWLEDGED, CaseStatus.RECHECKING)


async def log_contact(
    case: Case,
    *,
    staff_id: int,
    outcome: str,
    contacted_at: datetime | None,
    conn: BaseDBAsyncClient,
) -> None:
    # On a closed case, the contact is the 回访 call that its revisit clock waits for.
    require_status(case, *WORKING, CaseStatus.WAITING, CaseStatus.CLOSED)
    now = clock.now()
    if case.anonymous:
        raise Conflict(
            "匿名举报无法联系举报人", code="reporter_anonymous", details={"status": case.status}
        )
    when = contacted_at or now
    if when > now or when < case.received_at:
        raise field_error("contacted_at", "联系时间应在受理之后、当前时间之前")
    await clocks.stop_clocks(
        case, ("first_contact", "bad_rating_followup", "revisit"), at=now, conn=conn
    )
    await clocks.refresh_next_due(case, conn=conn)
    await record_event(
        case,
        "contacted",
        actor="staff",
        staff_id=staff_id,
        conn=conn,
        data={"outcome": outcome, "contacted_at": clock.iso(when)},
    )


async def request_info(
    services: Services, case: Case, *, staff_id: int, message: str, conn: BaseDBAsyncClient
) -> None:
    require_status(case, *WORKING)
    now = clock.now()
    case.status = CaseStatus.WAITING
    await save_case(case, conn, "status")
    await clocks.pause_clocks(case, PAUSABLE, at=now, conn=conn)
    await clocks.refresh_next_due(case, conn=conn)
    unit = await Unit.get(id=case.handling_unit_id, using_db=conn)
    await record_event(
        case,
        "info_requested",
        actor="staff",
        staff_id=staff_id,
        conn=conn,
        unit=unit.name,
        message=message,
    )


async def supply_info(
    services: Services, case: Case, *, message: str, conn: BaseDBAsyncClient, held: bool = False
) -> None:
    require_status(case, CaseStatus.WAITING, citizen=True)
    now = clock.now()
    case.status = CaseStatus.RECHECKING if case.recheck_count else CaseStatus.ACKNOWLEDGED
    await save_case(case, conn, "status")
    policy = services.profile(case.sla_profile)
    await clocks.resume_clocks(
        case, at=now, policy=policy, calendar=await services.calendar(policy), conn=conn
    )
    await clocks.refresh_next_due(case, conn=conn)
    if held:  # content security: the message waits for a reviewer, out of the log until then
        await record_event(case, "info_supplied_held", actor="citizen", conn=conn)
    else:
        await record_event(case, "info_supplied", actor="citizen", conn=conn, message=message)


async def add_note(case: Case, *, staff_id: int, text: str, conn: BaseDBAsyncClient) -> None:
    await record_event(
        case, "note", actor="staff", staff_id=staff_id, public=False, conn=conn, text=text
    )


async def _transfer_target(case: Case, unit_code: str, conn: BaseDBAsyncClient) -> Unit:
    current = await Unit.get(id=case.handling_unit_id, using_db=conn)
    target = await Unit.get_or_none(code=unit_code, using_db=conn)
    # 转办 goes sideways, to a sibling unit; up is 上报 (escalate), and down is not a transfer.
    if target is None or target.id == current.id or target.parent_id != current.parent_id:
        raise field_error("unit_code", "只能转交给同一上级单位下的其他单位")
    if is_serious(case.categories) and target.id == case.origin_unit_id:
        raise field_error("unit_code", "严重问题案件不得转回被投诉人员所在单位")
    return target


async def transfer(
    services: Services,
    case: Case,
    *,
    staff_id: int,
    unit_code: str,
    reason: str,
    conn: BaseDBAsyncClient,
) -> None:
    require_status(case, CaseStatus.RECEIVED, CaseStatus.ACKNOWLEDGED)
    # DOMAIN.md: transfers are limited (the case's profile, default 2) and never reset the clock.
    most = services.profile(case.sla_profile).limits.max_transfers
    if case.transfer_count >= most:
        raise Conflict(
            f"该案件已转办{most}次，不能再转办",
            code="transfer_limit",
            details={"status": case.status},
        )
    target = await _transfer_target(case, unit_code, conn)
    await _move(case, target, conn)
    case.transfer_count += 1
    await save_case(case, conn, "transfer_count")
    await record_event(
        case,
        "transferred",
        actor="staff",
        staff_id=staff_id,
        conn=conn,
        unit=target.name,
        data={"reason": reason},
    )
    await tell_handlers(services, case, target, conn)


async def escalate(
    services: Services, case: Case, *, staff_id: int, reason: str, conn: BaseDBAsyncClient
) -> None:
    """上报: the handling unit hands the case to the unit above; the clocks keep running."""
    require_status(case, CaseStatus.RECEIVED, CaseStatus.ACKNOWLEDGED)
    current = await Unit.get(id=case.handling_unit_id, using_db=conn)
    above = await supervising_unit(current)
    if above.id == current.id:
        raise Conflict(
            "已是最高一级单位，无法上报", code="no_unit_above", details={"status": case.status}
        )
    await _move(case, above, conn)
    await record_event(
        case,
        "escalated",
        actor="staff",
        staff_id=staff_id,
        conn=conn,
        unit=above.name,
        data={"reason": reason},
    )
    leader = await leader_phone(above, accused=await phones_of_accused(case.officer_id, conn=conn))
    if leader:
        await enqueue_sms(
            services,
            phone=leader,
            template="new_case",
            purpose="escalated",
            case_id=case.id,
            params={"ticket": case.ticket_no, "clock": "上报", "unit": above.name, "due": "尽快"},
            conn=conn,
        )


async def _move(case: Case, unit: Unit, conn: BaseDBAsyncClient) -> None:
    # A move never resets the clocks: 即接即办 counts from receipt (DOMAIN.md). The receiving unit
    # signs for the case itself, so it has a handler of its own (who alone sees a named phone).
    case.handling_unit_id, case.handling_path = unit.id, unit.path
    case.status, case.handler_id = CaseStatus.RECEIVED, None
    await save_case(case, conn, "handling_unit_id", "handling_path", "status", "handler_id")


async def close_after_feedback_window(
    services: Services, case: Case, *, staff_id: int, conn: BaseDBAsyncClient
) -> None:
    require_status(case, CaseStatus.REPLIED)
    window = await CaseClock.get_or_none(case_id=case.id, kind="feedback_window", using_db=conn)
    if window is not None and window.due_at > clock.now():
        raise Conflict(
            "群众评价期尚未结束，暂不能办结",
            code="feedback_window_open",
            details={"status": case.status, "until": clock.iso(window.due_at)},
        )
    await close_case(
        case,
        reason="not_rated",
        event="closed_by_staff",
        conn=conn,
        services=services,
        staff_id=staff_id,
    )
