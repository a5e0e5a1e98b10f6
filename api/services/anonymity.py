"""Anonymity after submission, and what staff outputs may say about an anonymous reporter.

Anonymous reporters are invisible to every staff role (DOMAIN.md, routing and independence). A
citizen may turn anonymity on after filing; it takes effect for everything not yet rendered or
sent, because staff views are rendered when they are asked for and no SMS template carries the
reporter. Turning it off again is refused: what staff were shown (nothing) cannot be taken back
the other way without the citizen's identity appearing on a case they filed as anonymous, and an
accidental tap must not expose anyone.

The contact phone is cleared, not hidden: nobody may call an anonymous reporter (``log_contact``
refuses), the citizen's own view never showed it, and a number that is not stored cannot leak.
"""

from __future__ import annotations

from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from api import clock
from api.errors import Conflict
from api.models import Case, Citizen, SmsOutbox
from api.models.outbox import OutboxStatus
from api.services import clocks
from api.services.citizen_cases import own_case
from api.services.context import Services
from api.services.lifecycle import save_case
from api.services.timeline import record_event
from api.services.views import citizen_view

# Clocks that wait for staff to reach the reporter: nobody may, once the report is anonymous.
CONTACT_CLOCKS = ("first_contact", "bad_rating_followup", "revisit")


async def set_anonymity(
    services: Services, citizen: Citizen, ticket_no: str, *, anonymous: bool
) -> dict[str, Any]:
    case = await own_case(services, citizen, ticket_no)
    if case.anonymous == anonymous:
        return await citizen_view(case)  # already so: nothing to record
    if not anonymous:
        raise Conflict(
            "匿名举报提交后不能改为实名", code="anonymity_irreversible", details={"anonymous": True}
        )
    async with in_transaction() as conn:
        case = await Case.filter(id=case.id).select_for_update().using_db(conn).get()
        if not case.anonymous:
            await _make_anonymous(case, conn)
    return await citizen_view(case)


async def _make_anonymous(case: Case, conn: BaseDBAsyncClient) -> None:
    now = clock.now()
    phone = case.contact_phone
    case.anonymous, case.contact_phone = True, None
    await save_case(case, conn, "anonymous", "contact_phone")
    await clocks.stop_clocks(case, CONTACT_CLOCKS, at=now, conn=conn)
    await clocks.refresh_next_due(case, conn=conn)
    if phone:
        # Anything addressed to the reporter and not yet sent is not sent.
        await (
            SmsOutbox.filter(case_id=case.id, phone=phone, status=OutboxStatus.PENDING)
            .using_db(conn)
            .update(status=OutboxStatus.FAILED, last_error="reporter turned anonymous")
        )
    await record_event(case, "made_anonymous", actor="citizen", conn=conn)
