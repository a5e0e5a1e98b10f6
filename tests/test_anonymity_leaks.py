"""An anonymous reporter leaks through no output staff can reach.

A citizen with a known openid, unionid and phone files a report with a location and a photo
carrying GPS and a device serial, anonymously; a second report is filed named and made anonymous
after staff handled it. Then every output staff can reach is collected — every GET route of the
app (enumerated from its router, so a new route is covered the day it is added) called by every
staff role with the cases' parameters, the staff action answers, the evidence bytes behind the
signed links, the SMS outbox and what the SMS provider received, the subscribe messages WeChat
received and the ``wechat_outbox`` rows (the reporter accepted every template, so each state
change of both cases tells them), and the log records at INFO and above — and searched for each
identifying value. A channel is one entry of ``CHANNELS``.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from PIL import Image
from sanic import Sanic

from api import clock
from api.fakes.sms import FakeSmsServer
from api.fakes.wechat import FakeWeChatServer
from api.models import Citizen, Evidence, SmsOutbox, Unit, WeChatOutbox
from api.models.case import CaseStatus
from api.services.context import Services
from api.services.subscribe_config import clamp
from api.workers.runner import run_once
from api.workers.wechat_sender import send_due_wechat
from tests.support import at, citizen_token, make_world, staff, staff_token
from tests.test_uploads import GPS_IFD, _saved, revealing_exif, two_tone, upload_file

PHONE = "13812348000"
MASKED = "138****8000"
# The same number as people type it: spaced, dashed, full-width, with the country code.
TYPED = (
    "138 1234 8000",
    "138-1234-8000",
    "１３８１２３４８０００",
    "+86 138 1234 8000",
    "１３８．１２３４．８０００",
    "138\u00a01234\u00a08000",
)
LOCATION = "芙蓉中路二段188号门口"
SERIAL = "SN-998877"  # in tests.test_uploads.revealing_exif, with Xiaomi / Mi 11 and GPS
DEVICE = ("Xiaomi", "Mi 11")
GPS_TEXT = ("28.1916", "112.9791", "28°11", "112°58")  # 28°11'30" N, 112°58'45" E

NAMED_PHONE = "13955556666"  # a named reporter of another case: the control
NAMED_MASKED = "139****6666"

STAFF = {
    # username: (unit, role, linked to the accused officer)
    "province": ("43", "province_admin", False),
    "city-4301": ("4301", "supervisor", False),
    "county-430102": ("430102", "handler", False),
    "county-430103": ("430103", "handler", False),
    "leader-430102": ("430102", "unit_leader", False),
    "cityadmin-4301": ("4301", "city_admin", False),
    "officer-430102": ("430102", "handler", True),
}


@dataclass
class Output:
    channel: str
    where: str
    text: str


@dataclass
class Scene:
    client: httpx.AsyncClient
    services: Services
    sms: FakeSmsServer
    wechat: FakeWeChatServer
    tickets: dict[str, str] = field(default_factory=dict)  # anonymous / switched / named
    tokens: dict[str, dict[str, str]] = field(default_factory=dict)
    identity: dict[str, str] = field(default_factory=dict)
    action_answers: list[Output] = field(default_factory=list)
    collecting: bool = False  # answers staff were given before the switch were theirs to see
    photos: list[str] = field(default_factory=list)
    card_code: str = ""


# --- what staff can reach: each channel collects its outputs --------------------------------------

_PARAM = re.compile(r"<(\w+)(?::[^>]*)?>")
# Query strings worth trying on a route (the default: none).
QUERIES = {
    "/api/v1/staff/complaints": [""] + [f"?status={s}" for s in CaseStatus.ALL],
    "/api/v1/admin/sms": ["", "?ticket_no={ticket_no}"],
}


def _param_values(scene: Scene, path: str) -> dict[str, list[str]]:
    return {
        "ticket_no": list(scene.tickets.values()),
        "code": [scene.card_code] if "/cards/" in path else ["430102", "4301", "43"],
        "evidence_id": scene.photos,
        "day": ["2025-03-03"],
        "username": ["county-430102"],
    }


def _get_urls(scene: Scene) -> Iterator[str]:
    app = Sanic.get_app("pingyi_test")
    for route in app.router.routes:
        if "GET" not in route.methods:
            continue
        path = "/" + route.raw_path.lstrip("/")
        if path.startswith("/docs/") and path != "/docs/openapi.json":
            continue  # the API browser's static pages (one fetches its script from the internet)
        names = _PARAM.findall(path)
        values = _param_values(scene, path)
        unknown = [n for n in names if n not in values]
        assert not unknown, f"{path}: the leak test does not know the parameter(s) {unknown}"
        for combo in itertools.product(*(values[n] for n in names)):
            url = path
            for value in combo:  # in the order the parameters appear
                url = _PARAM.sub(value, url, count=1)
            for query in QUERIES.get(path, [""]):
                for ticket in scene.tickets.values():
                    yield url + query.format(ticket_no=ticket)
                    if "{ticket_no}" not in query:
                        break


async def staff_routes(scene: Scene) -> list[Output]:
    """Every GET route of the app, as every staff role, with every case's parameters."""
    found = []
    for username in STAFF:
        for url in dict.fromkeys(_get_urls(scene)):
            res = await scene.client.get(url, headers=scene.tokens[username])
            assert res.status_code < 500, (url, res.text)
            found.append(Output("http", f"{username} GET {url} → {res.status_code}", res.text))
    return found


async def staff_actions(scene: Scene) -> list[Output]:
    return scene.action_answers


async def evidence_bytes(scene: Scene) -> list[Output]:
    """The photos behind the signed links of every staff case view."""
    found = []
    for username in STAFF:
        for ticket in scene.tickets.values():
            res = await scene.client.get(
                f"/api/v1/staff/complaints/{ticket}", headers=scene.tokens[username]
            )
            for photo in res.json().get("photos", []) if res.status_code == 200 else []:
                got = await scene.client.get(photo["url"])
                assert got.status_code == 200, got.text
                with Image.open(io.BytesIO(got.content)) as img:
                    exif = img.getexif()
                    assert not exif and not exif.get_ifd(GPS_IFD) and "exif" not in img.info
                text = got.content.decode("latin-1")
                found.append(Output("evidence", f"{username} {photo['url']}", text))
    return found


async def sms_outbox(scene: Scene) -> list[Output]:
    rows = await SmsOutbox.all().values("phone", "template", "params", "last_error")
    return [
        Output("outbox", f"row to {r['phone']}", json.dumps(r, ensure_ascii=False)) for r in rows
    ]


async def sms_received(scene: Scene) -> list[Output]:
    """What the SMS provider was asked to send: the worker (run here, so its log is captured)
    fires the escalation ladders of the next working days and sends the outbox."""
    for _ in range(12):
        clock.advance(timedelta(hours=8))
        while await run_once(scene.services):
            pass
    outbox = await sms_outbox(scene)
    return outbox + [
        Output("sms", f"to {m.get('phone')}", json.dumps(m, ensure_ascii=False))
        for m in scene.sms.received
    ]


async def subscribe_messages(scene: Scene) -> list[Output]:
    """What WeChat received (the worker already ran in ``sms_received``; this sends anything
    left) and the outbox rows. The recipient ``touser`` is the citizen's own openid — the one
    place it must be, checked in the test — so it is left out of the text searched; everything
    else a message carries (template, page, every value) and every column of the rows is in."""
    while await send_due_wechat(scene.services):
        pass
    rows = await WeChatOutbox.all().values()
    found = [
        Output("wechat_outbox", f"row {r['id']} {r['event']}", json.dumps(r, default=str))
        for r in rows
    ]
    for message in scene.wechat.subscribe_messages:
        content = {k: v for k, v in message.items() if k != "touser"}
        text = json.dumps(content, ensure_ascii=False)
        found.append(Output("wechat", f"{message['template_id']} {text[:60]}", text))
    return found


CHANNELS: list[Callable[[Scene], Awaitable[list[Output]]]] = [
    staff_routes,
    staff_actions,
    evidence_bytes,
    sms_outbox,
    sms_received,
    subscribe_messages,
]


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        # The provider fakes and the test's own HTTP client are not the app.
        if not record.name.startswith(("pingyi.fakes", "httpx", "httpcore")):
            self.records.append(record)


@pytest.fixture
def captured_logs() -> Iterator[Captured]:
    handler = Captured()
    loggers = [logging.getLogger(n) for n in ("", "sanic.root", "sanic.error", "sanic.access")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(min(lg.level or logging.INFO, logging.INFO))
    yield handler
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


# --- the story -----------------------------------------------------------------------------------


async def _file(scene: Scene, headers: dict[str, str], **extra: Any) -> str:
    body = {
        "card_code": scene.card_code,
        "categories": ["RUDE", "ILLEGAL_FINE"],
        "description": "执法人员态度恶劣，多罚少开。",
        "occurred_at": "2025-03-03T09:30:00+08:00",
        **extra,
    }
    res = await scene.client.post("/api/v1/complaints", json=body, headers=headers)
    assert res.status_code == 201, res.text
    return str(res.json()["ticket_no"])


async def _act(scene: Scene, who: str, ticket: str, action: str, body: Any = None) -> None:
    res = await scene.client.post(
        f"/api/v1/staff/complaints/{ticket}/{action}", json=body, headers=scene.tokens[who]
    )
    assert res.status_code == 200, res.text
    if scene.collecting or ticket != scene.tickets.get("switched"):
        scene.action_answers.append(Output("action", f"{who} {action} {ticket}", res.text))


async def _photo(scene: Scene, headers: dict[str, str]) -> str:
    original = _saved(two_tone(320, 200), "JPEG", exif=revealing_exif().tobytes())
    assert SERIAL.encode() in original  # the upload really carries what must go
    res = await upload_file(scene.client, headers, original, name="IMG_20250303_0930.jpg")
    assert res.status_code == 201, res.text
    return str(res.json()["id"])


async def _setup(scene: Scene, wechat: FakeWeChatServer) -> None:
    world = await make_world()
    for code, phone in (("430102", "13600430102"), ("4301", "13600004301"), ("43", "13600000043")):
        await Unit.filter(code=code).update(leader_phone=phone)  # escalation SMS go out
    scene.card_code = world.card.code
    for name, (unit, role, accused) in STAFF.items():
        if name not in (
            "province",
            "city-4301",
            "county-430102",
            "county-430103",
            "officer-430102",
        ):
            await staff(name, unit, role, officer=world.officer if accused else None)
        scene.tokens[name] = await staff_token(scene.client, name)

    reporter = await citizen_token(scene.client, "leaky")
    citizen = await Citizen.get(openid=wechat.openid_for("leaky"))
    citizen.phone = PHONE  # as bound from WeChat (getuserphonenumber)
    await citizen.save(update_fields=["phone"])
    assert citizen.unionid
    scene.identity = {"openid": citizen.openid, "unionid": citizen.unionid}
    # The reporter accepts every template, three times over: each state change of either case
    # (签收, 答复 …) uses up one accept and becomes a message.
    templates = (await scene.client.get("/api/v1/subscriptions/templates")).json()["template_ids"]
    for _ in range(3):
        res = await scene.client.post(
            "/api/v1/subscriptions", json={"template_ids": templates}, headers=reporter
        )
        assert res.status_code == 201, res.text

    # 1. Anonymous from the start; the reporter typed their number into the description.
    photo = await _photo(scene, reporter)
    scene.tickets["anonymous"] = await _file(
        scene,
        reporter,
        anonymous=True,
        phone=PHONE,
        location=LOCATION,
        photos=[photo],
        description=f"执法人员态度恶劣，多罚少开。我在{LOCATION}被拦，电话{PHONE}，"
        f"或{'、'.join(TYPED)}。",
    )
    # 2. Named, handled (the handler saw the number, wrote it down), then made anonymous.
    second = await _photo(scene, reporter)
    switched = await _file(scene, reporter, phone=PHONE, location=LOCATION, photos=[second])
    scene.tickets["switched"] = switched
    await _act(scene, "county-430102", switched, "acknowledge")
    seen = (
        await scene.client.get(
            f"/api/v1/staff/complaints/{switched}", headers=scene.tokens["county-430102"]
        )
    ).json()
    assert seen["reporter"]["phone"] == PHONE  # before the switch, the handler saw it
    await _act(
        scene,
        "county-430102",
        switched,
        "contact",
        {"outcome": f"已致电{PHONE}核实，备用号码{TYPED[0]}、{TYPED[2]}"},
    )
    await _act(scene, "county-430102", switched, "notes", {"text": f"举报人{MASKED}，在{LOCATION}"})
    res = await scene.client.post(
        f"/api/v1/complaints/{switched}/anonymity", json={"anonymous": True}, headers=reporter
    )
    assert res.status_code == 200 and res.json()["anonymous"] is True, res.text
    scene.collecting = True
    # Replied after the switch, in words that name the reporter: the message about it is
    # rendered when sent, so it carries none of them.
    await _act(
        scene,
        "county-430102",
        switched,
        "reply",
        {"message": f"已电话联系举报人{PHONE}，经核查属实。"},
    )

    # Staff keep working on both; the anonymous reporter answers a request for information.
    anonymous = scene.tickets["anonymous"]
    await _act(scene, "county-430102", anonymous, "acknowledge")
    await _act(scene, "county-430102", anonymous, "request-info", {"message": "请补充现场情况"})
    res = await scene.client.post(
        f"/api/v1/complaints/{anonymous}/supplements",
        json={"message": f"罚单上写的是{LOCATION}，有事打{PHONE}"},
        headers=reporter,
    )
    assert res.status_code == 200, res.text
    await _act(scene, "county-430102", anonymous, "notes", {"text": "已调取执法记录仪视频"})
    await _act(scene, "county-430102", anonymous, "reply", {"message": "经核查，已责令整改。"})

    # 3. The control: a named report by someone else, whose phone staff may see as allowed.
    other = await citizen_token(scene.client, "named-reporter")
    scene.tickets["named"] = await _file(scene, other, phone=NAMED_PHONE, location="韶山北路")
    scene.photos = [str(i) for i in await Evidence.all().values_list("id", flat=True)]


def _forbidden(identity: dict[str, str]) -> dict[str, str]:
    values = {
        "openid": identity["openid"],
        "unionid": identity["unionid"],
        "phone": PHONE,
        "masked phone": MASKED,
        **{f"phone typed as {t!r}": t for t in TYPED},
        "location": LOCATION,
        "device serial": SERIAL,
        **{f"device {d}": d for d in DEVICE},
        **{f"GPS {g}": g for g in GPS_TEXT},
    }
    return values


async def test_anonymous_reporter_leaks_through_no_staff_output(
    client: httpx.AsyncClient,
    services: Services,
    wechat_fake: FakeWeChatServer,
    sms_fake: FakeSmsServer,
    captured_logs: Captured,
) -> None:
    clock.freeze(at("2025-03-03 10:00"))  # a working Monday morning: no SMS is held back
    scene = Scene(client=client, services=services, sms=sms_fake, wechat=wechat_fake)
    await _setup(scene, wechat_fake)

    outputs: list[Output] = []
    for channel in CHANNELS:
        outputs += await channel(scene)
    outputs += [
        Output("log", f"{r.name} {r.levelname}", r.getMessage() + repr(getattr(r, "args", "")))
        for r in captured_logs.records
    ]
    by_channel = {
        c: sum(1 for o in outputs if o.channel == c) for c in {o.channel for o in outputs}
    }
    assert by_channel["http"] > 200 and by_channel["evidence"] >= 4, by_channel
    assert by_channel["sms"] >= 3 and by_channel["outbox"] >= 6, by_channel
    assert any(o.where.startswith("pingyi.escalation") for o in outputs), by_channel
    # Subscribe messages really went out: to the reporter, about both cases, one per change.
    messages = wechat_fake.subscribe_messages
    assert by_channel["wechat"] == len(messages) >= 4 and by_channel["wechat_outbox"] >= 4
    assert {m["touser"] for m in messages} == {scene.identity["openid"]}  # their own, no other
    assert all(m["errcode"] == 0 for m in messages), messages
    told = {m["data"]["character_string1"]["value"] for m in messages}
    assert told == {scene.tickets["anonymous"], scene.tickets["switched"]}
    # Both cases are anonymous when the messages are rendered: a reply's opening words (the
    # remark a named reporter gets) are replaced by the fixed text.
    replies = 0
    for m in messages:
        template = services.subscribe.by_id(m["template_id"])
        assert template is not None
        for key, source in template.fields.items():
            if source == "remark":
                replies += 1
                fixed = {clamp(key, e.remark) for e in services.subscribe.events.values()}
                assert m["data"][key]["value"] in fixed, m
    assert replies >= 2  # the anonymous case's reply and the switched case's

    leaks = [
        f"{name} in {o.channel}: {o.where}"
        for o in outputs
        for name, value in _forbidden(scene.identity).items()
        if value in o.text
    ]
    assert not leaks, "\n".join(leaks[:40])

    # The control: the named reporter's phone in full only to the handler assigned (none yet:
    # nobody signed for it), masked only in that case's staff views, nowhere else.
    for o in outputs:
        assert NAMED_PHONE not in o.text, o.where
        if NAMED_MASKED in o.text:
            assert o.channel == "http" and scene.tickets["named"] in o.where, o.where

    # The accused officer's own account sees none of the three cases anywhere.
    officer = [o for o in outputs if o.where.startswith("officer-430102 ")]
    assert officer
    for o in officer:
        for ticket in scene.tickets.values():
            if ticket in o.where:
                assert re.search(r"→ 40[134]$", o.where), o.where
            else:
                assert ticket not in o.text, o.where
