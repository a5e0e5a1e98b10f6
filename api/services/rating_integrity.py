"""The rules a rating passes before it is stored (DOMAIN.md, "Integrity of ratings").

- One evaluation per citizen per card per ``rating_window_hours`` (24 h): a second one is 409
  ``already_rated``, saying when the next one is possible. The citizen's row lock makes two taps
  at once take turns, so exactly one is stored; an ``Idempotency-Key`` retry is answered by the
  middleware with the first answer before it gets here.
- The officer's row lock serialises the ratings of one officer, so the burst counts in
  ``rating_bursts`` see every rating before them.
- An encounter code makes the rating a verified encounter (``api.services.encounters``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from tortoise.backends.base.client import BaseDBAsyncClient

from api import clock, db
from api.errors import Conflict
from api.models import Card, Evaluation
from api.services import encounters, rating_bursts
from api.services.context import Services
from api.services.session_cache import CitizenIdentity


@dataclass(frozen=True)
class Admission:
    encounter_id: int | None

    @property
    def verified(self) -> bool:
        return self.encounter_id is not None


def window(services: Services) -> timedelta:
    return timedelta(hours=services.settings.rating_window_hours)


def _when(moment: datetime) -> str:
    local = clock.to_china(moment)
    return f"{local.month}月{local.day}日 {local:%H:%M}"


def already_rated(services: Services, last: datetime, now: datetime) -> Conflict:
    next_at = last + window(services)
    hours = f"{services.settings.rating_window_hours:g}"
    wait = max(1, math.ceil((next_at - now).total_seconds()))
    return Conflict(
        f"您已于{_when(last)}评价过该执法人员，每{hours}小时可评价一次，请于{_when(next_at)}后再评价。"
        "感谢您的监督",
        code="already_rated",
        details={
            "last_rated_at": clock.iso(last),
            "next_rating_at": clock.iso(next_at),
            "window_hours": services.settings.rating_window_hours,
        },
        headers={"Retry-After": str(wait)},
    )


# Lock order everywhere: the citizen, then the officer. The last rating is read after the
# citizen's lock, in a statement of its own (its snapshot then sees a simultaneous tap's committed
# rating); the officer's lock comes with that read, so the burst counts after the insert see every
# rating of the officer before this one.
_LOCK_CITIZEN = "SELECT id FROM citizen WHERE id = $1 FOR UPDATE"
_LAST_RATING_AND_LOCK_OFFICER = """
SELECT (SELECT max(created_at) FROM evaluation
        WHERE citizen_id = $1 AND card_id = $2 AND created_at > $3) AS last_at,
       (SELECT id FROM officer WHERE id = $4 FOR NO KEY UPDATE) AS officer_id
"""


async def admit(
    services: Services,
    *,
    citizen: CitizenIdentity,
    card: Card,
    encounter_code: str | None,
    now: datetime,
    conn: BaseDBAsyncClient,
) -> Admission:
    """Takes the locks and checks the rules, inside the rating's transaction."""
    since = now - window(services)
    if db.is_postgres(conn):
        await conn.execute_query(_LOCK_CITIZEN, [citizen.id])
        _, rows = await conn.execute_query(
            _LAST_RATING_AND_LOCK_OFFICER, [citizen.id, card.id, since, card.officer_id]
        )
        last: datetime | None = rows[0]["last_at"]
    else:  # the ORM (SQLite: one writer at a time, no row locks)
        last_row = (
            await Evaluation.filter(card_id=card.id, citizen_id=citizen.id, created_at__gt=since)
            .using_db(conn)
            .order_by("-created_at")
            .first()
        )
        last = last_row.created_at if last_row else None
    if last is not None:
        raise already_rated(services, last, now)
    encounter_id = None
    if encounter_code:
        encounter_id = await encounters.consume(
            services, card=card, raw=encounter_code, now=now, conn=conn
        )
    return Admission(encounter_id=encounter_id)


async def settle(
    services: Services, evaluation: Evaluation, admission: Admission, *, conn: BaseDBAsyncClient
) -> None:
    """After the rating is stored: link its encounter code and flag bursts."""
    if admission.encounter_id is not None:
        await encounters.link(admission.encounter_id, evaluation.id, conn=conn)
    await rating_bursts.flag_bursts(services, evaluation, conn=conn)
