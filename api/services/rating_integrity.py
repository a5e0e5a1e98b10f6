"""The rules a rating passes before it is stored (DOMAIN.md, "Integrity of ratings").

- One evaluation per citizen per card per ``rating_window_hours`` (24 h): a second one is 409
  ``already_rated``, saying when the next one is possible. The citizen's row lock makes two taps
  at once take turns, so exactly one is stored; an ``Idempotency-Key`` retry is answered by the
  middleware with the first answer before it gets here.
- The officer's row lock serialises the ratings of one officer, so the burst counts in
  ``rating_flags`` see every rating before them.
- An encounter code makes the rating a verified encounter (``api.services.encounters``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from api import clock
from api.errors import Conflict
from api.models import Card, Citizen, Evaluation, Officer
from api.services import encounters, rating_flags
from api.services.clocks import Conn
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


async def admit(
    services: Services,
    *,
    citizen: CitizenIdentity,
    card: Card,
    encounter_code: str | None,
    now: datetime,
    conn: Conn,
) -> Admission:
    """Takes the locks and checks the rules, inside the rating's transaction (lock order:
    citizen, then officer, everywhere)."""
    await Citizen.filter(id=citizen.id).select_for_update().using_db(conn)
    last = (
        await Evaluation.filter(
            card_id=card.id, citizen_id=citizen.id, created_at__gt=now - window(services)
        )
        .using_db(conn)
        .order_by("-created_at")
        .first()
    )
    if last is not None:
        raise already_rated(services, last.created_at, now)
    await Officer.filter(id=card.officer_id).select_for_update(no_key=True).using_db(conn)
    encounter_id = None
    if encounter_code:
        encounter_id = await encounters.consume(
            services, card=card, raw=encounter_code, now=now, conn=conn
        )
    return Admission(encounter_id=encounter_id)


async def settle(
    services: Services, evaluation: Evaluation, admission: Admission, *, conn: Conn
) -> None:
    """After the rating is stored: link its encounter code and flag bursts."""
    if admission.encounter_id is not None:
        await encounters.link(admission.encounter_id, evaluation.id, conn=conn)
    await rating_flags.flag_bursts(services, evaluation, conn=conn)
