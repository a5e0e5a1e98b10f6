"""The set-based ``pingyi_rate_many`` stores and answers what storing the same ratings one after the
other does: random batches with repeated citizens, officers, cards and ticket numbers, unknown and
revoked cards, earlier ratings in the window and small burst thresholds, each run both ways on the
same data (one of them rolled back) and compared row by row."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from api import clock
from api.models import Card, CaseIntake, Citizen, Evaluation
from api.services.rating_store import CITIZEN_LOCK
from tests.conftest import TEST_DATABASE_URL
from tests.support import make_world, officer_with_card

MANY = (
    "SELECT * FROM pingyi_rate_many($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,"
    " $15, $16, $17)"
)
ONE = (
    "SELECT * FROM pingyi_rate($1, $2, $3, $4::text::jsonb, $5::text::jsonb, $6, $7, $8, $9, $10,"
    " $11, $12, $13, $14, $15, $16, $17)"
)
OFFICER_THRESHOLD, OFFICER_MINUTES = 3, 10.0
CITIZEN_THRESHOLD, CITIZEN_MINUTES = 2, 60.0


def _ratings(rng: random.Random, codes: list[str], citizens: list[int], at: datetime) -> list[Any]:
    """A batch: each rating (code, citizen, level, ticket, its moment)."""
    batch = []
    for i in range(rng.randint(1, 14)):
        level = rng.choice([1, 2, 3, 4, 5, 5])
        ticket = None
        if level <= 2:
            ticket = rng.choice([f"PY{rng.randrange(10**8):014d}", "PY00000000000001"])
        moment = at + timedelta(milliseconds=i)
        batch.append((rng.choice(codes), rng.choice(citizens), level, ticket, moment))
    return batch


def _many_args(batch: list[Any]) -> list[Any]:
    now = [b[4] for b in batch]
    return [
        [b[0] for b in batch],
        [b[1] for b in batch],
        [b[2] for b in batch],
        [json.dumps({"civility": b[2]}) for b in batch],
        [json.dumps({"showed_id": True}) for b in batch],
        [""] * len(batch),
        [False] * len(batch),
        now,
        [t - timedelta(hours=24) for t in now],
        [b[3] for b in batch],
        "default",
        [t - timedelta(minutes=OFFICER_MINUTES) for t in now],
        OFFICER_THRESHOLD,
        OFFICER_MINUTES,
        [t - timedelta(minutes=CITIZEN_MINUTES) for t in now],
        CITIZEN_THRESHOLD,
        CITIZEN_MINUTES,
    ]


def _one_args(args: list[Any], i: int) -> list[Any]:
    return [a[i] if isinstance(a, list) else a for a in args]


async def _state(conn: asyncpg.Connection) -> dict[str, Any]:
    """Every stored rating and intake row, by what they say (ids differ between the two runs)."""
    evaluations = await conn.fetch(
        "SELECT id, card_id, officer_id, citizen_id, level, flagged, flag_reasons::text,"
        " flag_status, flagged_at, created_at FROM evaluation"
    )
    by_id = {r["id"]: tuple(r.values())[1:] for r in evaluations}
    intake = await conn.fetch(
        "SELECT evaluation_id, ticket_no, received_at, sla_profile, from_public_supervisor"
        " FROM case_intake"
    )
    return {
        "evaluations": sorted(by_id.values(), key=repr),
        "intake": sorted(((by_id[r[0]], *tuple(r.values())[1:]) for r in intake), key=repr),
    }


def _answers(rows: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (
            r["outcome"],
            r["rating_id"] is not None,
            r["card_ref"],
            r["officer_ref"],
            r["last_rated_at"],
        )
        for r in rows
    ]


@pytest.mark.parametrize("seed", range(6))
async def test_a_batch_stores_what_one_by_one_stores(clean_db: str, seed: int) -> None:
    rng = random.Random(seed)
    world = await make_world()
    second_card = await Card.create(code=f"SECOND{seed:010d}", officer=world.officer)
    revoked = await Card.create(
        code=f"REVOKED{seed:09d}", officer=world.other_officer, revoked_at=clock.now()
    )
    _, third_card = await officer_with_card("430102", "王执法", "43010299002")
    citizens = [
        (await Citizen.create(openid=f"o-{seed}-{i}", is_public_supervisor=i == 0)).id
        for i in range(5)
    ]
    codes = [world.card.code, world.other_card.code, second_card.code, third_card.code]
    codes += [revoked.code, "UNKNOWNCARD00000"]
    conn = await asyncpg.connect(TEST_DATABASE_URL.replace("postgres://", "postgresql://", 1))
    try:
        at = clock.now()
        for _ in range(12):
            at += timedelta(minutes=rng.choice([1, 3, 20, 70]))
            batch = _ratings(rng, codes, citizens, at)
            args = _many_args(batch)
            tx = conn.transaction()
            await tx.start()
            one_by_one = [
                (await conn.fetch(ONE, *_one_args(args, i)))[0] for i in range(len(batch))
            ]
            expected = await _state(conn)
            await tx.rollback()
            async with conn.transaction():
                together = await conn.fetch(MANY, *args)
                stored = await _state(conn)
            assert _answers(together) == _answers(one_by_one), batch
            assert stored == expected, batch
    finally:
        await conn.close()
    assert await Evaluation.all().count() > 10
    assert await Evaluation.filter(flagged=True).count() > 0
    assert await CaseIntake.all().count() > 0


async def test_ratings_of_one_citizen_take_turns(clean_db: str) -> None:
    """The citizen's lock is the one a batch takes: held elsewhere, the batch waits for it."""
    world = await make_world()
    citizen = await Citizen.create(openid="turns")
    batch = [(world.card.code, citizen.id, 5, None, clock.now())]
    dsn = TEST_DATABASE_URL.replace("postgres://", "postgresql://", 1)
    holder, rater = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1, $2)", CITIZEN_LOCK, citizen.id)
            await rater.execute("SET lock_timeout = '200ms'")
            with pytest.raises(asyncpg.LockNotAvailableError):
                await rater.fetch(MANY, *_many_args(batch))
        assert _answers(await rater.fetch(MANY, *_many_args(batch)))[0][0] == "stored"
    finally:
        await holder.close()
        await rater.close()
