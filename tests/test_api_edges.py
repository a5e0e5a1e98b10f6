"""Every bad input gets a clear 4xx JSON error in Chinese with a stable code; a 500 is a bug.

Most tests here walk a table of bad inputs and collect every mismatch, so one run shows all of them.
Tests that only send requests the app must refuse use ``edge_client`` (no table truncation: the
rows they may leave, citizens and sessions, are wiped by the next isolated test anyway).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2.profiles import CHEAPEST
from pydantic import BaseModel

from api import clock
from api.fakes.wechat import FakeWeChatServer
from api.models import Evaluation, StaffUser, Unit
from api.models.case import CaseStatus
from api.models.outbox import OutboxStatus
from api.schemas import (
    ComplaintCreate,
    EvaluationCreate,
    FeedbackCreate,
    ReplyCreate,
    StaffLogin,
    WeChatLogin,
)
from api.seed import load_units
from api.services import auth, passwords
from api.services.cards import new_card_code
from api.services.context import Services
from api.settings import ROOT
from tests import support
from tests.support import PASSWORD, World, citizen_token, dev_code, make_world, staff_token

CHINESE = re.compile(r"[\u4e00-\u9fff]")
JSON_HEADERS = {"Content-Type": "application/json"}
DESCRIPTION = "执法人员态度恶劣，拒绝出示证件。"
Headers = dict[str, str]
SMALL_ORG = {"43", "4301", "430102", "430103"}


@pytest.fixture(autouse=True)
def cheap_hashing() -> Iterator[None]:
    # Many staff logins here; Argon2's production cost is tested elsewhere, not the error paths.
    passwords.use_parameters(CHEAPEST)
    support.password_hash.cache_clear()
    yield
    passwords.use_parameters()
    support.password_hash.cache_clear()


@pytest.fixture(scope="module")
def few_divisions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the divisions file holding only the units make_world uses (fast to load)."""
    lines = (ROOT / "data" / "hunan_divisions.csv").read_text("utf-8").splitlines()
    keep = [lines[0]] + [line for line in lines[1:] if line.split(",")[0] in SMALL_ORG]
    path = tmp_path_factory.mktemp("edges") / "divisions.csv"
    path.write_text("\n".join(keep) + "\n", "utf-8")
    return path


@pytest.fixture(autouse=True)
def small_org(monkeypatch: pytest.MonkeyPatch, few_divisions: Path) -> None:
    # Error paths need the four units of make_world, not the whole province.
    async def load_few(_csv_path: Path) -> int:
        return await load_units(few_divisions)

    monkeypatch.setattr(support, "load_units", load_few)


@pytest.fixture
async def edge_client(app_server: tuple[str, Services]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=app_server[0], timeout=10) as http:
        yield http


# --- helpers ------------------------------------------------------------------------------------


def error_of(res: httpx.Response) -> dict[str, Any]:
    """The error object of a response, after checking the one JSON shape every error has."""
    assert res.headers.get("content-type", "").startswith("application/json"), res.text
    body = res.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and {"code", "message"} <= set(error) <= {
        "code",
        "message",
        "details",
    }, error
    assert isinstance(error["code"], str) and re.fullmatch(r"[a-z][a-z_]*", error["code"]), error
    assert isinstance(error["message"], str) and CHINESE.search(error["message"]), error
    return error


def assert_error(
    res: httpx.Response, status: int, code: str, *, field: str | None = None
) -> dict[str, Any]:
    assert res.status_code == status, (res.request.url, res.text[:500])
    error = error_of(res)
    assert error["code"] == code, error
    if field is not None:
        fields = error["details"]["fields"]
        assert isinstance(fields, list) and fields, error
        for item in fields:
            # The documented shape of a field error: {field, reason (Chinese), type}.
            assert {"field", "reason", "type"} <= set(item), item
            assert CHINESE.search(item["reason"]), item
        named = [f["field"] for f in fields]
        assert any(n == field or n.startswith(f"{field}.") for n in named), (field, named)
        assert field in error["message"], error
    return error


def assert_invalid(res: httpx.Response, field: str) -> dict[str, Any]:
    return assert_error(res, 422, "validation_failed", field=field)


def reason_for(error: dict[str, Any], field: str) -> str:
    reason: str = next(f["reason"] for f in error["details"]["fields"] if f["field"] == field)
    return reason


def complaint(code: str, /, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "card_code": code,
        "categories": ["RUDE"],
        "description": DESCRIPTION,
    }
    body.update(changes)
    return body


@dataclass
class Setup:
    world: World
    citizen: Headers

    def complaint(self, **changes: Any) -> dict[str, Any]:
        return complaint(self.world.card.code, **changes)

    @property
    def rate_url(self) -> str:
        return f"/api/v1/cards/{self.world.card.code}/evaluations"


async def setup(client: httpx.AsyncClient) -> Setup:
    return Setup(world=await make_world(), citizen=await citizen_token(client))


async def file_case(client: httpx.AsyncClient, s: Setup) -> str:
    res = await client.post("/api/v1/complaints", json=s.complaint(), headers=s.citizen)
    assert res.status_code == 201, res.text
    ticket: str = res.json()["ticket_no"]
    return ticket


async def acknowledged_case(client: httpx.AsyncClient, s: Setup, county: Headers) -> str:
    ticket = await file_case(client, s)
    res = await client.post(f"/api/v1/staff/complaints/{ticket}/acknowledge", headers=county)
    assert res.status_code == 200, res.text
    return ticket


async def replied_case(client: httpx.AsyncClient, s: Setup, county: Headers) -> str:
    ticket = await acknowledged_case(client, s, county)
    res = await client.post(
        f"/api/v1/staff/complaints/{ticket}/reply",
        json={"message": "已核实并整改。"},
        headers=county,
    )
    assert res.status_code == 200 and res.json()["status"] == "replied", res.text
    return ticket


# --- 1. bodies that are not a JSON object ----------------------------------------------------------

REQUIRED = {
    "complaint": {"card_code", "categories", "description"},
    "evaluation": {"level"},
    "wechat": {"code"},
    "staff_login": {"username", "password"},
}
NOT_JSON = [
    b'{"level": 5,',
    b"{'level': 5}",
    b'{"a": 1} trailing',
    b"\xff\xfe\x00garbage",
]
NOT_AN_OBJECT = [b"[1, 2, 3]", b'[{"level": 5}]', b'"just a string"', b"42", b"null", b"true"]


async def test_a_field_given_twice_is_named(edge_client: httpx.AsyncClient) -> None:
    citizen = await citizen_token(edge_client)
    res = await edge_client.post(
        f"/api/v1/cards/{new_card_code()}/evaluations",
        content=b'{"level": 4, "level": 9}',
        headers={**JSON_HEADERS, **citizen},
    )
    error = assert_error(res, 400, "duplicate_field")
    assert "level" in error["message"], error


async def test_a_token_or_a_key_that_is_not_text_is_a_4xx(edge_client: httpx.AsyncClient) -> None:
    path = f"/api/v1/cards/{new_card_code()}/evaluations"
    for raw in (b"Bearer \xe9\xe9", b"Bearer \xff"):
        for url in (path, "/api/v1/auth/logout", "/api/v1/uploads"):
            res = await edge_client.post(
                url, content=b'{"level": 4}', headers={**JSON_HEADERS, "Authorization": raw}
            )
            assert_error(res, 401, "token_invalid")
    citizen = await citizen_token(edge_client)
    lone = b'{"level": 4, "dimensions": {"\\ud800": 3}}'
    res = await edge_client.post(path, content=lone, headers={**JSON_HEADERS, **citizen})
    assert_error(res, 422, "validation_failed")
    forged = {"Authorization": "Bearer not-a-session"}
    res = await edge_client.post(path, content=lone, headers={**JSON_HEADERS, **forged})
    assert_error(res, 401, "token_invalid")


async def test_body_that_is_not_a_json_object(edge_client: httpx.AsyncClient) -> None:
    citizen = await citizen_token(edge_client)
    urls = {
        "complaint": ("/api/v1/complaints", citizen),
        "evaluation": (f"/api/v1/cards/{new_card_code()}/evaluations", citizen),
        "wechat": ("/api/v1/auth/wechat", {}),
        "staff_login": ("/api/v1/staff/auth/login", {}),
    }
    for route, (url, auth_headers) in urls.items():
        headers = {**JSON_HEADERS, **auth_headers}
        for content in NOT_JSON + NOT_AN_OBJECT:
            res = await edge_client.post(url, content=content, headers=headers)
            error = assert_error(res, 400, "invalid_json")
            assert "JSON" in error["message"], (route, content, error)
        for empty in (b"", b"   \n", b"{}"):
            res = await edge_client.post(url, content=empty, headers=headers)
            error = assert_invalid(res, sorted(REQUIRED[route])[0])
            missing = [f for f in error["details"]["fields"] if f["type"] == "missing"]
            assert {f["field"] for f in missing} == REQUIRED[route], (route, empty, error)
            assert all(f["reason"] == "必填" for f in missing), error


# --- 2. wrong types and values -------------------------------------------------------------------

BAD_EVALUATIONS: list[tuple[dict[str, Any], str]] = [
    ({"level": "5"}, "level"),
    ({"level": 6}, "level"),
    ({"level": 0}, "level"),
    ({"level": -1}, "level"),
    ({"level": 4.0}, "level"),
    ({"level": True}, "level"),
    ({"level": None}, "level"),
    ({"level": 5, "dimensions": {"speed": 3}}, "dimensions"),
    ({"level": 5, "dimensions": {"civility": 9}}, "dimensions"),
    ({"level": 5, "dimensions": {"civility": 0}}, "dimensions"),
    ({"level": 5, "dimensions": {"civility": "good"}}, "dimensions"),
    ({"level": 5, "dimensions": [1, 2]}, "dimensions"),
    ({"level": 5, "answers": {"bribe_asked": True}}, "answers"),
    ({"level": 5, "answers": {"showed_id": "maybe"}}, "answers"),
    ({"level": 5, "answers": ["showed_id"]}, "answers"),
    ({"level": 5, "comment": 12345}, "comment"),
]


async def test_evaluation_with_wrong_types_is_refused(edge_client: httpx.AsyncClient) -> None:
    citizen = await citizen_token(edge_client)
    url = f"/api/v1/cards/{new_card_code()}/evaluations"
    for body, field in BAD_EVALUATIONS:
        assert_invalid(await edge_client.post(url, json=body, headers=citizen), field)

    body = {"level": 4, "dimensions": {"speed": 3}, "answers": {"bribe_asked": True}}
    error = assert_invalid(await edge_client.post(url, json=body, headers=citizen), "answers")
    assert "speed" in reason_for(error, "dimensions") and "维度" in reason_for(error, "dimensions")
    assert "bribe_asked" in reason_for(error, "answers") and "问题" in reason_for(error, "answers")
    body = {"level": 4, "dimensions": {"civility": 9}}
    error = assert_invalid(await edge_client.post(url, json=body, headers=citizen), "dimensions")
    assert "1–5" in reason_for(error, "dimensions")


BAD_COMPLAINTS: list[tuple[dict[str, Any], str]] = [
    ({"anonymous": "true"}, "anonymous"),
    ({"anonymous": 1}, "anonymous"),
    ({"categories": "RUDE"}, "categories"),
    ({"categories": ["NOT_A_CATEGORY"]}, "categories"),
    ({"categories": []}, "categories"),
    ({"categories": [1]}, "categories"),
    ({"categories": None}, "categories"),
    ({"description": "短"}, "description"),
    ({"description": ["执法人员态度恶劣"]}, "description"),
    ({"card_code": 12345}, "card_code"),
    ({"occurred_at": "2025-05-01T10:00:00"}, "occurred_at"),
    ({"occurred_at": "yesterday afternoon"}, "occurred_at"),
    ({"occurred_at": "2025-13-45T99:00:00+08:00"}, "occurred_at"),
    ({"occurred_at": {"date": "2025-05-01"}}, "occurred_at"),
    ({"location": {"lat": 28.2}}, "location"),
    ({"phone": 13800138000}, "phone"),
]


async def test_complaint_with_wrong_types_is_refused(edge_client: httpx.AsyncClient) -> None:
    citizen = await citizen_token(edge_client)
    code = new_card_code()
    for changes, field in BAD_COMPLAINTS:
        res = await edge_client.post(
            "/api/v1/complaints", json=complaint(code, **changes), headers=citizen
        )
        assert_invalid(res, field)

    res = await edge_client.post(
        "/api/v1/complaints", json=complaint(code, categories=["RUDE", "NAP"]), headers=citizen
    )
    reason = reason_for(assert_invalid(res, "categories"), "categories")
    assert "NAP" in reason and "类别" in reason
    res = await edge_client.post(
        "/api/v1/complaints",
        json=complaint(code, occurred_at="2025-05-01T10:00:00"),
        headers=citizen,
    )
    assert "时区" in reason_for(assert_invalid(res, "occurred_at"), "occurred_at")


# --- 3. unknown fields ---------------------------------------------------------------------------


async def test_unknown_fields_are_refused_and_named(edge_client: httpx.AsyncClient) -> None:
    citizen = await citizen_token(edge_client)
    code, ticket = new_card_code(), "PY00000000000000"
    cases: list[tuple[str, dict[str, Any], Headers, str]] = [
        ("/api/v1/complaints", complaint(code, officer_id=1), citizen, "officer_id"),
        (f"/api/v1/cards/{code}/evaluations", {"level": 5, "verified": True}, citizen, "verified"),
        ("/api/v1/auth/wechat", {"code": dev_code("x"), "openid": "o123"}, {}, "openid"),
        (
            "/api/v1/staff/auth/login",
            {"username": "province", "password": PASSWORD, "role": "admin"},
            {},
            "role",
        ),
        (
            f"/api/v1/complaints/{ticket}/feedback",
            {"satisfied": True, "score": 5},
            citizen,
            "score",
        ),
    ]
    for url, body, headers, extra in cases:
        error = assert_invalid(await edge_client.post(url, json=body, headers=headers), extra)
        item = next(f for f in error["details"]["fields"] if f["field"] == extra)
        assert item["type"] == "extra_forbidden" and item["reason"] == "不允许的字段", item


# --- 4. too-long text and a bad phone ------------------------------------------------------------


async def test_too_long_text_is_refused_and_the_limits_are_exact(
    client: httpx.AsyncClient, services: Services
) -> None:
    s = await setup(client)
    county = await staff_token(client, "county-430102")
    res = await client.post(
        "/api/v1/complaints", json=s.complaint(description="长" * 2001), headers=s.citizen
    )
    item = assert_invalid(res, "description")["details"]["fields"][0]
    assert item["type"] == "string_too_long" and item["reason"] == "内容过长"
    res = await client.post(
        "/api/v1/complaints", json=s.complaint(description="长" * 2000), headers=s.citizen
    )
    assert res.status_code == 201, res.text

    res = await client.post(s.rate_url, json={"level": 4, "comment": "评" * 501}, headers=s.citizen)
    assert_invalid(res, "comment")
    res = await client.post(s.rate_url, json={"level": 4, "comment": "评" * 500}, headers=s.citizen)
    assert res.status_code == 201, res.text

    ticket = await acknowledged_case(client, s, county)
    url = f"/api/v1/staff/complaints/{ticket}/reply"
    for message, reason in (("答" * 2001, "内容过长"), ("答", "内容过短"), ("   ", "内容过短")):
        res = await client.post(url, json={"message": message}, headers=county)
        assert reason_for(assert_invalid(res, "message"), "message") == reason
    assert_invalid(await client.post(url, json={"message": "ok", "x": 1}, headers=county), "x")
    res = await client.post(url, json={"message": "答" * 2000}, headers=county)
    assert res.status_code == 200 and res.json()["status"] == "replied", res.text

    res = await client.post(
        f"/api/v1/complaints/{ticket}/feedback",
        json={"satisfied": False, "comment": "不" * 501},
        headers=s.citizen,
    )
    assert_invalid(res, "comment")


async def test_invalid_phone_is_refused(client: httpx.AsyncClient, services: Services) -> None:
    s = await setup(client)
    for phone in ("12345", "abcdefghijk", "23800138000", "138001380001234567"):
        res = await client.post(
            "/api/v1/complaints", json=s.complaint(phone=phone), headers=s.citizen
        )
        error = assert_invalid(res, "phone")
        assert "手机" in error["message"], error
    assert (await client.get("/api/v1/complaints", headers=s.citizen)).json()["items"] == []


# --- 5. nothing accepted is lost, nothing rejected is kept ---------------------------------------


async def test_rejected_submissions_leave_the_accepted_ones_alone(
    client: httpx.AsyncClient, services: Services
) -> None:
    s = await setup(client)
    ticket = await file_case(client, s)
    for body in (
        s.complaint(categories=["NOPE"]),
        s.complaint(description="长" * 2001),
        s.complaint(phone="12345"),
        s.complaint(occurred_at="2025-05-01T10:00:00"),
        s.complaint(anonymous="true"),
        s.complaint(extra=1),
    ):
        res = await client.post("/api/v1/complaints", json=body, headers=s.citizen)
        assert res.status_code == 422, res.text
    res = await client.post(
        "/api/v1/complaints", content=b'{"card_code":', headers={**JSON_HEADERS, **s.citizen}
    )
    assert res.status_code == 400
    for body in ({"level": "1"}, {"level": 1, "dimensions": {"speed": 1}}, {"level": 1, "x": 0}):
        assert (await client.post(s.rate_url, json=body, headers=s.citizen)).status_code == 422

    items = (await client.get("/api/v1/complaints", headers=s.citizen)).json()["items"]
    assert [c["ticket_no"] for c in items] == [ticket]
    county = await staff_token(client, "county-430102")
    inbox = (await client.get("/api/v1/staff/complaints", headers=county)).json()["items"]
    assert [c["ticket_no"] for c in inbox] == [ticket]
    # The refused ratings did not count against once-per-24h: the first valid one is accepted.
    res = await client.post(s.rate_url, json={"level": 1}, headers=s.citizen)
    assert res.status_code == 201 and res.json()["ticket_no"], res.text

    # A revoked card takes no new ratings or reports, and what was filed on it stays.
    s.world.card.revoked_at = clock.now()
    await s.world.card.save()
    await services.redis.delete(services.key("card", s.world.card.code))
    assert_error(await client.get(f"/api/v1/cards/{s.world.card.code}"), 410, "card_revoked")
    res = await client.post(s.rate_url, json={"level": 5}, headers=s.citizen)
    assert_error(res, 410, "card_revoked")
    res = await client.post("/api/v1/complaints", json=s.complaint(), headers=s.citizen)
    assert_error(res, 410, "card_revoked")
    items = (await client.get("/api/v1/complaints", headers=s.citizen)).json()["items"]
    assert len(items) == 2 and items[-1]["ticket_no"] == ticket


async def test_rejected_feedback_and_reply_leave_the_case_unchanged(
    client: httpx.AsyncClient, services: Services
) -> None:
    s = await setup(client)
    county = await staff_token(client, "county-430102")
    ticket = await replied_case(client, s, county)
    url = f"/api/v1/complaints/{ticket}"
    before = (await client.get(url, headers=s.citizen)).json()
    for bad in ("yes", "true", 1, None, [True]):
        res = await client.post(f"{url}/feedback", json={"satisfied": bad}, headers=s.citizen)
        assert_invalid(res, "satisfied")
    for body in ({}, {"satisfied": False, "comment": "差" * 501}, {"satisfied": True, "x": 1}):
        assert (
            await client.post(f"{url}/feedback", json=body, headers=s.citizen)
        ).status_code == 422
    res = await client.post(
        f"/api/v1/staff/complaints/{ticket}/reply", json={"message": "答" * 2001}, headers=county
    )
    assert res.status_code == 422
    after = (await client.get(url, headers=s.citizen)).json()
    assert after == before
    assert after["status"] == "replied" and after["can_feedback"]


# --- 6. authentication ---------------------------------------------------------------------------


async def test_missing_and_garbage_tokens(edge_client: httpx.AsyncClient) -> None:
    citizen = await citizen_token(edge_client)
    ticket = "PY00000000000000"
    routes = [
        ("GET", "/api/v1/complaints"),
        ("POST", "/api/v1/complaints"),
        ("POST", f"/api/v1/cards/{new_card_code()}/evaluations"),
        ("GET", f"/api/v1/complaints/{ticket}"),
        ("POST", f"/api/v1/complaints/{ticket}/feedback"),
        ("GET", "/api/v1/staff/complaints"),
        ("GET", f"/api/v1/staff/complaints/{ticket}"),
        ("POST", f"/api/v1/staff/complaints/{ticket}/acknowledge"),
        ("POST", f"/api/v1/staff/complaints/{ticket}/reply"),
        ("GET", "/api/v1/admin/sms"),
        ("POST", "/api/v1/staff/auth/logout"),
    ]
    missing = [{}, {"Authorization": "Bearer"}, {"Authorization": "Basic dXNlcjpwdw=="}]
    garbage = ["garbage", "x" * 5000, citizen["Authorization"][7:] + "x"]
    for method, url in routes:
        for headers in missing:
            res = await edge_client.request(method, url, json={}, headers=headers)
            assert_error(res, 401, "token_missing")
        if url.endswith("/logout"):
            continue  # logging out with an unknown token is a harmless no-op
        for token in garbage:
            res = await edge_client.request(
                method, url, json={}, headers={"Authorization": f"Bearer {token}"}
            )
            assert_error(res, 401, "token_invalid")


async def test_sessions_stay_in_their_lane_end_on_logout_and_expire(
    client: httpx.AsyncClient, services: Services
) -> None:
    s = await setup(client)
    county = await staff_token(client, "county-430102")
    other = await staff_token(client, "county-430102")
    for url in ("/api/v1/staff/complaints", "/api/v1/admin/sms"):
        assert_error(await client.get(url, headers=s.citizen), 401, "token_invalid")
    assert_error(await client.get("/api/v1/complaints", headers=county), 401, "token_invalid")
    res = await client.post("/api/v1/complaints", json=s.complaint(), headers=county)
    assert_error(res, 401, "token_invalid")

    assert (await client.get("/api/v1/staff/complaints", headers=county)).status_code == 200
    res = await client.post("/api/v1/staff/auth/logout", headers=county)
    assert res.status_code == 200 and res.json() == {"ok": True}
    res = await client.get("/api/v1/staff/complaints", headers=county)
    assert_error(res, 401, "token_invalid")
    # Only that session ends: the same user's other session keeps working.
    assert (await client.get("/api/v1/staff/complaints", headers=other)).status_code == 200

    clock.advance(timedelta(seconds=services.settings.staff_token_ttl + 1))
    assert_error(await client.get("/api/v1/staff/complaints", headers=other), 401, "token_invalid")
    clock.advance(timedelta(seconds=services.settings.citizen_token_ttl + 1))
    assert_error(await client.get("/api/v1/complaints", headers=s.citizen), 401, "token_invalid")


async def test_bad_passwords_unknown_users_and_lockout(
    client: httpx.AsyncClient, services: Services
) -> None:
    await make_world()
    url = "/api/v1/staff/auth/login"
    right = {"username": "county-430102", "password": PASSWORD}
    wrong = await client.post(url, json={**right, "password": "nope"})
    unknown = await client.post(url, json={"username": "nobody", "password": PASSWORD})
    assert_error(wrong, 401, "invalid_credentials")
    assert_error(unknown, 401, "invalid_credentials")
    assert wrong.json() == unknown.json()  # no hint which usernames exist

    for _ in range(auth.LOCK_AFTER_FAILURES - 1):
        res = await client.post(url, json={**right, "password": "bad"})
        assert_error(res, 401, "invalid_credentials")
    error = assert_error(await client.post(url, json=right), 401, "account_locked")
    assert "锁定" in error["message"]
    res = await client.post(url, json={**right, "password": "bad"})
    assert_error(res, 401, "account_locked")
    # Other accounts are not affected, and the lock lifts after its time.
    assert (await client.post(url, json={"username": "province", "password": PASSWORD})).is_success
    clock.advance(timedelta(minutes=auth.LOCK_MINUTES, seconds=1))
    assert (await client.post(url, json=right)).status_code == 200


# --- 7. WeChat login errors, through the fake that speaks WeChat's protocol ----------------------


async def test_reused_and_garbage_wechat_codes(edge_client: httpx.AsyncClient) -> None:
    url = "/api/v1/auth/wechat"
    code = dev_code("alice")
    assert (await edge_client.post(url, json={"code": code})).status_code == 200
    # A second tap within a minute gets the first tap's session (tests/test_idempotency.py also
    # covers a code reused after that window: 401, errcode 40163).
    again = await edge_client.post(url, json={"code": code})
    assert again.status_code == 200, again.text
    for garbage in ("hello", "dev-", "dev-bad user-1", "x" * 128, "dev-alice-1 x"):
        res = await edge_client.post(url, json={"code": garbage})
        error = assert_error(res, 401, "wechat_code_invalid")
        assert "登录凭证" in error["message"], (garbage, error)
    for invalid in ("x" * 129, "   ", 123, None):
        assert_invalid(await edge_client.post(url, json={"code": invalid}), "code")


async def test_wechat_busy_is_a_503_with_retry_after(
    edge_client: httpx.AsyncClient, wechat_fake: FakeWeChatServer
) -> None:
    url = "/api/v1/auth/wechat"
    for errcode in (-1, 45011):
        wechat_fake.fail_next("/sns/jscode2session", errcode)
        res = await edge_client.post(url, json={"code": dev_code("alice")})
        assert_error(res, 503, "wechat_busy")
        assert int(res.headers["Retry-After"]) > 0
        # The fault was WeChat's: a fresh code works right after.
        assert (await edge_client.post(url, json={"code": dev_code("alice")})).status_code == 200


async def test_the_same_wechat_user_is_the_same_citizen(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    tokens = []
    for code in ("dev-alice-1", "dev-alice-2"):
        res = await client.post("/api/v1/auth/wechat", json={"code": code})
        assert res.status_code == 200, res.text
        tokens.append({"Authorization": f"Bearer {res.json()['token']}"})
    first, second = tokens
    assert first != second
    res = await client.post("/api/v1/complaints", json=complaint(world.card.code), headers=first)
    assert res.status_code == 201, res.text
    ticket = res.json()["ticket_no"]
    mine = (await client.get("/api/v1/complaints", headers=second)).json()["items"]
    assert [c["ticket_no"] for c in mine] == [ticket]
    assert (await client.get(f"/api/v1/complaints/{ticket}", headers=second)).status_code == 200
    bob = await citizen_token(client, "bob")
    assert (await client.get("/api/v1/complaints", headers=bob)).json()["items"] == []


# --- 8. routes, methods, card codes, query parameters --------------------------------------------


async def test_unknown_route_and_wrong_method_answer_json(edge_client: httpx.AsyncClient) -> None:
    for url in ("/api/v1/nope", "/", "/api/v2/complaints", "/api/v1/complaints/a/b/c"):
        assert_error(await edge_client.get(url), 404, "not_found")
    # An unencoded ../ is resolved before routing; wherever it lands, the answer is a JSON 404.
    for raw in ("/api/v1/cards/../../etc", "/api/v1/cards/../../../etc/passwd"):
        res = await edge_client.send(httpx.Request("GET", edge_client.base_url.join(raw)))
        assert_error(res, 404, "not_found")
    for method, url in (
        ("DELETE", "/api/v1/complaints"),
        ("PUT", "/api/v1/auth/wechat"),
        ("GET", "/api/v1/auth/wechat"),
        ("PATCH", "/api/v1/staff/complaints"),
        ("POST", "/healthz"),
    ):
        assert_error(await edge_client.request(method, url), 405, "method_not_allowed")


MALFORMED_CARD_CODES = [
    "ABCDEFGHJKMNPQRS",  # well formed, never issued
    "..%2F..%2Fetc",
    "..%2F..%2Fetc%2Fpasswd",
    "%2E%2E",
    "ABCDEFGHJKMNPQR0",  # 0 is not in the alphabet
    "x" * 300,
    "%E5%8D%A1%E5%8F%B7",  # 卡号
    "%00",
    "ABCDEFGHJKMNPQRS%00",
    "' OR '1'='1",
    "%25s%25n",
]


async def test_unknown_or_malformed_card_code_is_404(edge_client: httpx.AsyncClient) -> None:
    citizen = await citizen_token(edge_client)
    for code in MALFORMED_CARD_CODES:
        assert_error(await edge_client.get(f"/api/v1/cards/{code}"), 404, "card_not_found")
        res = await edge_client.post(
            f"/api/v1/cards/{code}/evaluations", json={"level": 5}, headers=citizen
        )
        assert_error(res, 404, "card_not_found")
    for code in ("ABCDEFGHJKMNPQRS", "../../etc", "ABCDEFGHJKMNPQR0", "卡号卡号卡号"):
        res = await edge_client.post("/api/v1/complaints", json=complaint(code), headers=citizen)
        assert_error(res, 404, "card_not_found")


async def test_staff_list_limits_must_be_sane_integers(
    client: httpx.AsyncClient, services: Services
) -> None:
    await make_world()
    province = await staff_token(client, "province")
    for url, high in (("/api/v1/staff/complaints", 200), ("/api/v1/admin/sms", 500)):
        for limit in ("abc", "0", "-1", str(high + 1), "1.5", "1e3", "null", "１０", "٣"):
            res = await client.get(url, params={"limit": limit}, headers=province)
            assert_invalid(res, "limit")
        for limit in ("1", str(high)):
            res = await client.get(url, params={"limit": limit}, headers=province)
            assert res.status_code == 200, res.text


async def test_citizen_case_list_limit_is_checked_like_the_staff_ones(
    client: httpx.AsyncClient, services: Services
) -> None:
    s = await setup(client)
    tickets = [await file_case(client, s) for _ in range(3)]
    url = "/api/v1/complaints"
    for limit in ("abc", "0", "-1", "101", "1.5", "1e3", "null", "１０", "٣"):
        res = await client.get(url, params={"limit": limit}, headers=s.citizen)
        assert_invalid(res, "limit")
    res = await client.get(url, params={"limit": "2"}, headers=s.citizen)
    assert res.status_code == 200, res.text
    assert [c["ticket_no"] for c in res.json()["items"]] == tickets[:0:-1]  # the newest first
    for params in ({"limit": "100"}, {}):
        res = await client.get(url, params=params, headers=s.citizen)
        assert len(res.json()["items"]) == 3, res.text


async def test_odd_path_and_query_values_are_404_or_422_never_500(
    client: httpx.AsyncClient, services: Services
) -> None:
    s = await setup(client)
    await file_case(client, s)
    province = await staff_token(client, "province")
    failures: list[tuple[Any, ...]] = []
    for ticket in ("PY00000000000000", "x" * 300, "%00", "..%2Fsecret", "' OR 1=1 --"):
        for method, url, headers in (
            ("GET", f"/api/v1/complaints/{ticket}", s.citizen),
            ("POST", f"/api/v1/complaints/{ticket}/feedback", s.citizen),
            ("GET", f"/api/v1/staff/complaints/{ticket}", province),
            ("POST", f"/api/v1/staff/complaints/{ticket}/acknowledge", province),
        ):
            res = await client.request(method, url, json={"satisfied": True}, headers=headers)
            if res.status_code != 404:
                failures.append((method, url[:50], res.status_code))
            else:
                assert_error(res, 404, "case_not_found")
    for url, name in (
        ("/api/v1/staff/complaints", "status"),
        ("/api/v1/admin/sms", "status"),
        ("/api/v1/admin/sms", "ticket_no"),
    ):
        for value in ("bogus", "x" * 300, "received'--", "\u0000"):
            res = await client.get(url, params={name: value}, headers=province)
            if res.status_code == 200:
                if res.json()["items"]:
                    failures.append((url, name, value[:20], "matched items"))
            elif res.status_code != 422:
                failures.append((url, name, value[:20], res.status_code))
            else:
                assert_invalid(res, name)
    # ... while every status a row can really have is a valid filter.
    for url, values in (
        ("/api/v1/staff/complaints", _status_values(CaseStatus)),
        ("/api/v1/admin/sms", _status_values(OutboxStatus)),
    ):
        for value in values:
            res = await client.get(url, params={"status": value}, headers=province)
            if res.status_code != 200:
                failures.append((url, "status", value, res.status_code))
    assert not failures, failures


async def test_overlong_names_in_admin_paths_are_not_found_never_500(
    client: httpx.AsyncClient, services: Services
) -> None:
    await make_world()
    province = await staff_token(client, "province")
    long = "4" * 300  # longer than every column it is looked up in
    for method, url, body, code in (
        ("PUT", f"/api/v1/admin/units/{long}", {"hotline": "0731-12345678"}, "unit_not_found"),
        ("PUT", f"/api/v1/admin/units/{long}/disclosure", {"address": "示范路"}, "unit_not_found"),
        ("POST", f"/api/v1/admin/staff/{long}/disable", None, "staff_not_found"),
        ("POST", f"/api/v1/admin/officers/{long}/cards", None, "officer_not_found"),
        ("POST", f"/api/v1/admin/cards/{long}/revoke", None, "card_not_found"),
        (
            "PUT",
            f"/api/v1/admin/citizens/{long}/public-supervisor",
            {"appointed": True, "note": "第一批"},
            "citizen_not_found",
        ),
    ):
        res = await client.request(method, url, json=body, headers=province)
        assert_error(res, 404, code)
    res = await client.get("/api/v1/staff/complaints", params={"unit": long}, headers=province)
    assert_invalid(res, "unit")


def _status_values(constants: type) -> list[str]:
    return [v for k, v in vars(constants).items() if k.isupper() and isinstance(v, str)]


# --- 9. health and the OpenAPI document ----------------------------------------------------------

STAFF_CASE = "/api/v1/staff/complaints/{ticket_no}"
ROUTES = {
    "/healthz": {"get"},
    "/api/v1/auth/wechat": {"post"},
    "/api/v1/cards/{code}": {"get"},
    "/api/v1/cards/{code}/evaluations": {"post"},
    "/api/v1/misconduct-categories": {"get"},
    "/api/v1/complaints": {"get", "post"},
    "/api/v1/complaints/{ticket_no}": {"get"},
    "/api/v1/complaints/{ticket_no}/feedback": {"post"},
    "/api/v1/staff/auth/login": {"post"},
    "/api/v1/staff/auth/logout": {"post"},
    "/api/v1/staff/complaints": {"get"},
    STAFF_CASE: {"get"},
    f"{STAFF_CASE}/acknowledge": {"post"},
    f"{STAFF_CASE}/reply": {"post"},
    "/api/v1/admin/sms": {"get"},
}
BODIES: dict[str, type[BaseModel]] = {
    "/api/v1/complaints": ComplaintCreate,
    "/api/v1/cards/{code}/evaluations": EvaluationCreate,
    "/api/v1/auth/wechat": WeChatLogin,
    "/api/v1/staff/auth/login": StaffLogin,
    "/api/v1/complaints/{ticket_no}/feedback": FeedbackCreate,
    f"{STAFF_CASE}/reply": ReplyCreate,
}


async def test_healthz(edge_client: httpx.AsyncClient) -> None:
    res = await edge_client.get("/healthz")
    assert res.status_code == 200
    data = res.json()
    assert data["status"] == "ok"
    assert data["details"]["database"] == "ok" and data["details"]["redis"] == "ok"


async def _openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    res = await client.get("/docs/openapi.json")
    assert res.status_code == 200
    spec: dict[str, Any] = res.json()
    return spec


def _body_schema(spec: dict[str, Any], path: str) -> dict[str, Any]:
    content = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    schema: dict[str, Any] = content["schema"]
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


async def test_openapi_lists_every_route_with_its_body(edge_client: httpx.AsyncClient) -> None:
    spec = await _openapi(edge_client)
    paths = spec["paths"]
    assert set(ROUTES) <= set(paths), sorted(set(ROUTES) - set(paths))
    for path, methods in ROUTES.items():
        assert methods <= set(paths[path]), (path, sorted(paths[path]))
    for path, model in BODIES.items():
        props = _body_schema(spec, path)["properties"]
        assert set(model.model_fields) <= set(props), (path, sorted(props))


async def test_openapi_body_schemas_match_what_the_api_accepts(
    edge_client: httpx.AsyncClient,
) -> None:
    # A client generated from the document must send exactly the fields the API validates.
    spec = await _openapi(edge_client)
    mismatches = []
    for path, model in BODIES.items():
        schema = _body_schema(spec, path)
        want = model.model_json_schema()
        if set(schema["properties"]) != set(want["properties"]):
            extra = sorted(set(schema["properties"]) - set(want["properties"]))
            mismatches.append((path, "properties", extra))
        if set(schema.get("required", [])) != set(want.get("required", [])):
            mismatches.append((path, "required", sorted(want.get("required", []))))
    assert not mismatches, mismatches


# --- 10. production refuses demo accounts --------------------------------------------------------


async def test_production_refuses_demo_accounts(clean_db: str) -> None:
    unit = await Unit.create(
        code="43", name="湖南省交通运输厅", division_name="湖南省", level="province", path="43/"
    )
    await support.staff("real-admin", unit.code, "province_admin")
    await auth.refuse_demo_accounts()  # real accounts only: fine
    demo = await support.staff("demo-province", unit.code, "province_admin")
    demo.is_demo = True
    await demo.save()
    with pytest.raises(RuntimeError, match="demo-province"):
        await auth.refuse_demo_accounts()
    await StaffUser.filter(is_demo=True).delete()
    await auth.refuse_demo_accounts()


# --- fuzz: garbage never makes a 500 -------------------------------------------------------------

GARBAGE_BODIES: list[str] = [
    "{}",
    '{"": ""}',
    '{"level": null, "code": null, "username": null, "password": null, "satisfied": null}',
    '{"card_code": null, "categories": null, "description": null, "message": null}',
    '{"level": {"level": 5}}',
    '{"code": {"code": "dev-a-1"}}',
    '{"categories": [[["RUDE"]]], "description": {"text": "执法人员态度恶劣"}}',
    '{"level": 1e400}',
    '{"level": -1e400}',
    '{"level": NaN}',
    '{"level": Infinity, "satisfied": -Infinity}',
    '{"level": 99999999999999999999999999999999999999}',
    '{"level": ' + "9" * 5000 + "}",
    '{"dimensions": {"civility": 1e308}, "level": 5.5}',
    '{"answers": {"showed_id": null}, "level": "五"}',
    '{"message": 0, "satisfied": 0, "username": 0, "password": 0, "code": 0}',
    '{"message": [], "satisfied": [], "username": [], "password": [], "code": []}',
    '{"message": {}, "satisfied": {}, "username": {}, "password": {}, "code": {}}',
    '{"' + "k" * 5000 + '": 1}',
    '{"\u0000": "\u0000"}',
    '{"code": "\\ud800", "username": "\\udfff", "message": "\\ud83d"}',
    '{"emoji": "😀😀😀", "level": "😀"}',
    '{"description": "' + "啊" * 20000 + '"}',
    '{"level": 5, "level": "5"}',
    '{"__proto__": {"admin": true}, "constructor": null}',
    '{"a":' * 3000 + "1" + "}" * 3000,
    "[" * 3000 + "]" * 3000,
    '{"satisfied": true, "comment": ' + "[" * 2000 + "]" * 2000 + "}",
    '{"level": 1, "comment": ' + '{"a":' * 1500 + "1" + "}" * 1500 + "}",
    '{"description": "\\u0000\\u0000\\u0000\\u0000\\u0000"}',
]


async def test_garbage_bodies_never_cause_a_server_error(
    client: httpx.AsyncClient, services: Services
) -> None:
    s = await setup(client)
    county = await staff_token(client, "county-430102")
    ticket = await replied_case(client, s, county)
    routes: list[tuple[str, Headers]] = [
        ("/api/v1/complaints", s.citizen),
        (s.rate_url, s.citizen),
        (f"/api/v1/complaints/{ticket}/feedback", s.citizen),
        ("/api/v1/auth/wechat", {}),
        ("/api/v1/staff/auth/login", {}),
        (f"/api/v1/staff/complaints/{ticket}/reply", county),
    ]
    failures: list[tuple[Any, ...]] = []
    for url, headers in routes:
        for body in GARBAGE_BODIES:
            res = await client.post(
                url,
                content=body.encode("utf-8", "surrogatepass"),
                headers={**JSON_HEADERS, **headers},
            )
            if not 400 <= res.status_code < 500:
                failures.append((url.rsplit("/", 1)[-1], body[:40], res.status_code))
                continue
            error_of(res)
    assert not failures, failures


async def test_nul_characters_in_text_never_cause_a_server_error(
    client: httpx.AsyncClient, services: Services
) -> None:
    # PostgreSQL text cannot hold U+0000: such input must be refused (or cleaned), never a 500.
    s = await setup(client)
    county = await staff_token(client, "county-430102")
    replied = await replied_case(client, s, county)
    acknowledged = await acknowledged_case(client, s, county)
    attempts: list[tuple[str, dict[str, Any], Headers]] = [
        ("/api/v1/complaints", s.complaint(description=f"{DESCRIPTION}\u0000"), s.citizen),
        ("/api/v1/complaints", s.complaint(location="长沙\u0000"), s.citizen),
        (s.rate_url, {"level": 4, "comment": "还行\u0000"}, s.citizen),
        (
            f"/api/v1/complaints/{replied}/feedback",
            {"satisfied": True, "comment": "\u0000好"},
            s.citizen,
        ),
        (f"/api/v1/staff/complaints/{acknowledged}/reply", {"message": "答复\u0000内容"}, county),
        ("/api/v1/staff/auth/login", {"username": "province\u0000", "password": PASSWORD}, {}),
    ]
    failures: list[tuple[Any, ...]] = []
    for url, body, headers in attempts:
        res = await client.post(url, json=body, headers=headers)
        if res.status_code >= 500:
            failures.append((url, body, res.status_code))
        elif res.status_code >= 400:
            error_of(res)
    assert not failures, failures


async def test_a_body_of_many_unknown_fields_gets_a_short_answer(
    client: httpx.AsyncClient, services: Services
) -> None:
    """A JSON body is refused over its limit before it is parsed; under it, an error lists a
    bounded number of fields, whatever the body holds (no answer a hundred times its request)."""
    import json

    from api.validation import JSON_MAX_BYTES, MAX_FIELD_ERRORS

    world = await make_world()
    citizen = await citizen_token(client)
    url = f"/api/v1/cards/{world.card.code}/evaluations"
    many = json.dumps({**{f"k{i}": 1 for i in range(20000)}, "level": 5})
    assert len(many) < JSON_MAX_BYTES
    res = await client.post(
        url, content=many, headers={**citizen, "Content-Type": "application/json"}
    )
    error = assert_error(res, 422, "validation_failed")
    assert len(error["details"]["fields"]) == MAX_FIELD_ERRORS
    assert error["details"]["more_fields"] == 20000 - MAX_FIELD_ERRORS
    assert "等 20000 个字段" in error["message"] and len(res.content) < 10_000
    for path, headers in ((url, citizen), ("/api/v1/auth/wechat", {})):
        big = json.dumps({"level": 5, "comment": "x" * JSON_MAX_BYTES})
        res = await client.post(
            path, content=big, headers={**headers, "Content-Type": "application/json"}
        )
        error = assert_error(res, 413, "payload_too_large")
        assert error["details"]["max_bytes"] == JSON_MAX_BYTES
    assert not await Evaluation.exists()
