"""差评 follow-up cases, opened from their intake rows (DOMAIN.md: a 差评 "automatically opens a
follow-up case").

The rating writes the intake row in its own transaction and answers with the case's ticket number
at once. The case is opened here with the rating's time as its time of receipt, so its clocks and
deadlines are those of the moment it was rated: by the worker's intake loop within a poll
interval, or at once when its citizen asks for the case or the list of their cases. Each row is
opened once: claimed under its row lock (``SKIP LOCKED`` by a worker; a citizen's request waits
for a worker holding it), the case opened and the row deleted in one transaction.
"""

from __future__ import annotations

import logging

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from api import db
from api.models import Case, CaseIntake, ContentHold, Evaluation, Officer
from api.models.case import CaseKind
from api.models.moderation import ContentStatus
from api.services import lifecycle, moderation
from api.services.context import Services

log = logging.getLogger("pingyi.intake")


async def _open(services: Services, row: CaseIntake, conn: BaseDBAsyncClient) -> Case:
    """Opens the case of ``row``; the caller deletes the row in the same transaction."""
    rating = await Evaluation.get(id=row.evaluation_id, using_db=conn)
    officer = await Officer.get(id=rating.officer_id, using_db=conn)
    case = await lifecycle.open_case(
        services,
        kind=CaseKind.BAD_RATING,
        officer=officer,
        citizen_id=rating.citizen_id,  # type: ignore[arg-type]  # None only once erased
        card_id=rating.card_id,  # type: ignore[attr-defined]
        categories=[],
        description=rating.comment,
        public_supervisor=row.from_public_supervisor,  # as when it was rated
        policy=services.profile(row.sla_profile),
        ticket_no=row.ticket_no,
        received_at=row.received_at,
        conn=conn,
    )
    await Evaluation.filter(id=rating.id).using_db(conn).update(case_id=case.id)
    if rating.content_status == ContentStatus.HELD:  # a held comment is the case's text
        holds = await ContentHold.filter(evaluation_id=rating.id, case_id=None).using_db(conn)
        await moderation.attach_holds(holds, case, conn=conn)
    return case


async def _open_all(services: Services, rows: list[CaseIntake], conn: BaseDBAsyncClient) -> None:
    for row in rows:
        await _open(services, row, conn)
    await CaseIntake.filter(id__in=[r.id for r in rows]).using_db(conn).delete()


async def open_pending(services: Services, *, limit: int) -> int:
    """Opens the cases of up to ``limit`` intake rows, oldest first; several workers may run
    this at once. The claimed rows are opened together; if that fails, each alone, so one row
    that fails is logged and left for the next pass, not the others."""
    async with in_transaction() as conn:
        rows = await (
            CaseIntake.all()
            .order_by("id")
            .limit(limit)
            .select_for_update(skip_locked=True)
            .using_db(conn)
        )
        if not rows:
            return 0
        try:
            async with in_transaction() as savepoint:  # nested in the claim's: a savepoint
                await _open_all(services, rows, savepoint)
            opened = len(rows)
        except Exception:
            log.exception("opening %d 差评 cases together failed; one by one", len(rows))
            opened = 0
            for row in rows:
                try:
                    async with in_transaction() as savepoint:
                        await _open_all(services, [row], savepoint)
                    opened += 1
                except Exception:
                    log.exception(
                        "opening the case of intake %s (%s) failed", row.id, row.ticket_no
                    )
    log.info("opened %d 差评 follow-up cases", opened)
    return len(rows)


async def open_for_citizen(
    services: Services, citizen_id: int, ticket_no: str | None = None
) -> None:
    """Opens now the citizen's cases still waiting in intake (one ticket, or all of them), so
    the citizen never looks for a case that is not there yet."""
    query = CaseIntake.filter(evaluation__citizen_id=citizen_id)
    if ticket_no is not None:
        query = query.filter(ticket_no=ticket_no)
    ids = await db.column(query, "id")
    if not ids:
        return
    async with in_transaction() as conn:
        # Waits for a worker that holds a row; finds it gone once that worker committed.
        claim = CaseIntake.filter(id__in=ids).order_by("id").select_for_update().using_db(conn)
        rows = list(await claim)
        if rows:
            await _open_all(services, rows, conn)
