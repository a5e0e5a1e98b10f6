"""Use cases of the citizen: rate an encounter, report misconduct, follow a case, give feedback."""

from __future__ import annotations

from typing import Any

from tortoise.transactions import in_transaction

from api import clock, db
from api.errors import NotFound
from api.integrations.sms import normalize_phone
from api.models import Case, Citizen, Officer
from api.models.case import CaseKind
from api.schemas import ComplaintCreate, EvaluationCreate, FeedbackCreate
from api.services import (
    auth,
    case_actions,
    intake,
    lifecycle,
    moderation,
    rating_integrity,
    uploads,
)
from api.services.card_lookup import active_card
from api.services.context import Services
from api.services.session_cache import CitizenIdentity, UnreadSession
from api.services.views import citizen_summary, citizen_view
from api.validation import field_error

BAD_RATING_MAX = 2  # levels 1–2 are a 差评 (DOMAIN.md)
MY_CASES_MAX = 100  # the newest of a citizen's cases listed at once


async def rate(
    services: Services, who: CitizenIdentity | UnreadSession, code: str, body: EvaluationCreate
) -> dict[str, Any]:
    """A plain rating on PostgreSQL reads a session not read yet in its own call; one with a
    comment or an encounter code, or on SQLite, reads it first."""
    has_comment = bool(body.comment.strip())
    citizen = who
    if has_comment or body.encounter_code or not db.is_postgres():
        citizen = await auth.read_citizen(services, who)
    screening = moderation.Screening()  # most ratings carry no comment: nothing to ask WeChat
    if has_comment and isinstance(citizen, CitizenIdentity):  # read just above
        await active_card(code)  # an unknown or revoked card is told before WeChat is asked
        # Content security first, outside the transaction (no lock waits on WeChat).
        screening = await moderation.screen_texts(
            services, citizen, {"comment": body.comment}, scene=moderation.SCENE_COMMENT
        )
    now = clock.now()
    # A 差评 opens a follow-up case (DOMAIN.md): its ticket now, the case from its intake row.
    rated, ticket_no = await rating_integrity.store(
        services,
        citizen,
        code,
        body,
        screening=screening,
        opens_case=body.level <= BAD_RATING_MAX,
        now=now,
    )
    return {
        "id": rated.id,
        "level": body.level,
        "verified": bool(body.encounter_code),
        "created_at": clock.iso(now),
        "ticket_no": ticket_no,
    }


def _contact_phone(body: ComplaintCreate, citizen: Citizen) -> str | None:
    if body.anonymous:
        return None
    if not body.phone:
        return citizen.phone  # the number the citizen verified through WeChat (POST /me/phone)
    try:
        return normalize_phone(body.phone)
    except ValueError as exc:
        raise field_error("phone", "手机号码无效") from exc


async def file_complaint(
    services: Services, citizen: Citizen, body: ComplaintCreate
) -> dict[str, Any]:
    card = await active_card(body.card_code)
    phone = _contact_phone(body, citizen)
    screening = await moderation.screen_texts(
        services,
        citizen,
        {"description": body.description, "location": body.location},
        scene=moderation.SCENE_POST,
    )
    async with in_transaction() as conn:
        photos = await uploads.claim_photos(citizen, body.photos, conn=conn)  # evidence photos
        officer = await Officer.get(id=card.officer_id, using_db=conn)
        case = await lifecycle.open_case(
            services,
            kind=CaseKind.COMPLAINT,
            officer=officer,
            citizen_id=citizen.id,
            card_id=card.id,
            categories=body.categories,
            description=body.description,
            anonymous=body.anonymous,
            contact_phone=phone,
            occurred_at=body.occurred_at,
            location=body.location,
            # Anonymous means nothing of the reporter reaches staff: not even that they are a
            # public supervisor (marked, and routed one level up, when named).
            public_supervisor=citizen.is_public_supervisor and not body.anonymous,
            conn=conn,
        )
        await uploads.attach_photos(photos, case, conn=conn)  # evidence photos
        await moderation.hold_texts(screening, citizen_id=citizen.id, case=case, conn=conn)
        await moderation.hold_photos(photos, case, conn=conn)
    view = await citizen_view(case)
    return {
        "ticket_no": case.ticket_no,
        "status": case.status,
        "deadlines": view["deadlines"],
        "case": view,
    }


async def own_case(services: Services, citizen: Citizen, ticket_no: str) -> Case:
    # Another citizen's case is answered exactly like a missing one: existence does not leak.
    case = None
    if lifecycle.is_ticket_no(ticket_no):
        case = await Case.get_or_none(ticket_no=ticket_no, citizen_id=citizen.id)
        if case is None:  # a 差评's case not opened yet: opened now
            await intake.open_for_citizen(services, citizen.id, ticket_no)
            case = await Case.get_or_none(ticket_no=ticket_no, citizen_id=citizen.id)
    if case is None:
        raise NotFound("未找到该案件", code="case_not_found")
    return case


async def my_cases(
    services: Services, citizen: Citizen, *, limit: int = MY_CASES_MAX
) -> list[dict[str, Any]]:
    await intake.open_for_citizen(services, citizen.id)  # 差评 cases not opened yet
    cases = await Case.filter(citizen_id=citizen.id).order_by("-received_at").limit(limit)
    return [citizen_summary(c) for c in cases]


async def give_feedback(
    services: Services, citizen: Citizen, ticket_no: str, body: FeedbackCreate
) -> dict[str, Any]:
    case = await own_case(services, citizen, ticket_no)
    if not body.satisfied and not body.reason:
        raise field_error("reason", "不满意时请说明申请复核的理由")
    # Not satisfied: the comment and the reason for the re-check — checked like every text.
    screening = await moderation.screen_texts(
        services,
        citizen,
        {"feedback_comment": body.comment, "feedback_reason": body.reason or ""},
        scene=moderation.SCENE_COMMENT,
    )
    async with in_transaction() as conn:
        case = await Case.filter(id=case.id).select_for_update().using_db(conn).get()
        await lifecycle.feedback(
            services,
            case,
            satisfied=body.satisfied,
            comment=body.comment,
            reason=body.reason or "",
            conn=conn,
        )
        await moderation.hold_texts(screening, citizen_id=citizen.id, case=case, conn=conn)
    return await citizen_view(case)


async def supply_info(
    services: Services, citizen: Citizen, ticket_no: str, message: str
) -> dict[str, Any]:
    """The citizen answers a request for information; the paused clocks run again."""
    case = await own_case(services, citizen, ticket_no)
    screening = await moderation.screen_texts(
        services, citizen, {"supplement": message}, scene=moderation.SCENE_POST
    )
    async with in_transaction() as conn:
        case = await Case.filter(id=case.id).select_for_update().using_db(conn).get()
        await case_actions.supply_info(
            services, case, message=message, held=screening.is_held("supplement"), conn=conn
        )
        await moderation.hold_texts(screening, citizen_id=citizen.id, case=case, conn=conn)
    return await citizen_view(case)
