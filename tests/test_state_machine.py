"""Every case action in every case status: allowed where it makes sense, else 409 with the state.

The expectation is written from the rules (issue 5 "Working a case", DOMAIN.md), not read from
the code: an action refused for the case's state answers 409 ``invalid_state`` whose details
carry the current status (and the fresh case), so the phone can show what happened meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from api import clock
from api.models import Case, CaseClock, Citizen, StaffUser
from api.schemas import ComplaintCreate, FeedbackCreate
from api.services import citizen_cases, staff_cases
from api.services.context import Services
from tests.support import make_world, staff_token

STATUSES = ("received", "acknowledged", "waiting", "replied", "rechecking", "closed")
WORKING = {"acknowledged", "rechecking"}


@dataclass(frozen=True)
class Action:
    path: str
    allowed: frozenset[str]  # the statuses in which the action goes through
    body: dict[str, Any]
    # Allowed by status, yet refused because something else is missing: the code it answers.
    otherwise: str | None = None


ACTIONS = (
    Action("acknowledge", frozenset({"received", "rechecking"}), {}),
    Action("contact", frozenset({*WORKING, "waiting", "closed"}), {"outcome": "已电话联系"}),
    Action("request-info", frozenset(WORKING), {"message": "请提供罚单照片"}),
    Action("notes", frozenset(STATUSES), {"text": "调取执法记录仪视频"}),
    Action("reply", frozenset(WORKING), {"message": "经核实，已处理"}),
    Action("transfer", frozenset({"received", "acknowledged"}), {"reason": "管辖错误"}),
    Action("escalate", frozenset({"received", "acknowledged"}), {"reason": "涉及多个单位"}),
    Action("extension", frozenset({*WORKING, "waiting"}), {"days": 3, "reason": "需调取记录"}),
    # Nothing is pending in these cases: where a decision could be made, there is none to make.
    Action(
        "extension/decision",
        frozenset({*WORKING, "waiting"}),
        {"approve": True, "note": "同意"},
        otherwise="no_pending_extension",
    ),
    Action("close", frozenset({"replied"}), {}),
)

# Who acts: a handler of the unit handling the case in that state; extensions are decided by the
# unit above it. A re-check is handled one level up (DOMAIN.md), by the city detachment.
ACTOR = {status: "county-430102" for status in STATUSES} | {"rechecking": "city-4301"}
APPROVER = {status: "city-4301" for status in STATUSES} | {"rechecking": "province"}
TRANSFER_TO = {"received": "430103", "acknowledged": "430103"}


async def _case_in(services: Services, citizen: Citizen, card_code: str, status: str) -> str:
    body = ComplaintCreate(
        card_code=card_code, categories=["RUDE"], description="态度恶劣。", phone="13800138000"
    )
    ticket: str = (await citizen_cases.file_complaint(services, citizen, body))["ticket_no"]
    county = await StaffUser.get(username="county-430102")
    if status == "received":
        return ticket
    await staff_cases.acknowledge(county, ticket, services)
    if status == "waiting":
        await staff_cases.request_info(services, county, ticket, "请提供罚单照片")
    if status in ("replied", "rechecking", "closed"):
        await staff_cases.reply(services, county, ticket, "经核实，已处理")
        # The citizen's 7-day window is over, so close is not refused for the window.
        await CaseClock.filter(case__ticket_no=ticket, kind="feedback_window").update(
            due_at=clock.now() - timedelta(minutes=1)
        )
    if status in ("rechecking", "closed"):
        feedback = FeedbackCreate(satisfied=status == "closed", reason="请上级复核")
        await citizen_cases.give_feedback(services, citizen, ticket, feedback)
    assert (await Case.get(ticket_no=ticket)).status == status
    return ticket


@pytest.mark.parametrize("action", ACTIONS, ids=[a.path for a in ACTIONS])
async def test_every_action_in_every_status(
    client: httpx.AsyncClient, services: Services, action: Action
) -> None:
    world = await make_world()
    citizen = await Citizen.create(openid=f"o-state-{action.path}")
    tokens = {
        name: await staff_token(client, name) for name in {*ACTOR.values(), *APPROVER.values()}
    }
    for status in STATUSES:
        ticket = await _case_in(services, citizen, world.card.code, status)
        actor = APPROVER[status] if action.path == "extension/decision" else ACTOR[status]
        body = dict(action.body)
        if action.path == "transfer":
            body["unit_code"] = TRANSFER_TO.get(status, "4302")
        res = await client.post(
            f"/api/v1/staff/complaints/{ticket}/{action.path}", json=body, headers=tokens[actor]
        )
        where = f"{action.path} in {status}: {res.status_code} {res.text[:300]}"
        if status in action.allowed and action.otherwise is None:
            assert res.status_code == 200, where
            continue
        error = res.json()["error"]
        code = action.otherwise if status in action.allowed else "invalid_state"
        assert (res.status_code, error["code"]) == (409, code), where
        assert error["details"]["status"] == status, where
        assert error["details"]["case"]["status"] == status, where  # the fresh state
        assert (await Case.get(ticket_no=ticket)).status == status, where  # nothing changed
