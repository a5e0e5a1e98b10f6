"""Conflict of interest in staff notices: the officer a case is about never gets an SMS of it.

The accused's phones are those of every staff account linked to the officer. When the leader a
notice is for is the accused, the leader of the unit above gets it instead (DOMAIN.md, routing
and independence). Checked for every staff notice of a case: new case, warnings, deadline,
province, urgent case, escalation by hand, extension approval — on both firing paths.
"""

from __future__ import annotations

import itertools
from datetime import timedelta

from api import clock
from api.models import Citizen, EscalationStep, SmsOutbox, StaffUser, Unit
from api.models.clock import StepStatus
from api.schemas import ComplaintCreate, ExtensionCreate
from api.services import citizen_cases, escalation, staff_cases
from api.services.context import Services
from tests.support import World, at, make_world, staff

ACCUSED = "13700430102"  # the phone of the accused officer's own account (tests/support.py)
SECOND = "13700004301"  # the phone of their second account, in the 支队
_citizens = itertools.count()
LEADER = {"430102": "13974430102", "4301": "13974430100", "43": "13974430000"}  # api/seed.py


async def _file(services: Services, world: World, category: str = "RUDE") -> str:
    citizen = await Citizen.create(openid=f"o-coi-{next(_citizens)}")
    body = ComplaintCreate(
        card_code=world.card.code, categories=[category], description="态度恶劣。"
    )
    ticket: str = (await citizen_cases.file_complaint(services, citizen, body))["ticket_no"]
    return ticket


async def _phones(ticket: str, template: str | None = None) -> set[str]:
    rows = SmsOutbox.filter(case__ticket_no=ticket)
    if template:
        rows = rows.filter(template=template)
    return set(await rows.values_list("phone", flat=True))


async def _fire_one_by_one(services: Services) -> None:
    """The fallback path: each due step alone (as when a batch fails)."""
    for step in await escalation.due_steps(limit=200):
        await escalation._fire_alone(services, step)


async def _unfire() -> None:
    await EscalationStep.filter(status=StepStatus.FIRED).update(
        status=StepStatus.PENDING, fired_at=None
    )
    await SmsOutbox.all().delete()


async def test_the_accused_leading_the_unit_never_hears_and_the_unit_above_does(
    services: Services,
) -> None:
    clock.freeze(at("2025-03-03 10:00"))  # Monday
    world = await make_world()
    # The accused officer is the leader of their own 大队: its leader phone is theirs.
    await Unit.filter(code="430102").update(leader_phone=ACCUSED)
    ticket = await _file(services, world)
    assert await _phones(ticket, "new_case") == {"13900430102"}  # the handler, not the accused

    clock.freeze(at("2025-03-03 11:50"))  # the 签收 warnings
    await escalation.fire_due_steps(services)
    assert await _phones(ticket, "sla_warning") == {"13900430102"}
    clock.freeze(at("2025-03-06 12:00"))  # past the 签收 deadline and a working day more
    for fire in (escalation.fire_due_steps, _fire_one_by_one):  # batched, then one by one
        await _unfire()
        await fire(services)
        # The deadline notice goes to the unit above (deduplicated: it is told once anyway).
        assert await _phones(ticket, "sla_overdue") == {LEADER["4301"]}, fire
        assert await _phones(ticket, "province_supervise") == {LEADER["43"]}, fire
        assert ACCUSED not in await _phones(ticket), fire


async def test_every_account_of_the_accused_is_excluded_up_the_tree(services: Services) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    # A second account of the same officer, in the 支队, whose phone is the 支队 leader's.
    await staff("officer-430102-city", "4301", "unit_leader", officer=world.officer, phone=SECOND)
    await Unit.filter(code="4301").update(leader_phone=SECOND)
    county = await StaffUser.get(username="county-430102")

    urgent = await _file(services, world, "VIOLENCE")  # serious and urgent: the 支队 handles it
    assert await _phones(urgent, "urgent_case") == {LEADER["43"]}  # the 支队 leader is accused

    extended = await _file(services, world)
    await staff_cases.acknowledge(county, extended, services)
    body = ExtensionCreate(days=3, reason="需调取外地执法记录")
    await staff_cases.request_extension(services, county, extended, body)
    assert await _phones(extended, "approval_needed") == {LEADER["43"]}

    escalated = await _file(services, world)
    await staff_cases.escalate(services, county, escalated, "涉及多个大队")
    assert await _phones(escalated, "new_case") == {"13900430102", LEADER["43"]}

    overdue = await _file(services, world)
    clock.advance(timedelta(hours=2, minutes=1))  # past the 签收 deadline
    for fire in (escalation.fire_due_steps, _fire_one_by_one):
        await _unfire()
        await fire(services)
        assert await _phones(overdue, "sla_overdue") == {LEADER["430102"], LEADER["43"]}, fire
    for ticket in (urgent, extended, escalated, overdue):
        assert not {ACCUSED, SECOND} & await _phones(ticket), ticket
