"""Content security on the real app: WeChat msgSecCheck v2 and img_sec_check, holds, reviewers."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sanic import Sanic

from api.fakes.wechat import FakeWeChatServer
from api.integrations.storage import LocalStorage
from api.models import Case, CaseEvent, ContentHold, Evaluation, Evidence
from api.services.audit import verify_chain
from api.services.context import Services
from api.services.moderation import HELD_TEXT, REJECTED_TEXT
from tests.support import World, citizen_token, make_world, open_intake, staff_token

SEC_CHECK = "/wxa/msg_sec_check"
IMG_CHECK = "/wxa/img_sec_check"
STAFF = "/api/v1/staff/complaints"
CLEAN = "执法人员态度恶劣，拒不出示执法证件。"
REVIEW = "执法人员态度恶劣，这段内容待审。"  # the fake answers suggest=review
RISKY = "这里含有违禁词，执法人员态度恶劣。"  # the fake answers suggest=risky


@pytest.fixture
async def world(services: Services) -> World:
    return await make_world()


@pytest.fixture
def uploads_dir(
    app_server: tuple[str, Services], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    app = Sanic.get_app("pingyi_test")
    root = tmp_path / "uploads"
    monkeypatch.setattr(app.ctx, "evidence", replace(app.ctx.evidence, storage=LocalStorage(root)))
    yield root


async def _complain(
    client: httpx.AsyncClient, world: World, description: str, **extra: object
) -> httpx.Response:
    citizen = await citizen_token(client)
    body = {
        "card_code": world.card.code,
        "categories": ["RUDE"],
        "description": description,
        "anonymous": False,
        **extra,
    }
    return await client.post("/api/v1/complaints", json=body, headers=citizen)


async def _filed(client: httpx.AsyncClient, world: World, description: str) -> str:
    res = await _complain(client, world, description)
    assert res.status_code == 201, res.text
    return str(res.json()["ticket_no"])


async def _staff_case(client: httpx.AsyncClient, who: str, ticket: str) -> dict[str, object]:
    res = await client.get(f"{STAFF}/{ticket}", headers=await staff_token(client, who))
    assert res.status_code == 200, res.text
    data: dict[str, object] = res.json()
    return data


def _stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _jpeg(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 240), color).save(out, format="JPEG")
    return out.getvalue()


# --- texts ----------------------------------------------------------------------------------------


async def test_pass_is_stored_and_shown(
    client: httpx.AsyncClient, world: World, wechat_fake: FakeWeChatServer
) -> None:
    ticket = await _filed(client, world, CLEAN)
    case = await Case.get(ticket_no=ticket)
    assert case.content_status == "ok"
    assert await ContentHold.all().count() == 0
    assert wechat_fake.calls[SEC_CHECK] == 1  # the description (no location given)
    view = await _staff_case(client, "county-430102", ticket)
    assert view["description"] == CLEAN
    assert view["content"] == {"status": "ok", "holds": []}


async def test_review_is_accepted_and_held(client: httpx.AsyncClient, world: World) -> None:
    res = await _complain(client, world, REVIEW, location="芙蓉路口")
    assert res.status_code == 201, res.text
    assert res.json()["deadlines"], "a held complaint's clocks run all the same"
    ticket = res.json()["ticket_no"]
    case = await Case.get(ticket_no=ticket)
    assert case.content_status == "held"
    assert case.description == REVIEW  # stored, never lost
    hold = await ContentHold.get(case_id=case.id)
    assert (hold.field, hold.reason, hold.status) == ("description", "review", "held")
    # The handler (no content.review) sees a placeholder and the flag; the location passed.
    view = await _staff_case(client, "county-430102", ticket)
    assert view["description"] == HELD_TEXT
    assert view["location"] == "芙蓉路口"
    content = view["content"]
    assert isinstance(content, dict) and content["status"] == "held"
    assert content["holds"][0]["text"] is None
    # The supervising office (content.review) reads it to decide.
    view = await _staff_case(client, "city-4301", ticket)
    assert view["description"] == REVIEW
    assert isinstance(view["content"], dict) and view["content"]["holds"][0]["text"] == REVIEW
    # Lists carry the flag, never the text; the audit log records the hold (not public).
    res = await client.get(STAFF, headers=await staff_token(client, "county-430102"))
    item = next(i for i in res.json()["items"] if i["ticket_no"] == ticket)
    assert item["content_held"] is True and REVIEW not in res.text
    event = await CaseEvent.get(case_id=case.id, kind="content_held")
    assert event.public is False


async def test_risky_is_refused_and_nothing_stored(client: httpx.AsyncClient, world: World) -> None:
    res = await _complain(client, world, RISKY)
    assert res.status_code == 422
    error = res.json()["error"]
    assert error["code"] == "content_risky"
    assert "违法违规" in error["message"]
    assert error["details"]["fields"][0]["field"] == "description"
    assert await Case.all().count() == 0
    assert await ContentHold.all().count() == 0
    # A risky location refuses the complaint just the same.
    res = await _complain(client, world, CLEAN, location="违禁词大街")
    assert res.status_code == 422 and res.json()["error"]["code"] == "content_risky"
    assert await Case.all().count() == 0


@pytest.mark.parametrize("errcode", [-1, 45011, 61010])
async def test_wechat_error_holds(
    client: httpx.AsyncClient, world: World, wechat_fake: FakeWeChatServer, errcode: int
) -> None:
    wechat_fake.fail_next(SEC_CHECK, errcode)
    ticket = await _filed(client, world, CLEAN)
    case = await Case.get(ticket_no=ticket)
    assert case.content_status == "held"  # fail closed: unchecked text is never passed
    hold = await ContentHold.get(case_id=case.id)
    assert (hold.reason, hold.detail) == ("check_failed", f"errcode {errcode}")


async def test_timeout_holds(
    client: httpx.AsyncClient,
    world: World,
    services: Services,
    wechat_fake: FakeWeChatServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(services.settings, "content_check_timeout", 0.3)
    await services.wechat.access_token()  # only the check itself is slow
    wechat_fake.delay_next(SEC_CHECK, 1.5)
    ticket = await _filed(client, world, CLEAN)
    hold = await ContentHold.get(case__ticket_no=ticket)
    assert (hold.reason, hold.detail, hold.status) == ("check_failed", "timeout", "held")


async def test_evaluation_comment_held(
    client: httpx.AsyncClient, world: World, services: Services
) -> None:
    citizen = await citizen_token(client)
    res = await client.post(
        f"/api/v1/cards/{world.card.code}/evaluations",
        json={"level": 1, "comment": REVIEW},
        headers=citizen,
    )
    assert res.status_code == 201, res.text
    ticket = res.json()["ticket_no"]
    assert await open_intake(services) == 1
    evaluation = await Evaluation.get(case__ticket_no=ticket)
    assert evaluation.content_status == "held"
    view = await _staff_case(client, "county-430102", ticket)
    rating = view["rating"]
    assert isinstance(rating, dict) and rating["comment"] == HELD_TEXT
    assert view["description"] == HELD_TEXT  # a 差评 case's description is that comment
    res = await client.post(
        f"/api/v1/cards/{world.other_card.code}/evaluations",
        json={"level": 4, "comment": RISKY},
        headers=citizen,
    )
    assert res.status_code == 422 and res.json()["error"]["code"] == "content_risky"
    assert await Evaluation.all().count() == 1


async def _replied(client: httpx.AsyncClient, world: World) -> tuple[str, dict[str, str]]:
    citizen = await citizen_token(client, "feedback-user")
    res = await client.post(
        "/api/v1/complaints",
        json={"card_code": world.card.code, "categories": ["RUDE"], "description": CLEAN},
        headers=citizen,
    )
    ticket = res.json()["ticket_no"]
    county = await staff_token(client, "county-430102")
    assert (await client.post(f"{STAFF}/{ticket}/acknowledge", headers=county)).status_code == 200
    res = await client.post(f"{STAFF}/{ticket}/reply", json={"message": "已核实"}, headers=county)
    assert res.status_code == 200, res.text
    return ticket, citizen


async def test_recheck_reason_risky_and_held(client: httpx.AsyncClient, world: World) -> None:
    ticket, citizen = await _replied(client, world)
    url = f"/api/v1/complaints/{ticket}/feedback"
    risky = {"satisfied": False, "comment": "", "reason": RISKY}
    res = await client.post(url, json=risky, headers=citizen)
    assert res.status_code == 422 and res.json()["error"]["code"] == "content_risky"
    case = await Case.get(ticket_no=ticket)
    assert (case.status, case.satisfied, case.feedback_comment) == ("replied", None, None)
    held = {"satisfied": False, "comment": REVIEW, "reason": "处理结果与事实不符"}
    res = await client.post(url, json=held, headers=citizen)
    assert res.status_code == 200, res.text
    case = await Case.get(ticket_no=ticket)
    assert (case.status, case.content_status) == ("rechecking", "held")
    view = await _staff_case(client, "city-4301", ticket)
    assert view["feedback_comment"] == REVIEW  # the re-checking reviewer may read it
    view = await _staff_case(client, "province", ticket)
    assert view["feedback_comment"] == REVIEW


async def test_supplement_held_then_released(client: httpx.AsyncClient, world: World) -> None:
    ticket = await _filed(client, world, CLEAN)
    county = await staff_token(client, "county-430102")
    await client.post(f"{STAFF}/{ticket}/acknowledge", headers=county)
    res = await client.post(
        f"{STAFF}/{ticket}/request-info", json={"message": "请提供罚单照片"}, headers=county
    )
    assert res.status_code == 200, res.text
    citizen = await citizen_token(client)  # same WeChat user as the reporter
    res = await client.post(
        f"/api/v1/complaints/{ticket}/supplements", json={"message": REVIEW}, headers=citizen
    )
    assert res.status_code == 200, res.text
    assert res.json()["status"] == "acknowledged"  # the paused clocks run again
    assert REVIEW not in res.text  # not in the timeline while held
    view = await _staff_case(client, "county-430102", ticket)
    assert REVIEW not in str(view)
    hold = await ContentHold.get(case__ticket_no=ticket)
    assert hold.field == "supplement"
    city = await staff_token(client, "city-4301")
    for no_such_hold in (0, hold.id + 1000, 2**63 - 1, 2**63, 10**30):
        res = await client.post(
            f"{STAFF}/{ticket}/content/{no_such_hold}", json={"decision": "release"}, headers=city
        )
        assert res.status_code == 404, res.text
        assert res.json()["error"]["code"] == "content_hold_not_found"
    res = await client.post(
        f"{STAFF}/{ticket}/content/{hold.id}", json={"decision": "release"}, headers=city
    )
    assert res.status_code == 200, res.text
    res = await client.get(f"/api/v1/complaints/{ticket}", headers=citizen)
    texts = [e["text"] for e in res.json()["timeline"]]
    assert any(REVIEW in t for t in texts)


# --- reviewers ------------------------------------------------------------------------------------


async def test_release_and_reject_are_audited(client: httpx.AsyncClient, world: World) -> None:
    res = await _complain(client, world, REVIEW, location="待审的地点")
    ticket = res.json()["ticket_no"]
    case = await Case.get(ticket_no=ticket)
    holds = {h.field: h for h in await ContentHold.filter(case_id=case.id)}
    assert set(holds) == {"description", "location"}
    url = f"{STAFF}/{ticket}/content"
    # The queue names what waits, never the text.
    city = await staff_token(client, "city-4301")
    res = await client.get("/api/v1/staff/content-holds", headers=city)
    assert res.status_code == 200
    assert {i["field"] for i in res.json()["items"]} == {"description", "location"}
    assert REVIEW not in res.text
    # Without the capability: 403; outside the scope (or the accused officer): 404.
    county = await staff_token(client, "county-430102")
    res = await client.post(
        f"{url}/{holds['description'].id}", json={"decision": "release"}, headers=county
    )
    assert res.status_code == 403 and res.json()["error"]["code"] == "capability_missing"
    res = await client.get("/api/v1/staff/content-holds", headers=county)
    assert res.status_code == 403
    for outsider in ("county-430103", "officer-430102"):
        headers = await staff_token(client, outsider)
        res = await client.post(
            f"{url}/{holds['description'].id}", json={"decision": "release"}, headers=headers
        )
        assert res.status_code == 404, outsider
    # Release the description, reject the location.
    res = await client.post(
        f"{url}/{holds['description'].id}",
        json={"decision": "release", "note": "正常投诉"},
        headers=city,
    )
    assert res.status_code == 200, res.text
    assert res.json()["content"]["status"] == "held"  # the location still waits
    res = await client.post(
        f"{url}/{holds['location'].id}", json={"decision": "reject", "note": "广告"}, headers=city
    )
    assert res.status_code == 200, res.text
    res = await client.post(
        f"{url}/{holds['location'].id}", json={"decision": "release"}, headers=city
    )
    assert res.status_code == 409 and res.json()["error"]["code"] == "content_decided"
    res = await client.post(f"{url}/999999", json={"decision": "release"}, headers=city)
    assert res.status_code == 404
    res = await client.post(
        f"{url}/{holds['description'].id}", json={"decision": "maybe"}, headers=city
    )
    assert res.status_code == 422
    # What each side sees now.
    view = await _staff_case(client, "county-430102", ticket)
    assert view["description"] == REVIEW
    assert view["location"] == REJECTED_TEXT
    view = await _staff_case(client, "city-4301", ticket)
    assert view["location"] == REJECTED_TEXT  # rejected text is shown to no one
    case = await Case.get(id=case.id)
    assert case.content_status == "rejected"
    assert case.location == "待审的地点"  # kept for the record
    # Both decisions are on the case's audit log, by the reviewer, and the chain holds.
    city_user = await _user("city-4301")
    events = await CaseEvent.filter(case_id=case.id, kind__startswith="content_").order_by("seq")
    assert [e.kind for e in events] == [
        "content_held",
        "content_held",
        "content_released",
        "content_rejected",
    ]
    assert all(e.staff_id == city_user for e in events[2:])
    assert events[3].data["note"] == "广告" and not events[3].public
    assert await verify_chain(case.id) == []


async def _user(username: str) -> int:
    from api.models import StaffUser

    return (await StaffUser.get(username=username)).id


# --- evidence photos ------------------------------------------------------------------------------


async def test_photo_pass_and_risky(
    client: httpx.AsyncClient, world: World, uploads_dir: Path, wechat_fake: FakeWeChatServer
) -> None:
    citizen = await citizen_token(client)
    res = await client.post("/api/v1/uploads", content=_jpeg((30, 120, 200)), headers=citizen)
    assert res.status_code == 201, res.text
    assert res.json()["content_status"] == "ok"
    assert wechat_fake.calls[IMG_CHECK] == 1
    res = await client.post("/api/v1/uploads", content=_jpeg((255, 0, 0)), headers=citizen)
    assert res.status_code == 422, res.text
    assert res.json()["error"]["code"] == "content_risky"
    assert await Evidence.all().count() == 1  # the risky photo was never stored
    assert len(_stored_files(uploads_dir)) == 1


@pytest.mark.parametrize("failure", ["error", "timeout"])
async def test_photo_check_failure_holds_until_released(
    client: httpx.AsyncClient,
    world: World,
    services: Services,
    uploads_dir: Path,
    wechat_fake: FakeWeChatServer,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    citizen = await citizen_token(client)
    if failure == "error":
        wechat_fake.fail_next(IMG_CHECK, -1)
    else:
        monkeypatch.setattr(services.settings, "content_check_timeout", 0.3)
        await services.wechat.access_token()
        wechat_fake.delay_next(IMG_CHECK, 1.5)
    res = await client.post("/api/v1/uploads", content=_jpeg((30, 120, 200)), headers=citizen)
    assert res.status_code == 201, res.text
    assert res.json()["content_status"] == "held"
    photo_id = res.json()["id"]
    res = await _complain(client, world, CLEAN, photos=[photo_id])
    assert res.status_code == 201, res.text
    ticket = res.json()["ticket_no"]
    case = await Case.get(ticket_no=ticket)
    assert case.content_status == "held"
    hold = await ContentHold.get(evidence_id=photo_id)
    assert (hold.case_id, hold.field, hold.reason) == (case.id, "photo", "check_failed")
    # Not shown to the handler: no URL. The reviewer gets one to decide.
    view = await _staff_case(client, "county-430102", ticket)
    assert view["photos"] == [{"id": photo_id, "content_status": "held", "url": None}]
    view = await _staff_case(client, "city-4301", ticket)
    photos = view["photos"]
    assert isinstance(photos, list) and photos[0]["url"]
    assert (await client.get(photos[0]["url"])).status_code == 200
    city = await staff_token(client, "city-4301")
    res = await client.post(
        f"{STAFF}/{ticket}/content/{hold.id}", json={"decision": "release"}, headers=city
    )
    assert res.status_code == 200, res.text
    view = await _staff_case(client, "county-430102", ticket)
    photos = view["photos"]
    assert isinstance(photos, list) and photos[0]["content_status"] == "released"
    res = await client.get(photos[0]["url"])
    assert res.status_code == 200 and res.headers["content-type"] == "image/jpeg"


async def test_rejected_photo_link_is_dead(
    client: httpx.AsyncClient, world: World, uploads_dir: Path, wechat_fake: FakeWeChatServer
) -> None:
    citizen = await citizen_token(client)
    wechat_fake.fail_next(IMG_CHECK, 45011)
    res = await client.post("/api/v1/uploads", content=_jpeg((30, 120, 200)), headers=citizen)
    photo_id = res.json()["id"]
    ticket = (await _complain(client, world, CLEAN, photos=[photo_id])).json()["ticket_no"]
    view = await _staff_case(client, "city-4301", ticket)
    photos = view["photos"]
    assert isinstance(photos, list)
    link = photos[0]["url"]
    hold = await ContentHold.get(evidence_id=photo_id)
    city = await staff_token(client, "city-4301")
    res = await client.post(
        f"{STAFF}/{ticket}/content/{hold.id}", json={"decision": "reject"}, headers=city
    )
    assert res.status_code == 200
    assert (await client.get(link)).status_code == 404  # the link handed out earlier is dead
    assert (await Evidence.get(id=photo_id)).content_status == "rejected"


async def test_an_anonymous_bad_rating_keeps_its_reporters_number_from_staff(
    client: httpx.AsyncClient, world: World, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A held 差评 comment with the reporter's phone in it, the case made anonymous: the number is
    in no staff output — the case (its holds included) and the flagged-ratings list; a list never
    shows held or rejected text."""
    monkeypatch.setattr(services.settings, "burst_officer_ratings", 1)  # every rating flagged
    citizen = await citizen_token(client)
    res = await client.post(
        f"/api/v1/cards/{world.card.code}/evaluations",
        json={"level": 1, "comment": REVIEW + "电话13800138000"},
        headers=citizen,
    )
    assert res.status_code == 201, res.text
    ticket = res.json()["ticket_no"]
    made = await client.post(
        f"/api/v1/complaints/{ticket}/anonymity", json={"anonymous": True}, headers=citizen
    )
    assert made.status_code == 200, made.text
    city = await staff_token(client, "city-4301")
    case = await client.get(f"{STAFF}/{ticket}", headers=city)
    assert case.status_code == 200, case.text
    assert "13800138000" not in case.text and case.json()["content"]["holds"]
    listed = await client.get("/api/v1/staff/ratings/flagged", headers=city)
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()["items"]
    assert item["ticket_no"] == ticket and item["comment"] == HELD_TEXT
    hold = await ContentHold.get(evaluation_id=res.json()["id"])
    decided = await client.post(
        f"{STAFF}/{ticket}/content/{hold.id}", json={"decision": "reject"}, headers=city
    )
    assert decided.status_code == 200, decided.text
    listed = await client.get("/api/v1/staff/ratings/flagged", headers=city)
    assert listed.json()["items"][0]["comment"] == REJECTED_TEXT


async def test_a_flagged_comment_of_an_anonymous_case_is_listed_without_numbers(
    client: httpx.AsyncClient, world: World, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services.settings, "burst_officer_ratings", 1)
    citizen = await citizen_token(client)
    res = await client.post(
        f"/api/v1/cards/{world.card.code}/evaluations",
        json={"level": 2, "comment": CLEAN + "请回电13800138000"},
        headers=citizen,
    )
    ticket = res.json()["ticket_no"]
    await client.post(
        f"/api/v1/complaints/{ticket}/anonymity", json={"anonymous": True}, headers=citizen
    )
    listed = await client.get(
        "/api/v1/staff/ratings/flagged", headers=await staff_token(client, "city-4301")
    )
    (item,) = listed.json()["items"]
    assert "13800138000" not in item["comment"] and "（已隐去）" in item["comment"]
