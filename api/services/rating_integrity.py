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
from urllib.parse import unquote

from tortoise.backends.base.client import BaseDBAsyncClient

from api import clock
from api.errors import Conflict, Gone, NotFound
from api.models import Card, Case
from api.schemas import EvaluationCreate
from api.services import encounters, rating_bursts, rating_store
from api.services.cards import normalize_card_code
from api.services.context import Services
from api.services.rating_store import NewRating, StoredRating
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


async def card_for_rating(citizen: CitizenIdentity, code: str, *, conn: BaseDBAsyncClient) -> Card:
    """The card rated, read with the citizen's row lock (lock order: citizen, then officer);
    404 for an unknown code, 410 for a revoked card."""
    normalized = normalize_card_code(unquote(code))
    card = (
        await rating_store.card_locking_citizen(normalized, citizen.id, conn)
        if normalized
        else None
    )
    if card is None:
        raise NotFound("未找到该评议卡，请核对二维码", code="card_not_found")
    if card.revoked_at is not None:
        raise Gone("该评议卡已停用", code="card_revoked")
    return card


async def admit(
    services: Services,
    *,
    citizen: CitizenIdentity,
    card: Card,
    encounter_code: str | None,
    now: datetime,
    conn: BaseDBAsyncClient,
) -> Admission:
    """Checks the rules under the citizen's lock and takes the officer's."""
    last = await rating_store.last_rating_locking_officer(
        citizen_id=citizen.id, card=card, since=now - window(services), conn=conn
    )
    if last is not None:
        raise already_rated(services, last, now)
    encounter_id = None
    if encounter_code:
        encounter_id = await encounters.consume(
            services, card=card, raw=encounter_code, now=now, conn=conn
        )
    return Admission(encounter_id=encounter_id)


async def store(
    services: Services,
    *,
    citizen: CitizenIdentity,
    card: Card,
    body: EvaluationCreate,
    case: Case | None,
    admission: Admission,
    now: datetime,
    conn: BaseDBAsyncClient,
) -> StoredRating:
    s = services.settings
    rating = NewRating(
        card=card,
        citizen_id=citizen.id,
        level=body.level,
        dimensions=body.dimensions,
        answers=body.answers,
        comment=body.comment,
        verified=admission.verified,
        case_id=case.id if case else None,
        created_at=now,
    )
    return await rating_store.insert(
        rating,
        officer_since=now - timedelta(minutes=s.burst_officer_minutes),
        citizen_since=now - timedelta(minutes=s.burst_citizen_minutes),
        conn=conn,
    )


async def settle(
    services: Services, rating: StoredRating, admission: Admission, *, conn: BaseDBAsyncClient
) -> None:
    """After the rating is stored: link its encounter code and flag bursts."""
    if admission.encounter_id is not None:
        await encounters.link(admission.encounter_id, rating.id, conn=conn)
    await rating_bursts.flag_bursts(services, rating, conn=conn)
