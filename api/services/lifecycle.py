"""A case's life: opened on receipt with its clocks, acknowledged, replied, re-checked, closed.

Every function here runs inside the caller's transaction (``conn``) and never commits on its own.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime

from tortoise.backends.base.client import BaseDBAsyncClient

from api import clock
from api.errors import Conflict
from api.models import Case, CaseClock, Officer, Unit
from api.models.case import CaseKind, CaseStatus
from api.services import clocks, subscriptions
from api.services.catalog import CATEGORIES, needs_discipline, urgency_of
from api.services.context import Services
from api.services.outbox import enqueue_sms
from api.services.recipients import handler_phones, leader_phone, phones_of_accused
from api.services.routing import handling_unit_for, supervising_unit
from api.services.timeline import record_event
from api.sla.policy import SlaPolicy
from api.texts import STAFF_STATUS, STATUS

REPLY_CLOCKS = (
    "first_contact",
    "reply",
    "reply_urgent",
    "bad_rating_followup",
    "bad_rating_rectify",
)


TICKET_NO = re.compile(r"PY\d{14}")


def new_ticket_no(at: datetime) -> str:
    return f"PY{clock.to_china(at):%y%m%d}{secrets.randbelow(10**8):08d}"


def is_ticket_no(text: str) -> bool:
    return TICKET_NO.fullmatch(text) is not None


async def open_case(
    services: Services,
    *,
    kind: str,
    officer: Officer,
    citizen_id: int,
    card_id: int | None,
    categories: list[str],
    description: str = "",
    anonymous: bool = False,
    contact_phone: str | None = None,
    occurred_at: datetime | None = None,
    location: str = "",
    public_supervisor: bool = False,
    policy: SlaPolicy | None = None,
    ticket_no: str | None = None,
    received_at: datetime | None = None,
    conn: BaseDBAsyncClient,
) -> Case:
    """``policy``, ``ticket_no`` and ``received_at``: those of a 差评 when it was rated (its
    intake row), else the profile in force, a new number and now. The clocks run from the time
    of receipt."""
    now = received_at or clock.now()
    officer_unit = await Unit.get(id=officer.unit_id, using_db=conn)
    unit = await handling_unit_for(officer_unit, categories, public_supervisor=public_supervisor)
    policy = policy or services.policy
    case = await Case.create(
        ticket_no=ticket_no or new_ticket_no(now),
        kind=kind,
        status=CaseStatus.RECEIVED,
        urgency=urgency_of(categories),
        sla_profile=policy.name,
        officer_id=officer.id,
        card_id=card_id,
        origin_unit_id=officer_unit.id,
        handling_unit_id=unit.id,
        handling_path=unit.path,
        citizen_id=citizen_id,
        anonymous=anonymous,
        contact_phone=None if anonymous else contact_phone,
        from_public_supervisor=public_supervisor,
        categories=categories,
        category_index="|" + "|".join(categories) + "|" if categories else "",
        description=description,
        location=location,
        occurred_at=occurred_at,
        discipline_flag=needs_discipline(categories),
        received_at=now,
        using_db=conn,
    )
    calendar = await services.calendar(policy)
    started = [
        await clocks.start_clock(case, kind_, at=now, policy=policy, calendar=calendar, conn=conn)
        for kind_ in _clocks_on_receipt(case)
    ]
    await clocks.refresh_next_due(case, conn=conn, running=started)
    event = "received" if kind == CaseKind.COMPLAINT else "bad_rating_received"
    await record_event(case, event, conn=conn, first=True, unit=unit.name)
    ack = next(c for c in started if c.kind == "acknowledge")
    await tell_handlers(services, case, unit, conn, ack=ack)
    if case.urgency == "urgent":
        await _tell_leader_at_once(services, case, unit, conn)
    return case


async def _tell_leader_at_once(
    services: Services, case: Case, unit: Unit, conn: BaseDBAsyncClient
) -> None:
    """Urgent categories: the handling unit's leader hears of the case at once (12328)."""
    leader = await leader_phone(unit, accused=await phones_of_accused(case.officer_id, conn=conn))
    if not leader:
        return
    labels = "、".join(CATEGORIES[c].label for c in case.categories if c in CATEGORIES)
    await enqueue_sms(
        services,
        phone=leader,
        template="urgent_case",
        urgent=True,
        params={"ticket": case.ticket_no, "category": labels},
        purpose="urgent_case",
        case_id=case.id,
        conn=conn,
    )


async def tell_handlers(
    services: Services,
    case: Case,
    unit: Unit,
    conn: BaseDBAsyncClient,
    *,
    ack: CaseClock | None = None,
) -> None:
    """A new case in my unit (filed, or transferred to it): its handlers hear of it, with the
    签收 deadline — the case's own, since a transfer never resets a clock (``ack``: that clock,
    when the caller has it)."""
    if not services.settings.notify_new_cases:
        return
    if ack is None:
        ack = await CaseClock.get(case_id=case.id, kind="acknowledge", using_db=conn)
    # "请12月04日20:00前签收" on time; a transferred case signed for once already: "请尽快签收"
    due_text = f"{clock.to_china(ack.due_at):%m月%d日%H:%M}前" if ack.stopped_at is None else "尽快"
    for phone in await handler_phones(unit_id=unit.id, officer_id=case.officer_id, conn=conn):
        await enqueue_sms(
            services,
            phone=phone,
            template="new_case",
            purpose="new_case",
            case_id=case.id,
            urgent=case.urgency == "urgent",
            conn=conn,
            params={
                "ticket": case.ticket_no,
                "clock": "签收",
                "unit": unit.name,
                "due": due_text,
            },
        )


def _clocks_on_receipt(case: Case) -> list[str]:
    # The clock starts on receipt, not on acknowledgement: 即接即办 (12328).
    if case.kind == CaseKind.BAD_RATING:
        return ["acknowledge", "bad_rating_followup", "bad_rating_rectify"]
    kinds = ["acknowledge", "reply_urgent" if case.urgency == "urgent" else "reply"]
    if case.contact_phone:
        kinds.append("first_contact")
    return kinds


def require_status(case: Case, *allowed: str, citizen: bool = False) -> None:
    """409 with the current state, named as the one asking sees it (staff, or the citizen)."""
    if case.status not in allowed:
        label = (STATUS if citizen else STAFF_STATUS).get(case.status, case.status)
        raise Conflict(
            f"案件当前状态为“{label}”，不能进行此操作",
            code="invalid_state",
            details={"status": case.status, "version": case.version},
        )


async def save_case(case: Case, conn: BaseDBAsyncClient, *fields: str) -> None:
    case.version += 1
    await case.save(using_db=conn, update_fields=[*fields, "version"])


async def acknowledge(
    case: Case, *, staff_id: int, conn: BaseDBAsyncClient, services: Services | None = None
) -> None:
    """签收: the handling unit takes the case; a re-check is signed for by the unit above."""
    if case.status == CaseStatus.RECHECKING and case.handler_id is None:
        case.handler_id = staff_id
        await save_case(case, conn, "handler_id")
    else:
        require_status(case, CaseStatus.RECEIVED)
        now = clock.now()
        case.status, case.acknowledged_at, case.handler_id = CaseStatus.ACKNOWLEDGED, now, staff_id
        await save_case(case, conn, "status", "acknowledged_at", "handler_id")
        await clocks.stop_clocks(case, ("acknowledge",), at=now, conn=conn)
        await clocks.refresh_next_due(case, conn=conn)
    unit = await Unit.get(id=case.handling_unit_id, using_db=conn)
    await record_event(
        case, "acknowledged", actor="staff", staff_id=staff_id, conn=conn, unit=unit.name
    )
    await subscriptions.notify_citizen(services, case, "acknowledged", conn=conn)


async def reply(
    services: Services, case: Case, *, staff_id: int, message: str, conn: BaseDBAsyncClient
) -> None:
    require_status(case, CaseStatus.ACKNOWLEDGED, CaseStatus.RECHECKING)
    now = clock.now()
    unit = await Unit.get(id=case.handling_unit_id, using_db=conn)
    if case.status == CaseStatus.RECHECKING:
        # 复核 is the last word: the re-check reply closes the case.
        case.recheck_reply_message = message
        await record_event(
            case,
            "recheck_replied",
            actor="staff",
            staff_id=staff_id,
            conn=conn,
            unit=unit.name,
            message=message,
        )
        await close_case(
            case,
            reason="rechecked",
            event="closed",
            conn=conn,
            extra_fields=("recheck_reply_message",),
        )
        await subscriptions.notify_citizen(services, case, "recheck_replied", conn=conn)
        return
    case.status, case.replied_at, case.reply_message = CaseStatus.REPLIED, now, message
    await save_case(case, conn, "status", "replied_at", "reply_message")
    await clocks.stop_clocks(case, REPLY_CLOCKS, at=now, conn=conn)
    policy = services.profile(case.sla_profile)
    calendar = await services.calendar(policy)
    await clocks.start_clock(
        case, "feedback_window", at=now, policy=policy, calendar=calendar, conn=conn
    )
    await clocks.refresh_next_due(case, conn=conn)
    await record_event(
        case,
        "replied",
        actor="staff",
        staff_id=staff_id,
        conn=conn,
        unit=unit.name,
        message=message,
    )
    await subscriptions.notify_citizen(services, case, "replied", conn=conn)


async def feedback(
    services: Services,
    case: Case,
    *,
    satisfied: bool,
    comment: str,
    conn: BaseDBAsyncClient,
    reason: str = "",
) -> None:
    # The citizen rates the handling once; a re-check is asked for once, with its reason.
    if case.satisfied is not None:
        raise Conflict(
            "您已评价过本案的办理结果",
            code="feedback_given",
            details={"status": case.status, "satisfied": case.satisfied},
        )
    require_status(case, CaseStatus.REPLIED, citizen=True)
    case.satisfied, case.feedback_comment = satisfied, comment
    if satisfied or case.recheck_count >= 1:
        await record_event(
            case, "feedback_satisfied" if satisfied else "closed", actor="citizen", conn=conn
        )
        await close_case(
            case,
            reason="satisfied" if satisfied else "closed",
            event=None,
            conn=conn,
            extra_fields=("satisfied", "feedback_comment"),
        )
        return
    now = clock.now()
    current = await Unit.get(id=case.handling_unit_id, using_db=conn)
    above = await supervising_unit(current)
    case.status, case.recheck_count = CaseStatus.RECHECKING, case.recheck_count + 1
    case.handling_unit_id, case.handling_path, case.handler_id = above.id, above.path, None
    await save_case(
        case,
        conn,
        "status",
        "recheck_count",
        "handling_unit_id",
        "handling_path",
        "handler_id",
        "satisfied",
        "feedback_comment",
    )
    await clocks.stop_clocks(case, ("feedback_window",), at=now, conn=conn)
    policy = services.profile(case.sla_profile)
    calendar = await services.calendar(policy)
    await clocks.start_clock(case, "recheck", at=now, policy=policy, calendar=calendar, conn=conn)
    await clocks.refresh_next_due(case, conn=conn)
    await record_event(
        case,
        "feedback_unsatisfied",
        actor="citizen",
        conn=conn,
        data={"reason": reason},
        unit=above.name,
        reason=reason,
    )
    await subscriptions.notify_citizen(services, case, "recheck_opened", conn=conn)


async def close_case(
    case: Case,
    *,
    reason: str,
    event: str | None,
    conn: BaseDBAsyncClient,
    extra_fields: tuple[str, ...] = (),
    services: Services | None = None,
    staff_id: int | None = None,
) -> None:
    """Closes the case; ``staff_id`` names the staff member who closed it (else the clock did)."""
    now = clock.now()
    case.status, case.closed_at, case.close_reason = CaseStatus.CLOSED, now, reason
    await save_case(case, conn, "status", "closed_at", "close_reason", *extra_fields)
    await clocks.stop_all_clocks(case, at=now, conn=conn)
    await clocks.refresh_next_due(case, conn=conn)
    # --- 回访 (DOMAIN.md): closed without the citizen's rating → staff call back in N working
    # days. Started after refresh_next_due: a closed case keeps next_due_at empty (inbox). ---
    if reason == "not_rated":
        await _start_revisit(services, case, at=now, conn=conn)
        # Closed by staff or by the clock, not by the citizen: they hear of it (订阅消息).
        await subscriptions.notify_citizen(services, case, "closed", conn=conn)
    if event:
        actor = "staff" if staff_id is not None else "system"
        await record_event(case, event, actor=actor, staff_id=staff_id, conn=conn)


async def _start_revisit(
    services: Services | None, case: Case, *, at: datetime, conn: BaseDBAsyncClient
) -> None:
    """The 回访 clock of a case closed unrated (config ``[clocks.revisit]``), if configured."""
    if services is None:  # no Services in this process (a bare script): nothing to time
        return
    policy = services.profile(case.sla_profile)
    if "revisit" not in policy.clocks:
        return
    calendar = await services.calendar(policy)
    await clocks.start_clock(case, "revisit", at=at, policy=policy, calendar=calendar, conn=conn)
