"""Case events: the record of what happened; the public ones are the citizen's timeline."""

from __future__ import annotations

from typing import Any

from api import clock
from api.models import Case, CaseEvent
from api.services.clocks import Conn
from api.texts import EVENTS


async def record_event(
    case: Case,
    kind: str,
    *,
    actor: str = "system",
    public: bool = True,
    staff_id: int | None = None,
    data: dict[str, Any] | None = None,
    conn: Conn = None,
    **text_values: Any,
) -> CaseEvent:
    template = EVENTS.get(kind, kind)
    return await CaseEvent.create(
        case_id=case.id,
        kind=kind,
        actor=actor,
        public=public,
        staff_id=staff_id,
        text=template.format(ticket=case.ticket_no, **text_values),
        data=data or {},
        created_at=clock.now(),
        using_db=conn,
    )


async def events_of(case: Case, *, public_only: bool) -> list[CaseEvent]:
    query = CaseEvent.filter(case_id=case.id)
    if public_only:
        query = query.filter(public=True)
    return await query.order_by("id")


def event_view(event: CaseEvent) -> dict[str, Any]:
    return {"kind": event.kind, "text": event.text, "at": clock.iso(event.created_at)}
