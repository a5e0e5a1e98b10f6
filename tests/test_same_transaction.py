"""An action and its audit entry commit together or not at all (one transaction per use case).

A failure is forced right after the action's audit entry has been written, inside the action:
nothing of it may survive — not the status change, not the entry, not the chain's anchor, not
the clocks it moved or the SMS it queued.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from api.models import Case, CaseClock, CaseEvent, Citizen, ExtensionRequest, SmsOutbox, StaffUser
from api.schemas import ComplaintCreate, ExtensionCreate
from api.services import case_actions, citizen_cases, extensions, lifecycle, staff_cases, timeline
from api.services.audit import verify_chain
from api.services.context import Services
from tests.support import make_world


class Boom(Exception):
    pass


async def _everything(ticket: str) -> tuple[Any, ...]:
    case = await Case.get(ticket_no=ticket)
    return (
        await Case.filter(id=case.id).values(),
        await CaseEvent.filter(case_id=case.id).order_by("seq").values_list("kind", "hash"),
        await CaseClock.filter(case_id=case.id).order_by("id").values(),
        await SmsOutbox.filter(case_id=case.id).count(),
        await ExtensionRequest.filter(case_id=case.id).count(),
    )


Act = Callable[[Services, StaffUser, str], Awaitable[Any]]
ACTIONS: dict[str, tuple[str, Act]] = {
    "acknowledge": ("received", lambda s, u, t: staff_cases.acknowledge(u, t, s)),
    "reply": ("acknowledged", lambda s, u, t: staff_cases.reply(s, u, t, "经核实，已处理")),
    "request-info": (
        "acknowledged",
        lambda s, u, t: staff_cases.request_info(s, u, t, "请提供罚单照片"),
    ),
    "escalate": ("received", lambda s, u, t: staff_cases.escalate(s, u, t, "涉及多个单位")),
    "extension": (
        "acknowledged",
        lambda s, u, t: staff_cases.request_extension(
            s, u, t, ExtensionCreate(days=3, reason="需调取外地执法记录")
        ),
    ),
}


@pytest.mark.parametrize("name", list(ACTIONS))
async def test_a_failure_after_the_audit_entry_undoes_the_whole_action(
    services: Services, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    world = await make_world()
    citizen = await Citizen.create(openid="o-same-transaction")
    body = ComplaintCreate(
        card_code=world.card.code,
        categories=["RUDE"],
        description="态度恶劣。",
        phone="13800138000",
    )
    ticket = (await citizen_cases.file_complaint(services, citizen, body))["ticket_no"]
    county = await StaffUser.get(username="county-430102")
    state, act = ACTIONS[name]
    if state == "acknowledged":
        await staff_cases.acknowledge(county, ticket, services)
    before = await _everything(ticket)
    written: list[str] = []
    real = timeline.record_event

    async def record_then_fail(*args: Any, **kwargs: Any) -> Any:
        event = await real(*args, **kwargs)
        written.append(event.kind)
        assert await CaseEvent.filter(id=event.id).using_db(kwargs["conn"]).exists()
        raise Boom(event.kind)

    for module in (lifecycle, case_actions, extensions):
        monkeypatch.setattr(module, "record_event", record_then_fail)
    with pytest.raises(Boom):
        await act(services, county, ticket)
    assert written, "the action wrote no audit entry"
    assert await _everything(ticket) == before  # the action, its entry and the anchor: gone
    assert await verify_chain() == []

    monkeypatch.undo()  # the same action, without the failure, goes through
    await act(services, county, ticket)
    assert (await CaseEvent.filter(case__ticket_no=ticket).order_by("-seq").first()).kind == (
        written[0]
    )
    assert await verify_chain() == []
