"""群众监督员: appointed by an administrator with the citizen's code; their reports are marked and
handled by the supervising unit (DOMAIN.md), their 差评 too; anonymous ones are not marked."""

from __future__ import annotations

import httpx

from api.models import Case, Citizen, PublicSupervisorChange, StaffUser, Unit
from api.services.context import Services
from tests.support import World, citizen_token, make_world, open_intake, staff, staff_token

ADMIN = "/api/v1/admin/citizens"
STAFF = "/api/v1/staff/complaints"


async def _code(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    me = await client.get("/api/v1/me", headers=headers)
    assert me.status_code == 200, me.text
    code: str = me.json()["supervisor_code"]
    return code


async def _appoint(
    client: httpx.AsyncClient, admin: dict[str, str], code: str, appointed: bool = True
) -> httpx.Response:
    note = "长沙市支队第一批群众监督员" if appointed else "任期届满"
    return await client.put(
        f"{ADMIN}/{code}/public-supervisor",
        json={"appointed": appointed, "note": note},
        headers=admin,
    )


async def _complain(
    client: httpx.AsyncClient, citizen: dict[str, str], world: World, **extra: object
) -> str:
    body = {"card_code": world.card.code, "categories": ["RUDE"], "description": "态度恶劣。"}
    res = await client.post("/api/v1/complaints", json={**body, **extra}, headers=citizen)
    assert res.status_code == 201, res.text
    return str(res.json()["ticket_no"])


async def test_appointed_by_code_and_audited(client: httpx.AsyncClient, services: Services) -> None:
    await make_world()
    await staff("city-admin-4301", "4301", "city_admin")
    citizen = await citizen_token(client, "supervisor-wang")
    code = await _code(client, citizen)
    assert len(code) == 10 and await _code(client, citizen) == code  # the same code every time
    me = (await client.get("/api/v1/me", headers=citizen)).json()
    assert me["is_public_supervisor"] is False and "openid" not in str(me)

    admin = await staff_token(client, "city-admin-4301")
    res = await _appoint(client, admin, code.lower())  # typed in any case
    assert res.status_code == 200, res.text
    view = res.json()
    assert view["appointed"] is True and view["unit"] == {
        "code": "4301",
        "name": view["unit"]["name"],
    }
    assert view["supervisor_code"] == code and view["note"] == "长沙市支队第一批群众监督员"
    assert (await client.get("/api/v1/me", headers=citizen)).json()["is_public_supervisor"]

    ended = await _appoint(client, admin, code, appointed=False)
    assert ended.status_code == 200 and ended.json()["appointed"] is False
    assert ended.json()["unit"] is None
    assert not (await Citizen.get(supervisor_code=code)).is_public_supervisor
    who = await StaffUser.get(username="city-admin-4301")
    changes = await PublicSupervisorChange.filter(citizen__supervisor_code=code).order_by("id")
    assert [(c.appointed, c.note, c.staff_id) for c in changes] == [
        (True, "长沙市支队第一批群众监督员", who.id),
        (False, "任期届满", who.id),
    ]


async def test_appointment_is_managed_from_its_units_subtree(
    client: httpx.AsyncClient, services: Services
) -> None:
    await make_world()
    await staff("city-admin-4301", "4301", "city_admin")
    await staff("city-admin-4302", "4302", "city_admin")
    code = await _code(client, await citizen_token(client, "supervisor-li"))
    changsha, zhuzhou = (
        await staff_token(client, "city-admin-4301"),
        await staff_token(client, "city-admin-4302"),
    )
    handler, province = (
        await staff_token(client, "county-430102"),
        await staff_token(client, "province"),
    )
    denied = await _appoint(client, handler, code)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "capability_missing"
    assert (await _appoint(client, changsha, code)).status_code == 200

    # Another city's administrator cannot see or end the appointment: the answer is the one for
    # a code that does not exist.
    elsewhere = await _appoint(client, zhuzhou, code, appointed=False)
    unknown = await _appoint(client, zhuzhou, "ABCDEFGHJK", appointed=False)
    assert elsewhere.status_code == unknown.status_code == 404
    assert elsewhere.json() == unknown.json()
    assert unknown.json()["error"]["code"] == "citizen_not_found"
    for bad in ("", "nope", "0" * 10, "x" * 40):
        res = await client.put(
            f"{ADMIN}/{bad}/public-supervisor",
            json={"appointed": True, "note": "第一批"},
            headers=changsha,
        )
        assert res.status_code == 404, (bad, res.text)
    for body in ({"appointed": True}, {"appointed": "yes", "note": "第一批"}, {"note": "第一批"}):
        res = await client.put(f"{ADMIN}/{code}/public-supervisor", json=body, headers=changsha)
        assert res.status_code == 422 and res.json()["error"]["code"] == "validation_failed"

    # The province sees every subtree; once ended, another city may appoint the citizen.
    assert (await _appoint(client, province, code, appointed=False)).status_code == 200
    res = await _appoint(client, zhuzhou, code)
    assert res.status_code == 200 and res.json()["unit"]["code"] == "4302"


async def test_reports_and_bad_ratings_are_marked_and_go_to_the_supervising_unit(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    await staff("city-admin-4301", "4301", "city_admin")
    supervisor, plain = (
        await citizen_token(client, "supervisor-zhao"),
        await citizen_token(client, "citizen-qian"),
    )
    admin = await staff_token(client, "city-admin-4301")
    assert (await _appoint(client, admin, await _code(client, supervisor))).status_code == 200

    marked = await _complain(client, supervisor, world, phone="13800138000")
    ordinary = await _complain(client, plain, world)
    anonymous = await _complain(client, supervisor, world, anonymous=True)
    rating = await client.post(
        f"/api/v1/cards/{world.card.code}/evaluations",
        json={"level": 1, "comment": "态度很差"},
        headers=supervisor,
    )
    assert rating.status_code == 201, rating.text
    bad_rating = rating.json()["ticket_no"]
    assert await open_intake(services) == 1

    routed = {
        c.ticket_no: (c.handling_unit_id, c.from_public_supervisor)
        for c in await Case.filter(ticket_no__in=[marked, ordinary, anonymous, bad_rating])
    }
    county, city = world.officer.unit_id, (await Unit.get(code="4301")).id
    assert routed == {
        marked: (city, True),  # one level up, past the officer's own unit
        bad_rating: (city, True),  # a supervisor's 差评 is a report too
        ordinary: (county, False),
        anonymous: (county, False),  # nothing of an anonymous reporter reaches staff
    }

    supervising = await staff_token(client, "city-4301")
    detail = (await client.get(f"{STAFF}/{marked}", headers=supervising)).json()
    assert detail["from_public_supervisor"] is True and detail["handling_unit"]["code"] == "4301"
    inbox = (await client.get(STAFF, headers=supervising)).json()["items"]
    summary = {i["ticket_no"]: i["from_public_supervisor"] for i in inbox}
    assert summary == {marked: True, bad_rating: True, ordinary: False, anonymous: False}
    # The officer's own unit does not see the supervisor's report at all.
    county_inbox = await client.get(STAFF, headers=await staff_token(client, "county-430102"))
    assert {i["ticket_no"] for i in county_inbox.json()["items"]} == {ordinary, anonymous}

    # Made anonymous after filing: from then on the mark is gone from every staff view.
    res = await client.post(
        f"/api/v1/complaints/{marked}/anonymity", json={"anonymous": True}, headers=supervisor
    )
    assert res.status_code == 200, res.text
    detail = (await client.get(f"{STAFF}/{marked}", headers=supervising)).json()
    inbox = (await client.get(STAFF, headers=supervising)).json()["items"]
    assert detail["from_public_supervisor"] is False
    assert next(i for i in inbox if i["ticket_no"] == marked)["from_public_supervisor"] is False
