"""How a rating is read and written inside its transaction: few statements on PostgreSQL.

A rating is the hottest write of the product, so on PostgreSQL its transaction is three
statements between BEGIN and COMMIT (the rules are in ``rating_integrity``, the flags in
``rating_bursts``):

1. the card, with the citizen's row lock;
2. the citizen's last rating of this card within the window, with the officer's row lock — its
   own statement, so its snapshot is taken after the citizen's lock was granted and sees a
   simultaneous tap's committed rating; lock order citizen, then officer, as everywhere;
3. the insert, with both burst counts: a statement does not see its own insert, so the new
   rating is added to the counts (its officer once more; its officer among the citizen's).

The embedded SQLite default has no row locks (one writer at a time) and goes through the ORM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from tortoise.backends.base.client import BaseDBAsyncClient

from api import db
from api.models import Card, Evaluation

_CARD_LOCK_CITIZEN = """
SELECT c.id, c.code, c.officer_id, c.created_at, c.revoked_at,
       (SELECT id FROM citizen WHERE id = $2 FOR UPDATE) AS locked_citizen
FROM card c WHERE c.code = $1
"""
_LAST_RATING_LOCK_OFFICER = """
SELECT (SELECT max(created_at) FROM evaluation
        WHERE citizen_id = $1 AND card_id = $2 AND created_at > $3) AS last_at,
       (SELECT id FROM officer WHERE id = $4 FOR NO KEY UPDATE) AS locked_officer
"""
_INSERT_AND_COUNT = """
WITH stored AS (
    INSERT INTO evaluation (card_id, officer_id, citizen_id, level, dimensions, answers, comment,
                            content_status, verified, flagged, flag_reasons, flag_status,
                            case_id, created_at)
    VALUES ($1, $2, $3, $4, $5::text::jsonb, $6::text::jsonb, $7, 'ok', $8, FALSE, '[]', '',
            $9, $10)
    RETURNING id
)
SELECT (SELECT id FROM stored) AS id,
       (SELECT count(*) FROM evaluation WHERE officer_id = $2 AND created_at > $11) + 1
           AS officer_ratings,
       (SELECT count(DISTINCT officer_id) FROM (
            SELECT officer_id FROM evaluation WHERE citizen_id = $3 AND created_at > $12
            UNION ALL SELECT $2) AS rated) AS citizen_officers
"""


@dataclass(frozen=True)
class StoredRating:
    """A rating just inserted, with the burst counts that include it (None: not counted yet)."""

    id: int
    officer_id: int
    citizen_id: int | None
    created_at: datetime
    officer_ratings: int | None = None  # of its officer since the officer window's start
    citizen_officers: int | None = None  # officers its citizen rated since that window's start


async def card_locking_citizen(code: str, citizen_id: int, conn: BaseDBAsyncClient) -> Card | None:
    if not db.is_postgres(conn):
        return await Card.get_or_none(code=code, using_db=conn)
    _, rows = await conn.execute_query(_CARD_LOCK_CITIZEN, [code, citizen_id])
    if not rows:
        return None
    row = dict(rows[0])
    del row["locked_citizen"]
    return Card(**row)  # read only: never saved from here


async def last_rating_locking_officer(
    *, citizen_id: int, card: Card, since: datetime, conn: BaseDBAsyncClient
) -> datetime | None:
    if not db.is_postgres(conn):
        last = (
            await Evaluation.filter(card_id=card.id, citizen_id=citizen_id, created_at__gt=since)
            .using_db(conn)
            .order_by("-created_at")
            .first()
        )
        return last.created_at if last else None
    values = [citizen_id, card.id, since, card.officer_id]
    _, rows = await conn.execute_query(_LAST_RATING_LOCK_OFFICER, values)
    last_at: datetime | None = rows[0]["last_at"]
    return last_at


@dataclass(frozen=True)
class NewRating:
    card: Card
    citizen_id: int
    level: int
    dimensions: dict[str, int]
    answers: dict[str, bool]
    comment: str
    verified: bool
    case_id: int | None
    created_at: datetime


async def insert(
    rating: NewRating,
    *,
    officer_since: datetime,
    citizen_since: datetime,
    conn: BaseDBAsyncClient,
) -> StoredRating:
    card = rating.card
    if not db.is_postgres(conn):
        created = await Evaluation.create(
            card_id=card.id,
            officer_id=card.officer_id,
            citizen_id=rating.citizen_id,
            level=rating.level,
            dimensions=rating.dimensions,
            answers=rating.answers,
            comment=rating.comment,
            case_id=rating.case_id,
            verified=rating.verified,
            created_at=rating.created_at,
            using_db=conn,
        )
        return StoredRating(created.id, card.officer_id, rating.citizen_id, rating.created_at)
    values = [
        card.id,
        card.officer_id,
        rating.citizen_id,
        rating.level,
        json.dumps(rating.dimensions),
        json.dumps(rating.answers),
        rating.comment,
        rating.verified,
        rating.case_id,
        rating.created_at,
        officer_since,
        citizen_since,
    ]
    _, rows = await conn.execute_query(_INSERT_AND_COUNT, values)
    row = rows[0]
    return StoredRating(
        id=row["id"],
        officer_id=card.officer_id,
        citizen_id=rating.citizen_id,
        created_at=rating.created_at,
        officer_ratings=int(row["officer_ratings"]),
        citizen_officers=int(row["citizen_officers"]),
    )
