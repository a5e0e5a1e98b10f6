"""The set-based ``pingyi_rate_many`` stores and answers what storing the same ratings one after the
other does: random batches with repeated citizens, officers, cards and ticket numbers, unknown and
revoked cards, earlier ratings in the window and small burst thresholds, each run both ways on the
same data (one of them rolled back) and compared row by row."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from api import clock, db
from api.models import AuthSession, Card, CaseIntake, Citizen, Evaluation
from api.services import auth
from api.services.auth import token_hash
from api.services.context import Services
from api.services.rating_store import CITIZEN_LOCK
from tests.conftest import TEST_DATABASE_URL
from tests.support import citizen_token, make_world, officer_with_card
from tests.test_rating_integrity import rate

MANY = (
    "SELECT outcome, rating_id, card_ref, officer_ref, last_rated_at FROM pingyi_rate_many("
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
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
        [None] * len(batch),  # every citizen known
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
    return [a[i] if isinstance(a, list) else a for a in args[1:]]


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


# --- a session read in the rating's own call ------------------------------------------------


async def _unread(services: Services) -> None:
    """This worker forgets every session it read: the next rating reads its own."""
    services.sessions.clear()


def _digest(headers: dict[str, str]) -> str:
    return token_hash(headers["Authorization"].removeprefix("Bearer "))


async def test_a_session_not_read_yet_is_read_in_the_rating_call(
    client: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = await make_world()
    citizens = [await citizen_token(client, f"unread{i}") for i in range(6)]
    await _unread(services)

    async def no_query(*args: Any) -> Any:
        raise AssertionError("a plain rating reads its session in its own call")

    monkeypatch.setattr(auth, "read_citizen", no_query)
    answers = await asyncio.gather(
        *(rate(client, world.card.code, c, level=1 + i % 5) for i, c in enumerate(citizens))
    )
    assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers]
    assert sorted(await db.column(Evaluation.all(), "citizen_id")) == sorted(
        await Citizen.all().values_list("id", flat=True)  # type: ignore[arg-type]
    )
    # Remembered from the call: the next request of these citizens reads nothing either.
    assert all(services.sessions.get(_digest(c), clock.now()) for c in citizens)
    again = await rate(client, world.other_card.code, citizens[0])
    assert again.status_code == 201, again.text


async def test_a_revoked_or_expired_session_read_with_the_rating_is_401(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    good, revoked, expired = [await citizen_token(client, f"s{i}") for i in range(3)]
    await AuthSession.filter(token_hash=_digest(revoked)).update(revoked_at=clock.now())
    await AuthSession.filter(token_hash=_digest(expired)).update(expires_at=clock.now())
    forged = {"Authorization": "Bearer not-a-session-at-all"}
    await _unread(services)
    answers = await asyncio.gather(
        *(rate(client, world.card.code, h) for h in (good, revoked, expired, forged))
    )
    assert [a.status_code for a in answers] == [201, 401, 401, 401], [a.text for a in answers]
    assert {a.json()["error"]["code"] for a in answers[1:]} == {"token_invalid"}
    assert await Evaluation.all().count() == 1


async def test_an_invalid_session_is_told_before_an_invalid_body(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    good = await citizen_token(client, "body")
    await _unread(services)
    path = f"/api/v1/cards/{world.card.code}/evaluations"
    forged = {"Authorization": "Bearer not-a-session-at-all"}
    res = await client.post(path, json={"level": 9}, headers=forged)
    assert res.status_code == 401 and res.json()["error"]["code"] == "token_invalid", res.text
    res = await client.post(path, json={"level": 9}, headers=good)
    assert res.status_code == 422, res.text
    res = await client.post(path, json={"level": 4, "comment": "态度很好"}, headers=forged)
    assert res.status_code == 401, res.text
    assert await Evaluation.all().count() == 0


async def test_an_invalid_session_is_told_before_a_malformed_card_code(
    client: httpx.AsyncClient, services: Services
) -> None:
    await make_world()
    await _unread(services)
    forged = {"Authorization": "Bearer not-a-session-at-all"}
    for code in ("XYZ", "A" * 20, "%20", "..%2F..%2Fetc"):
        res = await rate(client, code, forged)
        assert res.status_code == 401 and res.json()["error"]["code"] == "token_invalid", res.text
    good = await citizen_token(client, "shape")
    await _unread(services)
    res = await rate(client, "XYZ", good)
    assert res.status_code == 404 and res.json()["error"]["code"] == "card_not_found", res.text
