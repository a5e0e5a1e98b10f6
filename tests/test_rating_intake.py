"""A 差评's follow-up case: its ticket at once, the case opened from its intake row as of the
rating's time (by the worker, or when its citizen asks), once; ratings stored several to a call."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest

from api import clock
from api.models import Case, CaseClock, CaseIntake, Citizen, Evaluation
from api.services import lifecycle, rating_batch
from api.services.context import Services
from api.services.rating_store import Bursts, NewRating, Rated
from api.settings import ROOT
from api.sla.policy import load_policy
from api.workers.runner import intake_once
from tests.support import at, citizen_token, make_world, open_intake

START = at("2025-03-03 10:00")  # a Monday


async def rate(client: httpx.AsyncClient, card: str, headers: dict[str, str], **body: Any) -> Any:
    res = await client.post(
        f"/api/v1/cards/{card}/evaluations", json={"level": 5, **body}, headers=headers
    )
    return res


async def test_the_worker_opens_the_case_as_of_the_rating(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(START)
    world = await make_world()
    res = await rate(client, world.card.code, await citizen_token(client), level=1)
    assert res.status_code == 201, res.text
    ticket = res.json()["ticket_no"]
    assert lifecycle.is_ticket_no(ticket)
    assert not await Case.exists(ticket_no=ticket)
    assert await CaseIntake.filter(ticket_no=ticket).count() == 1
    clock.advance(timedelta(minutes=7))  # the worker comes by later
    assert await intake_once(services) == 1
    case = await Case.get(ticket_no=ticket)
    assert case.kind == "bad_rating" and case.received_at == START
    ack = await CaseClock.get(case_id=case.id, kind="acknowledge")
    assert ack.started_at == START  # its clocks run from the rating, not from the opening
    rating = await Evaluation.get(id=res.json()["id"])
    assert rating.case_id == case.id  # type: ignore[attr-defined]
    assert not await CaseIntake.exists()
    assert await intake_once(services) == 0  # opened once


async def test_the_citizen_finds_the_case_at_once(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    citizen = await citizen_token(client)
    ticket = (await rate(client, world.card.code, citizen, level=2)).json()["ticket_no"]
    view = await client.get(f"/api/v1/complaints/{ticket}", headers=citizen)
    assert view.status_code == 200, view.text
    assert view.json()["ticket_no"] == ticket
    other = (await rate(client, world.other_card.code, citizen, level=1)).json()["ticket_no"]
    mine = (await client.get("/api/v1/complaints", headers=citizen)).json()["items"]
    assert {i["ticket_no"] for i in mine} == {ticket, other}
    assert await open_intake(services) == 0  # nothing left for the worker


async def test_another_citizen_cannot_open_or_see_it(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    ticket = (
        await rate(client, world.card.code, await citizen_token(client, "u1"), level=1)
    ).json()["ticket_no"]
    stranger = await citizen_token(client, "u2")
    res = await client.get(f"/api/v1/complaints/{ticket}", headers=stranger)
    assert res.status_code == 404 and res.json()["error"]["code"] == "case_not_found"
    assert await CaseIntake.filter(ticket_no=ticket).count() == 1  # still waiting


async def test_worker_and_citizen_at_once_open_one_case(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    citizens = [await citizen_token(client, f"c{i}") for i in range(8)]
    tickets = [
        (await rate(client, world.card.code, c, level=1)).json()["ticket_no"] for c in citizens
    ]
    views = [
        client.get(f"/api/v1/complaints/{t}", headers=c)
        for t, c in zip(tickets, citizens, strict=True)
    ]
    *answers, _ = await asyncio.gather(*views, open_intake(services))
    assert [a.status_code for a in answers] == [200] * 8
    assert await Case.filter(ticket_no__in=tickets).count() == 8
    assert not await CaseIntake.exists()


async def test_a_ticket_number_in_use_is_drawn_again(
    client: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = await make_world()
    first = (
        await rate(client, world.card.code, await citizen_token(client, "u1"), level=1)
    ).json()["ticket_no"]
    draws = iter([first, first, "PY25030300000042"])
    monkeypatch.setattr(lifecycle, "new_ticket_no", lambda at: next(draws))
    res = await rate(client, world.card.code, await citizen_token(client, "u2"), level=1)
    assert res.status_code == 201, res.text
    assert res.json()["ticket_no"] == "PY25030300000042"
    assert await Evaluation.all().count() == 2
    assert await open_intake(services) == 2


async def test_ratings_arriving_together_share_a_call(
    client: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = await make_world()
    citizens = [await citizen_token(client, f"n{i}") for i in range(30)]
    calls: list[int] = []
    real = rating_batch.rate_many

    async def counted(ratings: Any) -> Any:
        calls.append(len(ratings))
        return await real(ratings)

    monkeypatch.setattr(rating_batch, "rate_many", counted)
    cards = (world.card.code, world.other_card.code)
    answers = await asyncio.gather(
        *(rate(client, cards[i % 2], c, level=1 + i % 5) for i, c in enumerate(citizens)),
        rate(client, world.card.code, citizens[0]),  # the same citizen and card again: refused
    )
    assert sorted(a.status_code for a in answers) == [201] * 30 + [409]
    assert sum(calls) == 31 and len(calls) < 31, calls
    assert await Evaluation.all().count() == 30
    bad = sum(1 for i in range(30) if 1 + i % 5 <= 2)
    assert await CaseIntake.all().count() == bad


async def test_one_row_that_fails_does_not_hold_back_the_others(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    tickets = [
        (await rate(client, world.card.code, await citizen_token(client, f"p{i}"), level=1)).json()[
            "ticket_no"
        ]
        for i in range(3)
    ]
    assert await open_intake(services) == 3
    later = [
        (await rate(client, world.other_card.code, await citizen_token(client, f"p{i}"), level=1))
        for i in range(3)
    ]
    # A row that cannot be opened: its ticket is taken by a case meanwhile.
    await CaseIntake.filter(ticket_no=later[1].json()["ticket_no"]).update(ticket_no=tickets[0])
    assert await intake_once(services) == 3  # claimed all three
    opened = {later[0].json()["ticket_no"], later[2].json()["ticket_no"]}
    assert await Case.filter(ticket_no__in=opened).count() == 2
    assert await CaseIntake.filter(ticket_no=tickets[0]).count() == 1  # left, retried next pass
    stored = await Evaluation.get(id=later[1].json()["id"])
    assert stored.level == 1  # the rating itself is kept


async def test_the_case_is_opened_as_things_stood_when_it_was_rated(
    client: httpx.AsyncClient, services: Services
) -> None:
    """The worker may come by after the citizen's appointment as 群众监督员 ended or the SLA
    profile was switched: the case is marked, routed and timed as of the rating."""
    world = await make_world()
    citizen = await citizen_token(client, "supervisor")
    await Citizen.all().update(is_public_supervisor=True)
    ticket = (await rate(client, world.card.code, citizen, level=1)).json()["ticket_no"]
    default = services.policy
    assert default.name == "default"
    await Citizen.all().update(is_public_supervisor=False)  # the appointment ends
    services.policy = load_policy(ROOT / "config" / "sla-strict.toml")  # new cases only
    try:
        assert await open_intake(services) == 1
    finally:
        services.policy = default
    case = await Case.get(ticket_no=ticket).prefetch_related("handling_unit")
    assert case.from_public_supervisor and case.sla_profile == "default"
    assert case.handling_unit.code == "4301"  # one level up, as a supervisor's 差评 goes


async def test_a_rating_right_after_a_call_ends_starts_the_next_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With one call allowed at a time, a rating that arrives as the call ends (in the same turn
    of the loop that hands out its answers) is not left waiting for a call that has finished."""
    answered: list[int] = []

    async def stored(ratings: Any) -> list[Rated]:
        answered.append(len(ratings))
        return [Rated("stored", id=len(answered)) for _ in ratings]

    monkeypatch.setattr(rating_batch, "rate_many", stored)
    batcher = rating_batch.RatingBatcher(max_calls=1)
    now = clock.now()
    rating = NewRating("CARD", 1, 5, {}, {}, "", False, None, "default", now, now)
    bursts = Bursts(now, 0, 10.0, now, 0, 60.0)

    async def one_after_the_other() -> tuple[Rated, Rated]:
        first = await batcher.rate(rating, bursts)
        return first, await batcher.rate(rating, bursts)  # in the turn the first was answered

    first, second = await asyncio.wait_for(one_after_the_other(), timeout=5)
    assert (first.id, second.id, answered) == (1, 2, [1, 1])
