"""WeChat subscribe messages: consents, the outbox written with each state change, and the sender
against the WeChat fake (real PostgreSQL, Redis, HTTP app and worker code)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from tortoise.transactions import in_transaction

from api import clock
from api.fakes.sms import FakeSmsServer
from api.fakes.wechat import FakeWeChatServer
from api.integrations.wechat import WeChatError
from api.models import Case, Citizen, StaffUser, SubscribeConsent, WeChatOutbox
from api.models.subscribe import ConsentStatus, MessageStatus
from api.schemas import ComplaintCreate
from api.schemas.subscribe import SubscriptionCreate
from api.services import citizen_cases, lifecycle, staff_cases, subscriptions
from api.services.context import Services
from api.services.subscribe_config import clamp, load_subscribe_config
from api.settings import ROOT
from api.workers.wechat_sender import MAX_ATTEMPTS, send_due_wechat
from tests.conftest import APPID, APPSECRET
from tests.support import (
    at,
    citizen_token,
    make_world,
    policy_without_quiet_hours,
    staff_token,
    start_worker,
    stop_workers,
    worker_env,
)

SEND = "/cgi-bin/message/subscribe/send"
STAFF = "/api/v1/staff/complaints"
LIMITS = {"thing": 20, "phrase": 5, "character_string": 32}


@pytest.fixture
def ids(services: Services) -> dict[str, str]:
    return {t.key: t.id for t in services.subscribe.templates}


async def _complaint(
    client: httpx.AsyncClient, card: str, citizen: dict[str, str], **extra: Any
) -> str:
    body = {"card_code": card, "categories": ["RUDE"], "description": "态度恶劣，语言粗暴。"}
    res = await client.post("/api/v1/complaints", json={**body, **extra}, headers=citizen)
    assert res.status_code == 201, res.text
    return str(res.json()["ticket_no"])


async def _subscribe(
    client: httpx.AsyncClient,
    citizen: dict[str, str],
    *template_ids: str,
    ticket: str | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"template_ids": list(template_ids)}
    if ticket:
        body["ticket_no"] = ticket
    return await client.post("/api/v1/subscriptions", json=body, headers=citizen)


async def _act(
    client: httpx.AsyncClient, ticket: str, action: str, staff: dict[str, str], **body: Any
) -> None:
    res = await client.post(f"{STAFF}/{ticket}/{action}", json=body, headers=staff)
    assert res.status_code == 200, res.text


def _delivered(fake: FakeWeChatServer) -> list[dict[str, Any]]:
    return [m for m in fake.subscribe_messages if m["errcode"] == 0]


def _within_limits(data: dict[str, dict[str, str]]) -> bool:
    for key, item in data.items():
        kind = key.rstrip("0123456789")
        if not item["value"] or len(item["value"]) > LIMITS.get(kind, 32):
            return False
    return True


async def test_templates_route_lists_the_ids_to_request(
    client: httpx.AsyncClient, ids: dict[str, str]
) -> None:
    res = await client.get("/api/v1/subscriptions/templates")
    assert res.status_code == 200
    body = res.json()
    assert body["template_ids"] == [ids["progress"], ids["result"]]
    events = {t["id"]: t["events"] for t in body["templates"]}
    assert events[ids["progress"]] == ["acknowledged", "recheck_opened"]
    assert events[ids["result"]] == ["replied", "recheck_replied", "closed"]


async def test_consents_are_validated_and_stored(
    client: httpx.AsyncClient, services: Services, ids: dict[str, str]
) -> None:
    world = await make_world()
    alice, bob = await citizen_token(client, "alice"), await citizen_token(client, "bob")
    ticket = await _complaint(client, world.card.code, alice)

    res = await _subscribe(client, alice, ids["progress"], "not-a-template")
    assert res.status_code == 422 and res.json()["error"]["code"] == "validation_failed"
    assert (
        await client.post(
            "/api/v1/subscriptions", json={"template_ids": ids["progress"]}, headers=alice
        )
    ).status_code == 422
    assert (await _subscribe(client, alice, ids["progress"], ticket="PY123")).status_code == 422
    assert (await _subscribe(client, bob, ids["progress"], ticket=ticket)).status_code == 404
    no_login = await client.post("/api/v1/subscriptions", json={"template_ids": [ids["progress"]]})
    assert no_login.status_code == 401
    assert not await SubscribeConsent.exists()

    res = await _subscribe(client, alice, ids["progress"], ids["result"], ticket=ticket)
    assert res.status_code == 201, res.text
    assert res.json()["templates"] == [
        {"template_id": ids["progress"], "available": 1},
        {"template_id": ids["result"], "available": 1},
    ]
    res = await _subscribe(client, alice, ids["progress"], ids["progress"])  # deduplicated
    assert res.json()["templates"] == [{"template_id": ids["progress"], "available": 2}]
    case = await Case.get(ticket_no=ticket)
    rows = await SubscribeConsent.all().order_by("id")
    assert [(r.template_id, r.case_id) for r in rows] == [
        (ids["progress"], case.id),
        (ids["result"], case.id),
        (ids["progress"], None),
    ]
    for _ in range(subscriptions.MAX_AVAILABLE + 3):
        res = await _subscribe(client, alice, ids["result"])
    assert res.json()["templates"][0]["available"] == subscriptions.MAX_AVAILABLE


async def test_consent_then_acknowledge_sends_one_message(
    client: httpx.AsyncClient,
    services: Services,
    wechat_fake: FakeWeChatServer,
    ids: dict[str, str],
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    alice = await citizen_token(client, "alice")
    ticket = await _complaint(client, world.card.code, alice)
    assert (await _subscribe(client, alice, ids["progress"], ticket=ticket)).status_code == 201
    clock.freeze(at("2025-03-03 10:30"))
    await _act(client, ticket, "acknowledge", await staff_token(client, "county-430102"))

    row = await WeChatOutbox.get()
    assert (row.event, row.template_id, row.status) == ("acknowledged", ids["progress"], "pending")
    assert (await SubscribeConsent.get()).status == ConsentStatus.USED
    assert _delivered(wechat_fake) == []  # nothing goes out before the worker runs

    assert await send_due_wechat(services) == 1
    assert await send_due_wechat(services) == 0
    [message] = _delivered(wechat_fake)
    assert message["touser"] == wechat_fake.openid_for("alice")
    assert message["template_id"] == ids["progress"]
    assert message["page"] == f"pages/track/detail?ticket={ticket}"
    assert (message["miniprogram_state"], message["lang"]) == ("formal", "zh_CN")
    assert message["data"] == {
        "character_string1": {"value": ticket},
        "phrase2": {"value": "已签收"},
        "thing3": {"value": "长沙市芙蓉区交通运输综合行政执法大队"},
        "time4": {"value": "2025-03-03 10:30"},
    }
    assert _within_limits(message["data"])
    row = await WeChatOutbox.get()
    assert (row.status, row.attempts) == (MessageStatus.SENT, 1) and row.msgid


async def test_no_consent_no_message(
    client: httpx.AsyncClient,
    services: Services,
    wechat_fake: FakeWeChatServer,
    ids: dict[str, str],
) -> None:
    world = await make_world()
    alice, bob = await citizen_token(client, "alice"), await citizen_token(client, "bob")
    ticket = await _complaint(client, world.card.code, alice)
    # Another citizen's consent, and a consent for a template that does not tell of 签收.
    await _subscribe(client, bob, ids["progress"])
    await _subscribe(client, alice, ids["result"], ticket=ticket)
    await _act(client, ticket, "acknowledge", await staff_token(client, "county-430102"))

    assert not await WeChatOutbox.exists()
    assert await send_due_wechat(services) == 0
    assert wechat_fake.calls[SEND] == 0
    assert await SubscribeConsent.filter(status=ConsentStatus.AVAILABLE).count() == 2


async def test_one_consent_two_changes_one_message(
    client: httpx.AsyncClient,
    services: Services,
    wechat_fake: FakeWeChatServer,
    ids: dict[str, str],
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    alice = await citizen_token(client, "alice")
    ticket = await _complaint(client, world.card.code, alice)
    await _subscribe(client, alice, ids["result"], ticket=ticket)
    county = await staff_token(client, "county-430102")
    await _act(client, ticket, "acknowledge", county)
    reply = "经调查核实，该执法人员存在语言不文明问题，已对其批评教育并责令书面检查。"
    await _act(client, ticket, "reply", county, message=reply)
    clock.freeze(at("2025-03-12 10:00"))  # after the 7-day feedback window
    await _act(client, ticket, "close", await staff_token(client, "county-430102"))
    assert (await Case.get(ticket_no=ticket)).status == "closed"

    assert [r.event for r in await WeChatOutbox.all()] == ["replied"]
    assert await send_due_wechat(services) == 1
    [message] = _delivered(wechat_fake)
    # A named reporter reads the reply's opening words, cut to WeChat's 20 characters.
    assert message["data"]["thing3"]["value"] == reply[:19] + "…"
    assert message["data"]["phrase2"]["value"] == "已答复"
    assert _within_limits(message["data"])


async def test_every_state_change_of_a_recheck_tells_the_citizen(
    client: httpx.AsyncClient,
    services: Services,
    wechat_fake: FakeWeChatServer,
    ids: dict[str, str],
) -> None:
    world = await make_world()
    alice = await citizen_token(client, "alice")
    ticket = await _complaint(client, world.card.code, alice)
    for _ in range(3):
        await _subscribe(client, alice, ids["progress"], ids["result"])
    county = await staff_token(client, "county-430102")
    await _act(client, ticket, "acknowledge", county)
    await _act(client, ticket, "reply", county, message="已核实处理。")
    res = await client.post(
        f"/api/v1/complaints/{ticket}/feedback",
        json={"satisfied": False, "reason": "答复未解决问题"},
        headers=alice,
    )
    assert res.status_code == 200, res.text
    city = await staff_token(client, "city-4301")
    await _act(client, ticket, "acknowledge", city)
    await _act(client, ticket, "reply", city, message="复核认为原处理结果适当。")

    events = [r.event for r in await WeChatOutbox.all().order_by("id")]
    assert events == [
        "acknowledged",
        "replied",
        "recheck_opened",
        "acknowledged",
        "recheck_replied",
    ]
    assert await send_due_wechat(services) == 5
    sent = _delivered(wechat_fake)
    assert [m["data"]["phrase2"]["value"] for m in sent] == [
        "已签收",
        "已答复",
        "复核中",
        "已签收",
        "复核办结",
    ]
    assert (
        sent[2]["data"]["thing3"]["value"] == "长沙市交通运输综合行政执法支队"
    )  # the re-checking unit
    assert sent[4]["data"]["thing3"]["value"] == "复核认为原处理结果适当。"
    assert all(_within_limits(m["data"]) for m in sent)
    assert {m["touser"] for m in sent} == {wechat_fake.openid_for("alice")}


async def test_message_is_rendered_when_sent_and_respects_anonymity(
    client: httpx.AsyncClient,
    services: Services,
    wechat_fake: FakeWeChatServer,
    ids: dict[str, str],
) -> None:
    world = await make_world()
    alice, bob = await citizen_token(client, "alice"), await citizen_token(client, "bob")
    named = await _complaint(client, world.card.code, alice, phone="13800138000")
    hidden = await _complaint(client, world.card.code, bob, anonymous=True)
    await _subscribe(client, alice, ids["result"])
    await _subscribe(client, bob, ids["result"])
    county = await staff_token(client, "county-430102")
    for ticket in (named, hidden):
        await _act(client, ticket, "acknowledge", county)
        await _act(
            client, ticket, "reply", county, message="张执法已被批评教育，联系电话13900430102。"
        )
    # Queued while named; the reporter turns anonymous before the worker runs.
    await Case.filter(ticket_no=named).update(anonymous=True, contact_phone=None)

    assert await send_due_wechat(services) == 2
    sent = _delivered(wechat_fake)
    assert {m["touser"] for m in sent} == {wechat_fake.openid_for(u) for u in ("alice", "bob")}
    for message in sent:
        assert message["data"]["thing3"]["value"] == services.subscribe.events["replied"].remark
        text = repr(message)
        for personal in ("张执法", world.officer.cert_no, "13900430102", "13800138000", "county"):
            assert personal not in text


async def test_43101_refused_spends_the_consent_and_is_not_retried(
    client: httpx.AsyncClient,
    services: Services,
    wechat_fake: FakeWeChatServer,
    ids: dict[str, str],
) -> None:
    world = await make_world()
    alice = await citizen_token(client, "alice")
    ticket = await _complaint(client, world.card.code, alice)
    await _subscribe(client, alice, ids["progress"])
    await _subscribe(client, alice, ids["progress"])
    wechat_fake.refuse_subscribe(wechat_fake.openid_for("alice"))
    await _act(client, ticket, "acknowledge", await staff_token(client, "county-430102"))

    assert await send_due_wechat(services) == 1
    row = await WeChatOutbox.get()
    assert (row.status, row.errcode, row.attempts) == (MessageStatus.REFUSED, 43101, 1)
    # WeChat holds no consent: the one stored beside it is spent too.
    assert {c.status for c in await SubscribeConsent.all()} == {ConsentStatus.SPENT}
    clock.advance(timedelta(days=2))
    assert await send_due_wechat(services) == 0
    assert wechat_fake.calls[SEND] == 1


@pytest.mark.parametrize("errcode", [-1, 45009])
async def test_transient_error_is_retried_with_backoff_then_delivered(
    client: httpx.AsyncClient,
    services: Services,
    wechat_fake: FakeWeChatServer,
    ids: dict[str, str],
    errcode: int,
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    alice = await citizen_token(client, "alice")
    ticket = await _complaint(client, world.card.code, alice)
    await _subscribe(client, alice, ids["progress"], ticket=ticket)
    await _act(client, ticket, "acknowledge", await staff_token(client, "county-430102"))
    wechat_fake.fail_next(SEND, errcode, times=2)

    assert await send_due_wechat(services) == 1
    row = await WeChatOutbox.get()
    assert (row.status, row.errcode, row.attempts) == (MessageStatus.PENDING, errcode, 1)
    assert row.next_attempt_at > clock.now()
    assert await send_due_wechat(services) == 0  # not due yet: no retry loop
    for attempt in (2, 3):
        clock.freeze(row.next_attempt_at)
        assert await send_due_wechat(services) == 1
        row = await WeChatOutbox.get()
        assert row.attempts == attempt
    assert row.status == MessageStatus.SENT
    assert wechat_fake.calls[SEND] == 3 and len(_delivered(wechat_fake)) == 1


async def test_transient_errors_are_bounded(
    client: httpx.AsyncClient,
    services: Services,
    wechat_fake: FakeWeChatServer,
    ids: dict[str, str],
) -> None:
    world = await make_world()
    alice = await citizen_token(client, "alice")
    ticket = await _complaint(client, world.card.code, alice)
    await _subscribe(client, alice, ids["progress"])
    await _act(client, ticket, "acknowledge", await staff_token(client, "county-430102"))
    wechat_fake.fail_next(SEND, -1, times=MAX_ATTEMPTS + 5)
    for _ in range(MAX_ATTEMPTS + 3):
        await send_due_wechat(services)
        clock.advance(timedelta(hours=2))
    row = await WeChatOutbox.get()
    assert (row.status, row.attempts) == (MessageStatus.FAILED, MAX_ATTEMPTS)
    assert wechat_fake.calls[SEND] == MAX_ATTEMPTS


async def test_invalid_openid_fails_permanently(
    services: Services, wechat_fake: FakeWeChatServer, ids: dict[str, str]
) -> None:
    world = await make_world()
    citizen = await Citizen.create(openid="not an openid")
    body = ComplaintCreate(
        card_code=world.card.code, categories=["RUDE"], description="态度恶劣。。"
    )
    ticket = (await citizen_cases.file_complaint(services, citizen, body))["ticket_no"]
    await subscriptions.record_consents(
        services, citizen, SubscriptionCreate(template_ids=[ids["progress"]])
    )
    handler = await StaffUser.get(username="county-430102")
    await staff_cases.acknowledge(handler, ticket, services)

    assert await send_due_wechat(services) == 1
    row = await WeChatOutbox.get()
    assert (row.status, row.errcode) == (MessageStatus.FAILED, 40003)
    clock.advance(timedelta(days=1))
    assert await send_due_wechat(services) == 0 and wechat_fake.calls[SEND] == 1


async def test_replaced_token_is_refreshed_once_and_the_message_sent(
    client: httpx.AsyncClient,
    services: Services,
    wechat_fake: FakeWeChatServer,
    ids: dict[str, str],
) -> None:
    world = await make_world()
    alice = await citizen_token(client, "alice")
    ticket = await _complaint(client, world.card.code, alice)
    await _subscribe(client, alice, ids["progress"])
    await _act(client, ticket, "acknowledge", await staff_token(client, "county-430102"))
    wechat_fake.fail_next(SEND, 40001)

    assert await send_due_wechat(services) == 1
    row = await WeChatOutbox.get()
    assert (row.status, row.attempts) == (MessageStatus.SENT, 1)
    assert wechat_fake.calls[SEND] == 2 and len(_delivered(wechat_fake)) == 1


async def test_expired_token_is_refreshed_once_and_the_message_sent(
    client: httpx.AsyncClient,
    services: Services,
    wechat_fake: FakeWeChatServer,
    ids: dict[str, str],
) -> None:
    world = await make_world()
    alice = await citizen_token(client, "alice")
    ticket = await _complaint(client, world.card.code, alice)
    await _subscribe(client, alice, ids["progress"])
    await _act(client, ticket, "acknowledge", await staff_token(client, "county-430102"))
    await services.wechat.access_token()  # the token every process shares ...
    stale = wechat_fake.expire_token()  # ... expires at WeChat before our copy does (42001)
    stable = wechat_fake.calls["/cgi-bin/stable_token"]

    assert await send_due_wechat(services) == 1
    row = await WeChatOutbox.get()
    assert (row.status, row.attempts) == (MessageStatus.SENT, 1)
    assert wechat_fake.calls[SEND] == 2 and len(_delivered(wechat_fake)) == 1
    assert wechat_fake.calls["/cgi-bin/stable_token"] == stable + 1
    assert await services.wechat.access_token() != stale


async def test_rollback_of_the_state_change_leaves_no_outbox_row(
    client: httpx.AsyncClient, services: Services, ids: dict[str, str]
) -> None:
    world = await make_world()
    alice = await citizen_token(client, "alice")
    ticket = await _complaint(client, world.card.code, alice)
    await _subscribe(client, alice, ids["progress"], ticket=ticket)
    handler = await StaffUser.get(username="county-430102")

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with in_transaction() as conn:
            case = await Case.filter(ticket_no=ticket).select_for_update().using_db(conn).get()
            await lifecycle.acknowledge(case, staff_id=handler.id, conn=conn, services=services)
            assert await WeChatOutbox.filter().using_db(conn).count() == 1
            raise Boom

    assert not await WeChatOutbox.exists()
    assert (await SubscribeConsent.get()).status == ConsentStatus.AVAILABLE
    assert (await Case.get(ticket_no=ticket)).status == "received"


async def _acknowledged_cases(
    services: Services, world: Any, ids: dict[str, str], count: int
) -> None:
    handler = await StaffUser.get(username="county-430102")
    body = ComplaintCreate(
        card_code=world.card.code, categories=["RUDE"], description="态度恶劣。。"
    )
    consent = SubscriptionCreate(template_ids=[ids["progress"]])
    for i in range(count):
        citizen = await Citizen.create(openid=f"o-subscriber-{i:04d}")
        ticket = (await citizen_cases.file_complaint(services, citizen, body))["ticket_no"]
        await subscriptions.record_consents(services, citizen, consent)
        await staff_cases.acknowledge(handler, ticket, services)


async def test_two_concurrent_senders_send_each_row_once(
    services: Services, wechat_fake: FakeWeChatServer, ids: dict[str, str]
) -> None:
    world = await make_world()
    await _acknowledged_cases(services, world, ids, 12)

    counts = await asyncio.gather(send_due_wechat(services), send_due_wechat(services))
    assert sum(counts) == 12 and all(counts)  # both took part
    sent = _delivered(wechat_fake)
    tickets = [m["data"]["character_string1"]["value"] for m in sent]
    assert len(sent) == 12 and len(set(tickets)) == 12
    rows = await WeChatOutbox.all()
    assert all(r.status == MessageStatus.SENT and r.attempts == 1 for r in rows)


async def test_two_worker_processes_send_each_row_once(
    services: Services,
    wechat_fake: FakeWeChatServer,
    sms_fake: FakeSmsServer,
    ids: dict[str, str],
    tmp_path: Path,
) -> None:
    world = await make_world()
    await _acknowledged_cases(services, world, ids, 20)
    env = worker_env(
        services.settings.database_url,
        sms_fake.endpoint,
        policy_without_quiet_hours(tmp_path),
        wechat_api_base=wechat_fake.base_url,
        wechat_appid=APPID,
        wechat_secret=APPSECRET,
    )
    workers = [start_worker(env, tmp_path / f"worker-{i}.log") for i in range(2)]
    try:
        for _ in range(150):
            await asyncio.sleep(0.2)
            if not await WeChatOutbox.exclude(status=MessageStatus.SENT).exists():
                break
        assert all(w.poll() is None for w in workers), "a worker died"
    finally:
        stop_workers(workers)
    assert await WeChatOutbox.filter(status=MessageStatus.SENT, attempts=1).count() == 20
    tickets = [m["data"]["character_string1"]["value"] for m in _delivered(wechat_fake)]
    assert len(tickets) == 20 and len(set(tickets)) == 20


async def test_fake_checks_values_as_wechat_does(
    services: Services, wechat_fake: FakeWeChatServer
) -> None:
    openid = wechat_fake.openid_for("alice")
    send = services.wechat.send_subscribe_message
    bad_values = [
        {"thing1": {"value": "这是一段超过二十个字的说明文字，微信会拒绝它的发送请求"}},
        {"phrase2": {"value": "超过五个字的短语"}},
        {"time3": {"value": "2025/03/03"}},
        {"character_string4": {"value": "含有中文"}},
        {"thing1": {"value": ""}},
    ]
    for data in bad_values:
        with pytest.raises(WeChatError) as info:
            await send(openid=openid, template_id="tpl", data=data)
        assert info.value.errcode == 47003
    with pytest.raises(WeChatError) as info:
        await send(openid=openid, template_id="tpl", data={"thing1": {"value": "好"}}, lang="fr")
    assert info.value.errcode == 47001
    good = {
        key: {"value": clamp(key, "案件PY25030312345678已签收，正在核查处理中" * 2)}
        for key in ("thing1", "phrase2", "character_string3")
    }
    assert await send(openid=openid, template_id="tpl", data=good, miniprogram_state="trial")
    assert [m["errcode"] for m in wechat_fake.subscribe_messages] == [47003] * 5 + [47001, 0]


async def test_closing_after_the_feedback_window_tells_the_citizen(
    client: httpx.AsyncClient,
    services: Services,
    wechat_fake: FakeWeChatServer,
    ids: dict[str, str],
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    alice = await citizen_token(client, "alice")
    ticket = await _complaint(client, world.card.code, alice)
    await _subscribe(client, alice, ids["result"], ticket=ticket)
    await _subscribe(client, alice, ids["result"])
    county = await staff_token(client, "county-430102")
    await _act(client, ticket, "acknowledge", county)
    await _act(client, ticket, "reply", county, message="已核实处理。")
    clock.freeze(at("2025-03-12 09:00"))
    await _act(client, ticket, "close", await staff_token(client, "county-430102"))

    assert await send_due_wechat(services) == 2
    closed = _delivered(wechat_fake)[-1]["data"]
    assert closed["phrase2"]["value"] == "已办结"
    assert closed["thing3"]["value"] == services.subscribe.events["closed"].remark
    assert closed["time4"]["value"] == "2025-03-12 09:00"
    # The consent given on the case went first, the general one after it.
    consents = await SubscribeConsent.all().order_by("used_at", "id")
    assert [c.case_id is not None for c in consents] == [True, False]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ('status = "已签收"', 'status = "已经签收了的"'),  # phrase ≤ 5
        ('time4 = "time" }\n\n[templates.result]', 'time4 = "ticket" }\n\n[templates.result]'),
        ('events = ["acknowledged", "recheck_opened"]', 'events = ["acknowledged", "reopened"]'),
        ('miniprogram_state = "formal"', 'miniprogram_state = "beta"'),
    ],
)
def test_bad_subscribe_config_is_refused_at_load(tmp_path: Path, change: str, problem: str) -> None:
    text = (ROOT / "config" / "subscribe.toml").read_text()
    assert change in text
    path = tmp_path / "subscribe.toml"
    path.write_text(text.replace(change, problem, 1))
    with pytest.raises(ValueError):
        load_subscribe_config(path)
    assert load_subscribe_config(ROOT / "config" / "subscribe.toml").templates
