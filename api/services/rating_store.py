"""How a rating is read and written.

A rating is the hottest write of the product. On PostgreSQL it is one call of the
``pingyi_rate`` function (migrations 0002 and 0003): the citizen's lock, the officer's lock, the
card, the once-per-window check, the insert, the 差评's intake row and the burst flags, the checks
in a snapshot taken after the locks, so they see a simultaneous tap's committed rating and every
rating of the officer before it (lock order citizen, then officer, as everywhere). The locks are
transaction-level advisory locks keyed ``(CITIZEN_LOCK, citizen id)`` and ``(OFFICER_LOCK,
officer id)``: they take turns like row locks without writing into the rows. Plain ratings go several to a call (``rating_batch``); one with an encounter code or
a held comment runs in a transaction of its own, which adds those rows (``rating_integrity``).

The embedded SQLite default has no row locks (one writer at a time) and goes through the ORM.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from api.models import Card, Case, CaseIntake, Citizen, Evaluation
from api.services.session_cache import CitizenIdentity

_LOCKS = importlib.import_module("api.migrations.0003_set_based_ratings")
CITIZEN_LOCK: int = _LOCKS.CITIZEN_LOCK  # the first key of a citizen's rating lock
OFFICER_LOCK: int = _LOCKS.OFFICER_LOCK

_RATE = """
SELECT outcome, rating_id, card_ref, officer_ref, last_rated_at
FROM pingyi_rate($1, $2, $3, $4::text::jsonb, $5::text::jsonb, $6, $7, $8, $9, $10,
                 $11, $12, $13, $14, $15, $16, $17)
"""


@dataclass(frozen=True)
class Bursts:
    """The burst rules' windows (``rating_bursts``): thresholds of 0 turn a rule off."""

    officer_since: datetime
    officer_threshold: int
    officer_minutes: float
    citizen_since: datetime
    citizen_threshold: int
    citizen_minutes: float


@dataclass(frozen=True)
class NewRating:
    card_code: str  # normalised
    citizen_id: int | None  # None: not read yet, the call reads ``session`` (``rating_batch``)
    level: int
    dimensions: dict[str, int]
    answers: dict[str, bool]
    comment: str
    verified: bool
    ticket_no: str | None  # a 差评: the ticket of the follow-up case to open
    sla_profile: str  # in force now: the 差评's case runs under it
    created_at: datetime
    window_since: datetime  # the citizen's last rating of the card after this refuses it
    session: str | None = None  # the token hash of a citizen not read yet


@dataclass(frozen=True)
class Rated:
    """What the call answered: ``stored``, or why not (``card_not_found``, ``card_revoked``,
    ``already_rated`` with the time of the rating that blocks it, ``ticket_taken``: the ticket
    number drawn for its case is in use, draw another; ``token_invalid``: the session read with
    it is unknown, revoked or expired). A session read with it tells whose it is."""

    outcome: str
    id: int | None = None
    card_id: int | None = None
    officer_id: int | None = None
    last_rated_at: datetime | None = None
    citizen: CitizenIdentity | None = None  # the session read with the rating
    session_expires_at: datetime | None = None


async def rate_on_postgres(rating: NewRating, bursts: Bursts, *, conn: BaseDBAsyncClient) -> Rated:
    """One call of ``pingyi_rate`` in ``conn``'s transaction."""
    values = [
        rating.card_code,
        rating.citizen_id,
        rating.level,
        json.dumps(rating.dimensions),
        json.dumps(rating.answers),
        rating.comment,
        rating.verified,
        rating.created_at,
        rating.window_since,
        rating.ticket_no,
        rating.sla_profile,
        bursts.officer_since,
        bursts.officer_threshold,
        bursts.officer_minutes,
        bursts.citizen_since,
        bursts.citizen_threshold,
        bursts.citizen_minutes,
    ]
    _, rows = await conn.execute_query(_RATE, values)
    return rated(rows[0])


def rated(row: Mapping[str, Any]) -> Rated:
    """A row of ``pingyi_rate`` or ``pingyi_rate_many`` as the answer it is."""
    openid = row.get("citizen_openid")
    return Rated(
        outcome=row["outcome"],
        id=row["rating_id"],
        card_id=row["card_ref"],
        officer_id=row["officer_ref"],
        last_rated_at=row["last_rated_at"],
        citizen=None if openid is None else CitizenIdentity(id=row["citizen_ref"], openid=openid),
        session_expires_at=row.get("session_expires_at"),
    )


# --- the same through the ORM (SQLite) ---------------------------------------------------------


async def rate_with_orm(
    rating: NewRating, *, conn: BaseDBAsyncClient
) -> tuple[Rated, Evaluation | None]:
    """The checks and the inserts of ``pingyi_rate`` (its burst flags: ``rating_bursts``)."""
    if rating.ticket_no is not None and (
        await Case.exists(ticket_no=rating.ticket_no, using_db=conn)
        or await CaseIntake.exists(ticket_no=rating.ticket_no, using_db=conn)
    ):
        return Rated("ticket_taken"), None
    card = await Card.get_or_none(code=rating.card_code, using_db=conn)
    if card is None:
        return Rated("card_not_found"), None
    if card.revoked_at is not None:
        return Rated("card_revoked", card_id=card.id), None
    last = (
        await Evaluation.filter(
            card_id=card.id, citizen_id=rating.citizen_id, created_at__gt=rating.window_since
        )
        .using_db(conn)
        .order_by("-created_at")
        .first()
    )
    if last is not None:
        return Rated("already_rated", card_id=card.id, last_rated_at=last.created_at), None
    created = await Evaluation.create(
        card_id=card.id,
        officer_id=card.officer_id,
        citizen_id=rating.citizen_id,
        level=rating.level,
        dimensions=rating.dimensions,
        answers=rating.answers,
        comment=rating.comment,
        verified=rating.verified,
        created_at=rating.created_at,
        using_db=conn,
    )
    if rating.ticket_no is not None:
        supervisor = await Citizen.filter(id=rating.citizen_id).using_db(conn).first()
        await CaseIntake.create(
            evaluation_id=created.id,
            ticket_no=rating.ticket_no,
            received_at=rating.created_at,
            sla_profile=rating.sla_profile,
            from_public_supervisor=bool(supervisor and supervisor.is_public_supervisor),
            using_db=conn,
        )
    rated = Rated("stored", id=created.id, card_id=card.id, officer_id=card.officer_id)
    return rated, created
