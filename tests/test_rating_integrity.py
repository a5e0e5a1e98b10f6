"""Integrity of ratings: one per card per window, encounter codes, burst flags and their review."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest

from api import clock
from api.models import EncounterCode, Evaluation, RatingReview
from api.services.context import Services
from tests.support import (
    at,
    citizen_token,
    make_world,
    officer_with_card,
    open_intake,
    staff,
    staff_token,
)

Headers = dict[str, str]
START = at("2025-03-03 10:00")


@pytest.fixture
def frozen() -> None:
    clock.freeze(START)


async def rate(
    client: httpx.AsyncClient, card: str, headers: Headers, **body: Any
) -> httpx.Response:
    return await client.post(
        f"/api/v1/cards/{card}/evaluations", json={"level": 5, **body}, headers=headers
    )


def error(res: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert res.status_code == status, res.text
    err: dict[str, Any] = res.json()["error"]
    assert err["code"] == code, err
    return err


# --- one evaluation per citizen per card per window ------------------------------------------------


async def test_null_for_an_optional_part_is_the_same_as_leaving_it_out(
    client: httpx.AsyncClient, services: Services, frozen: None
) -> None:
    world = await make_world()
    citizen = await citizen_token(client)
    res = await rate(client, world.card.code, citizen, comment=None, dimensions=None, answers=None)
    assert res.status_code == 201, res.text
    stored = await Evaluation.get(id=res.json()["id"])
    assert (stored.comment, stored.dimensions, stored.answers) == ("", {}, {})


async def test_one_rating_per_card_per_24_hours_up_to_the_boundary(
    client: httpx.AsyncClient, services: Services, frozen: None
) -> None:
    world = await make_world()
    citizen = await citizen_token(client)
    first = await rate(client, world.card.code, citizen)
    assert first.status_code == 201, first.text
    assert first.json()["verified"] is False
    # Another officer's card is another card.
    assert (await rate(client, world.other_card.code, citizen)).status_code == 201
    # So is another citizen.
    assert (
        await rate(client, world.card.code, await citizen_token(client, "u2"))
    ).status_code == 201

    clock.advance(timedelta(hours=24) - timedelta(seconds=1))
    again = await rate(client, world.card.code, citizen, level=1)
    err = error(again, 409, "already_rated")
    assert err["details"]["next_rating_at"] == "2025-03-04T10:00:00+08:00"
    assert err["details"]["last_rated_at"] == "2025-03-03T10:00:00+08:00"
    assert "3月4日 10:00" in err["message"] and "24小时" in err["message"]
    assert again.headers["Retry-After"] == "1"
    # The refused 差评 opened no case.
    assert await Evaluation.filter(card_id=world.card.id).count() == 2

    clock.advance(timedelta(seconds=1))
    assert (await rate(client, world.card.code, citizen, level=4)).status_code == 201
    assert await Evaluation.filter(card_id=world.card.id).count() == 3


async def test_the_window_is_a_setting(
    client: httpx.AsyncClient,
    services: Services,
    frozen: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(services.settings, "rating_window_hours", 2)
    world = await make_world()
    citizen = await citizen_token(client)
    assert (await rate(client, world.card.code, citizen)).status_code == 201
    clock.advance(timedelta(hours=1, minutes=59))
    err = error(await rate(client, world.card.code, citizen), 409, "already_rated")
    assert err["details"]["next_rating_at"] == "2025-03-03T12:00:00+08:00"
    assert "每2小时" in err["message"]
    clock.advance(timedelta(minutes=1))
    assert (await rate(client, world.card.code, citizen)).status_code == 201


async def test_simultaneous_submits_store_exactly_one(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    citizen = await citizen_token(client)
    answers = await asyncio.gather(*(rate(client, world.card.code, citizen) for _ in range(6)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] + [409] * 5, [a.text for a in answers]
    for refused in (a for a in answers if a.status_code == 409):
        error(refused, 409, "already_rated")
    assert await Evaluation.filter(card_id=world.card.id).count() == 1


async def test_simultaneous_bad_ratings_open_one_case(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    citizen = await citizen_token(client)
    answers = await asyncio.gather(
        *(rate(client, world.card.code, citizen, level=1) for _ in range(4))
    )
    created = [a for a in answers if a.status_code == 201]
    assert len(created) == 1 and created[0].json()["ticket_no"]
    mine = (await client.get("/api/v1/complaints", headers=citizen)).json()
    assert len(mine["items"] if isinstance(mine, dict) else mine) == 1


async def test_an_idempotent_retry_gets_the_first_answer_not_409(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    citizen = await citizen_token(client)
    keyed = {**citizen, "Idempotency-Key": "rate-once-0001"}
    first = await rate(client, world.card.code, keyed, level=2)
    assert first.status_code == 201, first.text
    retry = await rate(client, world.card.code, keyed, level=2)
    assert retry.status_code == 201, retry.text
    assert retry.json() == first.json() and retry.headers["Idempotent-Replayed"] == "true"
    # A new key is a new attempt: the 24 h rule answers.
    fresh = {**citizen, "Idempotency-Key": "rate-once-0002"}
    error(await rate(client, world.card.code, fresh, level=2), 409, "already_rated")
    assert await Evaluation.filter(card_id=world.card.id).count() == 1


# --- encounter codes -------------------------------------------------------------------------------


async def issue(client: httpx.AsyncClient, headers: Headers, **body: Any) -> httpx.Response:
    return await client.post("/api/v1/staff/encounters", json=body, headers=headers)


async def officer_code(client: httpx.AsyncClient) -> dict[str, Any]:
    res = await issue(client, await staff_token(client, "officer-430102"))
    assert res.status_code == 201, res.text
    data: dict[str, Any] = res.json()
    return data


async def test_a_rating_through_an_encounter_code_is_verified(
    client: httpx.AsyncClient, services: Services, frozen: None
) -> None:
    world = await make_world()
    data = await officer_code(client)
    code = data["code"]
    assert len(code) == 8 and data["card_code"] == world.card.code
    assert data["qr_payload"] == f"https://pingyi.test/c/{world.card.code}?e={code}"
    assert data["expires_at"] == "2025-03-03T10:10:00+08:00"
    assert data["officer"] == {"name": "张执法", "cert_no": "43010299001"}
    # Only a keyed hash is stored.
    row = await EncounterCode.get(card_id=world.card.id)
    assert code not in row.code_hash and row.issued_by_id == world.officer_account.id

    page = (await client.get(f"/api/v1/cards/{world.card.code}", params={"e": code})).json()
    assert page["encounter"]["valid"] is True
    assert page["encounter"]["expires_at"] == data["expires_at"]
    assert "encounter" not in (await client.get(f"/api/v1/cards/{world.card.code}")).json()

    citizen = await citizen_token(client)
    # Typed from a notice: lower case and a dash are fine.
    typed = f"{code[:4].lower()}-{code[4:]}"
    res = await rate(client, world.card.code, citizen, encounter_code=typed)
    assert res.status_code == 201, res.text
    assert res.json()["verified"] is True
    evaluation = await Evaluation.get(id=res.json()["id"])
    assert evaluation.verified
    row = await EncounterCode.get(id=row.id)
    assert row.used_at is not None and row.evaluation_id == evaluation.id
    # Without a code the rating is stored, unverified; "" is no code.
    other = await rate(
        client, world.card.code, await citizen_token(client, "u2"), encounter_code=""
    )
    assert other.status_code == 201 and other.json()["verified"] is False


async def test_a_used_code_is_refused_and_the_citizen_can_rate_without_it(
    client: httpx.AsyncClient, services: Services, frozen: None
) -> None:
    world = await make_world()
    code = (await officer_code(client))["code"]
    assert (
        await rate(client, world.card.code, await citizen_token(client), encounter_code=code)
    ).status_code == 201
    second = await citizen_token(client, "u2")
    err = error(
        await rate(client, world.card.code, second, encounter_code=code), 422, "encounter_code_used"
    )
    assert "不填写评价码直接评价" in err["message"]
    assert err["details"]["fields"][0]["field"] == "encounter_code"
    page = (await client.get(f"/api/v1/cards/{world.card.code}", params={"e": code})).json()
    assert page["encounter"] == {
        "valid": False,
        "code": "encounter_code_used",
        "message": page["encounter"]["message"],
    }
    # The refused rating left nothing behind: the same citizen may rate now, unverified.
    res = await rate(client, world.card.code, second)
    assert res.status_code == 201 and res.json()["verified"] is False
    assert await Evaluation.filter(card_id=world.card.id, verified=True).count() == 1


async def test_one_code_used_twice_at_once_verifies_one_rating(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    code = (await officer_code(client))["code"]
    citizens = [await citizen_token(client, f"u{i}") for i in range(4)]
    answers = await asyncio.gather(
        *(rate(client, world.card.code, c, encounter_code=code) for c in citizens)
    )
    assert sorted(a.status_code for a in answers) == [201, 422, 422, 422]
    assert await Evaluation.filter(verified=True).count() == 1


async def test_an_expired_code_is_refused(
    client: httpx.AsyncClient, services: Services, frozen: None
) -> None:
    world = await make_world()
    code = (await officer_code(client))["code"]
    clock.advance(timedelta(minutes=9, seconds=59))
    page = (await client.get(f"/api/v1/cards/{world.card.code}", params={"e": code})).json()
    assert page["encounter"]["valid"] is True
    clock.advance(timedelta(seconds=1))
    page = (await client.get(f"/api/v1/cards/{world.card.code}", params={"e": code})).json()
    assert page["encounter"]["valid"] is False
    assert page["encounter"]["code"] == "encounter_code_expired"
    citizen = await citizen_token(client)
    error(
        await rate(client, world.card.code, citizen, encounter_code=code),
        422,
        "encounter_code_expired",
    )
    assert await Evaluation.all().count() == 0


async def test_another_officers_code_or_garbage_is_invalid(
    client: httpx.AsyncClient, services: Services, frozen: None
) -> None:
    world = await make_world()
    code = (await officer_code(client))["code"]
    citizen = await citizen_token(client)
    for card, bad in (
        (world.other_card.code, code),  # another officer's card
        (world.card.code, "22222222"),
        (world.card.code, "not-a-code!"),
        (world.card.code, "x" * 32),
    ):
        error(await rate(client, card, citizen, encounter_code=bad), 422, "encounter_code_invalid")
        page = (await client.get(f"/api/v1/cards/{card}", params={"e": bad})).json()
        assert page["encounter"]["code"] == "encounter_code_invalid"
    error(
        await rate(client, world.card.code, citizen, encounter_code="y" * 33),
        422,
        "validation_failed",
    )
    assert await Evaluation.all().count() == 0
    # The code is still good on its own card.
    res = await rate(client, world.card.code, citizen, encounter_code=code)
    assert res.status_code == 201 and res.json()["verified"] is True


async def test_who_may_issue_encounter_codes(
    client: httpx.AsyncClient, services: Services, frozen: None
) -> None:
    world = await make_world()
    cert = world.officer.cert_no
    # A colleague of the same unit, on behalf of an officer without an account of their own.
    county = await staff_token(client, "county-430102")
    res = await issue(client, county, cert_no=cert)
    assert res.status_code == 201 and res.json()["card_code"] == world.card.code
    error(await issue(client, county), 422, "validation_failed")  # no officer of one's own
    error(await issue(client, county, cert_no="00000000000"), 404, "officer_not_found")
    other_unit = await staff_token(client, "county-430103")
    error(await issue(client, other_unit, cert_no=cert), 403, "officer_out_of_scope")
    province = await staff_token(client, "province")
    error(await issue(client, province, cert_no=cert), 403, "capability_missing")
    # The officer's own account names itself or nobody.
    officer = await staff_token(client, "officer-430102")
    assert (await issue(client, officer, cert_no=cert)).status_code == 201
    world.card.revoked_at = clock.now()
    await world.card.save()
    error(await issue(client, officer), 409, "no_active_card")
    error(await issue(client, {}), 401, "token_missing")


# --- burst flags -----------------------------------------------------------------------------------


async def flags_of(card_id: int) -> list[tuple[str, list[str]]]:
    rows = await Evaluation.filter(card_id=card_id).order_by("id")
    return [(r.flag_status, [x["code"] for x in r.flag_reasons]) for r in rows]


async def test_a_burst_for_one_officer_is_flagged(
    client: httpx.AsyncClient,
    services: Services,
    frozen: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(services.settings, "burst_officer_ratings", 3)
    monkeypatch.setattr(services.settings, "burst_officer_minutes", 10)
    world = await make_world()
    for i in range(2):
        res = await rate(client, world.card.code, await citizen_token(client, f"u{i}"))
        assert res.status_code == 201
        clock.advance(timedelta(minutes=4))
    assert await flags_of(world.card.id) == [("", []), ("", [])]
    third = await rate(client, world.card.code, await citizen_token(client, "u2"))
    assert third.status_code == 201 and "flag" not in third.text  # nothing told to the rater
    # The whole burst is flagged, the earlier ratings too; all are stored.
    assert await flags_of(world.card.id) == [("pending", ["officer_burst"])] * 3
    flagged = await Evaluation.filter(card_id=world.card.id).first()
    assert (
        flagged is not None
        and flagged.flagged
        and flagged.flagged_at == START + timedelta(minutes=8)
    )
    assert flagged.flag_reasons[0] == {
        "code": "officer_burst",
        "count": 3,
        "minutes": 10,
        "threshold": 3,
    }
    # Later, out of the window: not flagged. Another officer: never concerned.
    clock.advance(timedelta(minutes=30))
    assert (
        await rate(client, world.card.code, await citizen_token(client, "u3"))
    ).status_code == 201
    assert (await flags_of(world.card.id))[-1] == ("", [])
    assert (
        await rate(client, world.other_card.code, await citizen_token(client, "u4"))
    ).status_code == 201
    assert await flags_of(world.other_card.id) == [("", [])]


async def test_one_user_rating_many_officers_is_flagged(
    client: httpx.AsyncClient,
    services: Services,
    frozen: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(services.settings, "burst_citizen_officers", 3)
    monkeypatch.setattr(services.settings, "burst_citizen_minutes", 60)
    world = await make_world()
    _, third_card = await officer_with_card("430102", "王执法", "43010299002")
    citizen = await citizen_token(client)
    for card in (world.card, world.other_card):
        assert (await rate(client, card.code, citizen)).status_code == 201
        clock.advance(timedelta(minutes=25))
    bystander = await rate(client, third_card.code, await citizen_token(client, "u2"))
    assert bystander.status_code == 201
    assert (await rate(client, third_card.code, citizen)).status_code == 201
    rows = await Evaluation.filter(flag_status="pending").order_by("id")
    assert [r.card_id for r in rows] == [world.card.id, world.other_card.id, third_card.id]
    assert all(r.flag_reasons[0]["code"] == "citizen_burst" for r in rows)
    assert rows[0].flag_reasons[0]["count"] == 3
    # The other user's rating of the same officer is not part of it.
    assert (await Evaluation.get(id=bystander.json()["id"])).flag_status == ""


# --- the reviewer's queue --------------------------------------------------------------------------


async def flagged_world(
    client: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """Two ratings of 芙蓉区's officer and two of 天心区's, all flagged as officer bursts."""
    monkeypatch.setattr(services.settings, "burst_officer_ratings", 2)
    world = await make_world()
    await staff("sup-430103", "430103", "supervisor")
    await staff("sup-430102", "430102", "supervisor", officer=world.officer)
    n = 0
    for card, levels in ((world.card, (5, 1)), (world.other_card, (5, 4))):
        for level in levels:
            n += 1
            res = await rate(client, card.code, await citizen_token(client, f"u{n}"), level=level)
            assert res.status_code == 201, res.text
    # One unflagged rating, later.
    clock.advance(timedelta(hours=1))
    assert (
        await rate(client, world.card.code, await citizen_token(client, "late"))
    ).status_code == 201
    assert await open_intake(services) == 1
    return world


async def queue(client: httpx.AsyncClient, headers: Headers, **params: Any) -> httpx.Response:
    return await client.get("/api/v1/staff/ratings/flagged", params=params, headers=headers)


async def test_flagged_ratings_are_listed_for_the_unit_subtree(
    client: httpx.AsyncClient,
    services: Services,
    frozen: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = await flagged_world(client, services, monkeypatch)
    city = (await queue(client, await staff_token(client, "city-4301"))).json()
    assert {i["unit"]["code"] for i in city["items"]} == {"430102", "430103"}
    assert len(city["items"]) == 4 and city["counts"] == {
        "pending": 4,
        "confirmed": 0,
        "cleared": 0,
    }
    item = next(i for i in city["items"] if i["level"] == 1)
    assert item["officer"] == {"name": "张执法", "cert_no": "43010299001"}
    assert item["reasons"][0]["code"] == "officer_burst" and "张" not in item["reasons"][0]["text"]
    assert item["ticket_no"] and item["citizen_ref"] and "openid" not in str(item)
    assert len((await queue(client, await staff_token(client, "province"))).json()["items"]) == 4
    county = (await queue(client, await staff_token(client, "sup-430103"))).json()
    assert [i["officer"]["cert_no"] for i in county["items"]] == [world.other_officer.cert_no] * 2
    # A supervisor who is also the officer never sees the flags about themself.
    assert (await queue(client, await staff_token(client, "sup-430102"))).json()["items"] == []
    error(
        await queue(client, await staff_token(client, "county-430102")), 403, "capability_missing"
    )
    error(
        await queue(client, await staff_token(client, "city-4301"), status="bogus"),
        422,
        "validation_failed",
    )


async def test_a_reviewer_confirms_or_clears_and_the_assessment_follows(
    client: httpx.AsyncClient,
    services: Services,
    frozen: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = await flagged_world(client, services, monkeypatch)
    city = await staff_token(client, "city-4301")
    items = (await queue(client, city)).json()["items"]
    mine = sorted((i for i in items if i["unit"]["code"] == "430102"), key=lambda i: i["level"])
    bad, good = mine[0], mine[1]

    def review_url(ident: object) -> str:
        return f"/api/v1/staff/ratings/{ident}/review"

    before = (await client.get("/api/v1/staff/ratings/summary", headers=city)).json()
    assert before["total"] == 5 and before["counted"] == 5
    assert before["flagged"] == {"pending": 4, "confirmed": 0, "cleared": 0}

    res = await client.post(
        review_url(bad["id"]),
        json={"decision": "confirm", "note": "同一时段集中刷评"},
        headers=city,
    )
    assert res.status_code == 200, res.text
    assert res.json()["flag_status"] == "confirmed" and res.json()["flagged"] is True
    assert res.json()["reviews"][0]["note"] == "同一时段集中刷评"
    assert res.json()["reviews"][0]["by"] == "city-4301"
    res = await client.post(
        review_url(good["id"]), json={"decision": "clear", "note": "核实为正常执法"}, headers=city
    )
    assert res.json()["flag_status"] == "cleared" and res.json()["flagged"] is False
    error(
        await client.post(
            review_url(good["id"]), json={"decision": "clear", "note": "再次"}, headers=city
        ),
        409,
        "flag_already_reviewed",
    )
    # Every decision is kept; a reversal too.
    res = await client.post(
        review_url(good["id"]), json={"decision": "confirm", "note": "复查后确认异常"}, headers=city
    )
    assert [r["decision"] for r in res.json()["reviews"]] == ["cleared", "confirmed"]
    res = await client.post(
        review_url(good["id"]), json={"decision": "clear", "note": "最终解除"}, headers=city
    )
    assert await RatingReview.filter(evaluation_id=good["id"]).count() == 3
    review = await RatingReview.filter(evaluation_id=bad["id"]).get()
    assert review.previous_status == "pending" and review.created_at == START + timedelta(hours=1)

    after = (await client.get("/api/v1/staff/ratings/summary", headers=city)).json()
    assert after["total"] == 5 and after["counted"] == 4  # the confirmed 差评 is left out
    assert after["flagged"] == {"pending": 2, "confirmed": 1, "cleared": 1}
    assert after["levels"]["1"] == 0 and after["levels"]["5"] == 3 and after["bad_rate"] == 0
    confirmed = (await queue(client, city, status="confirmed")).json()["items"]
    assert [i["id"] for i in confirmed] == [bad["id"]]

    # Out of scope, unflagged, unknown or malformed: not found.
    sup = await staff_token(client, "sup-430103")
    unflagged = await Evaluation.get(flag_status="", card_id=world.card.id)
    body = {"decision": "confirm", "note": "越权审核"}
    for headers, ident in (
        (sup, bad["id"]),
        (city, unflagged.id),
        (city, 999999),
        (city, "abc"),
        (city, 2**40),
    ):
        error(
            await client.post(review_url(ident), json=body, headers=headers),
            404,
            "flagged_rating_not_found",
        )
    handler = await staff_token(client, "county-430102")
    error(
        await client.post(review_url(bad["id"]), json=body, headers=handler),
        403,
        "capability_missing",
    )
    for wrong in ({"decision": "maybe", "note": "理由充分"}, {"decision": "clear"}):
        error(
            await client.post(review_url(bad["id"]), json=wrong, headers=city),
            422,
            "validation_failed",
        )


async def test_a_reviewed_rating_is_not_flagged_again(
    client: httpx.AsyncClient,
    services: Services,
    frozen: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(services.settings, "burst_officer_ratings", 2)
    world = await make_world()
    ids = []
    for user in ("u1", "u2"):
        res = await rate(client, world.card.code, await citizen_token(client, user))
        ids.append(res.json()["id"])
        clock.advance(timedelta(minutes=1))
    city = await staff_token(client, "city-4301")
    res = await client.post(
        f"/api/v1/staff/ratings/{ids[0]}/review",
        json={"decision": "clear", "note": "正常执法"},
        headers=city,
    )
    assert res.status_code == 200, res.text
    # The burst goes on within the window: the new rating is flagged, the cleared one stays cleared.
    res = await rate(client, world.card.code, await citizen_token(client, "u3"))
    ids.append(res.json()["id"])
    assert [(await Evaluation.get(id=i)).flag_status for i in ids] == [
        "cleared",
        "pending",
        "pending",
    ]
    last = await Evaluation.get(id=ids[2])
    assert last.flag_reasons[0]["count"] == 3


async def test_the_orm_rules_flag_what_the_sql_flags(
    client: httpx.AsyncClient,
    services: Services,
    frozen: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The embedded default (SQLite) flags through the ORM: the same flags as PostgreSQL's SQL."""
    from tortoise.transactions import in_transaction

    from api.services import rating_bursts

    monkeypatch.setattr(services.settings, "burst_officer_ratings", 3)
    monkeypatch.setattr(services.settings, "burst_citizen_officers", 2)
    world = await make_world()
    first = await citizen_token(client, "u0")
    for card, headers in (
        (world.card, first),
        (world.card, await citizen_token(client, "u1")),
        (world.card, await citizen_token(client, "u2")),  # the officer's burst
        (world.other_card, first),  # u0's burst: two officers
    ):
        assert (await rate(client, card.code, headers)).status_code == 201
        clock.advance(timedelta(minutes=1))

    async def flags() -> list[tuple[str, list[dict[str, Any]], bool]]:
        rows = await Evaluation.all().order_by("id")
        return [(r.flag_status, r.flag_reasons, r.flagged_at is not None) for r in rows]

    by_sql = await flags()
    assert [f[0] for f in by_sql] == ["pending"] * 4
    assert [[r["code"] for r in f[1]] for f in by_sql] == [
        ["officer_burst", "citizen_burst"],
        ["officer_burst"],
        ["officer_burst"],
        ["citizen_burst"],
    ]
    await Evaluation.all().update(flag_status="", flag_reasons=[], flagged=False, flagged_at=None)
    async with in_transaction() as conn:
        for ev in await Evaluation.all().order_by("id").using_db(conn):
            await rating_bursts.flag_bursts_orm(services, ev, conn=conn)
    assert await flags() == by_sql


async def test_the_next_rating_time_told_is_never_too_early(
    client: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services.settings, "rating_window_hours", 2)
    clock.freeze(START + timedelta(milliseconds=400))
    world = await make_world()
    citizen = await citizen_token(client)
    assert (await rate(client, world.card.code, citizen)).status_code == 201
    clock.advance(timedelta(minutes=30))
    err = error(await rate(client, world.card.code, citizen), 409, "already_rated")
    assert err["details"]["next_rating_at"] == "2025-03-03T12:00:01+08:00"
    clock.freeze(at("2025-03-03 12:00:01"))  # exactly when told
    assert (await rate(client, world.card.code, citizen)).status_code == 201
