"""How a case looks to the citizen who filed it and to the staff who handle it."""

from __future__ import annotations

from typing import Any

from api import clock
from api.models import Case, CaseClock, ContentHold, Evaluation, Officer, Unit
from api.models.case import CaseStatus
from api.models.clock import ClockStatus
from api.services.catalog import CATEGORIES
from api.services.moderation import field_status, holds_view, shown_text
from api.services.redaction import staff_safe
from api.services.timeline import event_view, events_of
from api.services.uploads import evidence_refs
from api.texts import CLOCKS, KINDS, LEVELS, STAFF_STATUS, STATUS


def mask_phone(phone: str | None) -> str | None:
    return None if not phone else f"{phone[:3]}****{phone[-4:]}"


def _categories(codes: list[str]) -> list[dict[str, str]]:
    return [{"code": c, "label": CATEGORIES[c].label} for c in codes if c in CATEGORIES]


async def deadlines(case: Case, *, running_only: bool = True) -> list[dict[str, Any]]:
    query = CaseClock.filter(case_id=case.id)
    if running_only:
        query = query.filter(status=ClockStatus.RUNNING)
    return [
        {
            "clock": c.kind,
            "label": CLOCKS.get(c.kind, c.kind),
            "status": c.status,
            "due_at": clock.iso(c.due_at),
            "breached": c.breached_at is not None,
        }
        for c in await query.order_by("due_at")
    ]


async def _base(case: Case) -> dict[str, Any]:
    unit = await Unit.get(id=case.handling_unit_id)
    return {
        "ticket_no": case.ticket_no,
        "kind": case.kind,
        "kind_label": KINDS.get(case.kind, case.kind),
        "status": case.status,
        "status_label": STATUS.get(case.status, case.status),
        "categories": _categories(case.categories),
        "description": case.description,
        "location": case.location,
        "occurred_at": clock.iso(case.occurred_at),
        "handling_unit": {"code": unit.code, "name": unit.name},
        "received_at": clock.iso(case.received_at),
        "replied_at": clock.iso(case.replied_at),
        "closed_at": clock.iso(case.closed_at),
        "reply": case.reply_message,
        "recheck_reply": case.recheck_reply_message,
    }


async def citizen_view(case: Case) -> dict[str, Any]:
    view = await _base(case)
    view.update(
        anonymous=case.anonymous,
        content_status=case.content_status,  # the citizen's own text is theirs to see
        deadlines=await deadlines(case),
        can_feedback=case.status == CaseStatus.REPLIED,
        timeline=[event_view(e) for e in await events_of(case, public_only=True)],
    )
    return view


def citizen_summary(case: Case) -> dict[str, Any]:
    return {
        "ticket_no": case.ticket_no,
        "kind": case.kind,
        "status": case.status,
        "status_label": STATUS.get(case.status, case.status),
        "received_at": clock.iso(case.received_at),
    }


def _reporter(case: Case, reveal: bool) -> dict[str, Any]:
    # Anonymous reporters are invisible to every staff role (DOMAIN.md, routing and independence);
    # a named reporter's phone is shown in full only to the assigned handler, masked elsewhere.
    if case.anonymous:
        return {"anonymous": True}
    phone = case.contact_phone if reveal else mask_phone(case.contact_phone)
    return {"anonymous": False, "phone": phone, "phone_masked": not reveal}


async def _rating(case: Case, *, may_review: bool = False) -> dict[str, Any] | None:
    """The rating behind a 差评 follow-up case: what the citizen said about the encounter."""
    evaluation = await Evaluation.get_or_none(case_id=case.id)
    if evaluation is None:
        return None
    return {
        "level": evaluation.level,
        "level_label": LEVELS.get(evaluation.level),
        "dimensions": evaluation.dimensions,
        "answers": evaluation.answers,
        "comment": shown_text(evaluation.comment, evaluation.content_status, may_review=may_review),
        "content_status": evaluation.content_status,
    }


async def staff_view(
    case: Case, *, reveal_phone: bool = False, may_review: bool = False
) -> dict[str, Any]:
    view = await _base(case)
    # Content security: held text only for reviewers (content.review), rejected text for no one.
    holds = await ContentHold.filter(case_id=case.id).order_by("id")
    # A 差评 case's description is the rating's comment, held under that name.
    described = "comment" if case.kind == "bad_rating" else "description"
    for name, held_as in (("description", described), ("location", "location")):
        view[name] = shown_text(view[name], field_status(holds, held_as), may_review=may_review)
    officer = await Officer.get(id=case.officer_id).prefetch_related("unit")
    view.update(
        urgency=case.urgency,
        officer={"name": officer.name, "cert_no": officer.cert_no, "unit": officer.unit.name},
        reporter=_reporter(case, reveal_phone),
        from_public_supervisor=from_public_supervisor(case),
        discipline_flag=case.discipline_flag,
        criticism_flag=case.criticism_flag,
        satisfied=case.satisfied,
        feedback_comment=shown_text(
            case.feedback_comment,
            field_status(holds, "feedback_comment"),
            may_review=may_review,
        ),
        content={"status": case.content_status, "holds": holds_view(holds, may_review=may_review)},
        version=case.version,
        next_due_at=clock.iso(case.next_due_at),
        clocks=await deadlines(case, running_only=False),
        status_label=STAFF_STATUS.get(case.status, case.status),
        rating=await _rating(case, may_review=may_review),
        # evidence photos: signed, expiring URLs; held ones only for reviewers
        photos=await evidence_refs(case, include_held=may_review),
        events=[
            {**event_view(e), "public": e.public, "data": e.data}
            for e in await events_of(case, public_only=False)
        ],
    )
    return await staff_safe(case, view)  # an anonymous reporter: nothing of them, ever


def from_public_supervisor(case: Case) -> bool:
    # A report made anonymous after filing no longer says who — nor that a supervisor filed it.
    return case.from_public_supervisor and not case.anonymous


def staff_summary(case: Case) -> dict[str, Any]:
    return {
        "ticket_no": case.ticket_no,
        "kind": case.kind,
        "status": case.status,
        "status_label": STAFF_STATUS.get(case.status, case.status),
        "urgency": case.urgency,
        "categories": _categories(case.categories),
        "received_at": clock.iso(case.received_at),
        "next_due_at": clock.iso(case.next_due_at),
        "overdue": case.next_due_at is not None and case.next_due_at <= clock.now(),
        "content_held": case.content_status == "held",  # a flag, never the held text
        "from_public_supervisor": from_public_supervisor(case),  # 群众监督员
    }
