"""The rules a rating passes before it is stored (DOMAIN.md, "Integrity of ratings").

- One evaluation per citizen per card per ``rating_window_hours`` (24 h): a second one is 409
  ``already_rated``, saying when the next one is possible. The citizen's lock makes two taps
  at once take turns, so exactly one is stored; an ``Idempotency-Key`` retry is answered by the
  middleware with the first answer before it gets here.
- The officer's lock serialises the ratings of one officer, so the burst counts in
  ``rating_bursts`` see every rating before them.
- An encounter code makes the rating a verified encounter (``api.services.encounters``).
- A 差评 gets its follow-up case's ticket number at once; the case is opened from its intake row
  (``api.services.intake``).

On PostgreSQL a plain rating is stored with the others arriving at the same time, in one call
(``rating_batch``); an encounter code or a held comment adds its rows to a transaction of its own
(``rating_store``).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from urllib.parse import unquote

from tortoise.transactions import in_transaction

from api import clock, db
from api.errors import AppError, Conflict, Gone, NotFound
from api.models import Card
from api.schemas import EvaluationCreate
from api.services import auth, encounters, lifecycle, moderation, rating_bursts, rating_store
from api.services.cards import normalize_card_code
from api.services.context import Services
from api.services.moderation import Screening
from api.services.rating_store import NewRating, Rated
from api.services.session_cache import CitizenIdentity, UnreadSession


def window(services: Services) -> timedelta:
    return timedelta(hours=services.settings.rating_window_hours)


def _when(moment: datetime) -> str:
    local = clock.to_china(moment)
    return f"{local.month}月{local.day}日 {local:%H:%M}"


def already_rated(services: Services, last: datetime, now: datetime) -> Conflict:
    next_at = last + window(services)
    if next_at.microsecond:  # told in whole seconds: the next whole second, never before it
        next_at = next_at.replace(microsecond=0) + timedelta(seconds=1)
    hours = f"{services.settings.rating_window_hours:g}"
    wait = max(1, math.ceil((next_at - now).total_seconds()))
    return Conflict(
        f"您已于{_when(last)}通过这张评议卡评价过，每{hours}小时可评价一次，请于{_when(next_at)}后再评价。"
        "感谢您的监督",
        code="already_rated",
        details={
            "last_rated_at": clock.iso(last),
            "next_rating_at": clock.iso(next_at),
            "window_hours": services.settings.rating_window_hours,
        },
        headers={"Retry-After": str(wait)},
    )


def _refusal(services: Services, rated: Rated, now: datetime) -> AppError | None:
    if rated.outcome == "card_not_found":
        return NotFound("未找到该评议卡，请核对二维码", code="card_not_found")
    if rated.outcome == "card_revoked":
        return Gone("该评议卡已停用", code="card_revoked")
    if rated.outcome == "already_rated" and rated.last_rated_at is not None:
        return already_rated(services, rated.last_rated_at, now)
    return None


TICKET_DRAWS = 5  # a ticket number is drawn at random: taken already, another is drawn


async def store(
    services: Services,
    citizen: CitizenIdentity | UnreadSession,
    code: str,
    body: EvaluationCreate,
    *,
    screening: Screening,
    opens_case: bool,
    now: datetime,
) -> tuple[Rated, str | None]:
    """Stores the rating or raises why not: 404 unknown card, 410 revoked, 409 rated within the
    window, 422 encounter code not valid. ``opens_case``: a 差评, whose follow-up case's ticket
    number is returned. A citizen not read yet (``UnreadSession``: a plain rating on PostgreSQL)
    is read in the rating's own call: 401 if the session is no longer valid."""
    normalized = normalize_card_code(unquote(code))
    if not normalized:
        await auth.read_citizen(services, citizen)  # an invalid session is told first (401)
        raise NotFound("未找到该评议卡，请核对二维码", code="card_not_found")
    for _ in range(TICKET_DRAWS):
        ticket_no = lifecycle.new_ticket_no(now) if opens_case else None
        rated = await _store(services, citizen, normalized, body, screening, ticket_no, now)
        if rated.outcome != "ticket_taken":
            return rated, ticket_no
    raise RuntimeError(f"no free ticket number in {TICKET_DRAWS} draws")


async def _store(
    services: Services,
    citizen: CitizenIdentity | UnreadSession,
    normalized: str,
    body: EvaluationCreate,
    screening: Screening,
    ticket_no: str | None,
    now: datetime,
) -> Rated:
    unread = citizen if isinstance(citizen, UnreadSession) else None
    rating = NewRating(
        card_code=normalized,
        citizen_id=citizen.id if isinstance(citizen, CitizenIdentity) else None,
        level=body.level,
        dimensions=body.dimensions,
        answers=body.answers,
        comment=body.comment,
        verified=bool(body.encounter_code),  # refused below, all undone, if the code is not valid
        ticket_no=ticket_no,
        sla_profile=services.policy.name,
        created_at=now,
        window_since=now - window(services),
        session=None if unread is None else unread.digest,
    )
    bursts = rating_bursts.windows(services, now)
    if db.is_postgres() and not body.encounter_code and not screening.held:
        rated = await services.ratings.rate(rating, bursts)  # with others: one round trip
        if rated.outcome == "token_invalid":
            raise auth.session_invalid()
        if unread is not None and rated.citizen is not None and rated.session_expires_at:
            auth.remember_citizen(
                services, unread, rated.citizen, expires_at=rated.session_expires_at
            )
        refusal = _refusal(services, rated, now)
        if refusal is not None:
            raise refusal
        return rated  # stored, or ticket_taken
    assert isinstance(citizen, CitizenIdentity), "read before a rating of its own transaction"
    async with in_transaction() as conn:
        if db.is_postgres(conn):
            rated = await rating_store.rate_on_postgres(rating, bursts, conn=conn)
            refusal = _refusal(services, rated, now)
        else:
            rated, stored = await rating_store.rate_with_orm(rating, conn=conn)
            refusal = _refusal(services, rated, now)
            if stored is not None:
                await rating_bursts.flag_bursts_orm(services, stored, conn=conn)
        if refusal is not None:
            raise refusal
        if rated.outcome != "stored":
            return rated  # ticket_taken: nothing written
        assert rated.id is not None and rated.card_id is not None
        if body.encounter_code:
            card = Card(id=rated.card_id, officer_id=rated.officer_id)  # read only
            encounter_id = await encounters.consume(
                services, card=card, raw=body.encounter_code, now=now, conn=conn
            )
            await encounters.link(encounter_id, rated.id, conn=conn)
        await moderation.hold_texts(
            screening, citizen_id=citizen.id, evaluation_id=rated.id, conn=conn
        )
    return rated
