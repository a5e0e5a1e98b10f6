"""Staff inbox filters and paging; staff accounts: lockout, password rules, disabling, WeChat."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx

from api import clock
from api.fakes.wechat import FakeWeChatServer
from api.models import AuthSession, SecurityEvent, StaffUser
from api.services.context import Services
from api.services.staff_accounts import password_problem
from api.settings import Settings
from tests.support import PASSWORD, at, citizen_token, dev_code, make_world, staff_token

URL = "/api/v1/staff/complaints"


async def _file(
    client: httpx.AsyncClient, headers: dict[str, str], card: str, categories: list[str]
) -> str:
    body = {"card_code": card, "categories": categories, "description": "执法人员态度恶劣。"}
    res = await client.post("/api/v1/complaints", json=body, headers=headers)
    assert res.status_code == 201, res.text
    return str(res.json()["ticket_no"])


async def test_inbox_filters_and_cursor_pages(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-03-03 09:00"))
    world = await make_world()
    citizen = await citizen_token(client)
    tickets = []
    for minute in range(7):
        clock.freeze(at("2025-03-03 09:00") + timedelta(minutes=minute))
        cats = ["NO_BODYCAM"] if minute % 2 else ["RUDE"]
        tickets.append(
            await _file(
                client, citizen, world.card.code if minute < 5 else world.other_card.code, cats
            )
        )
    city = await staff_token(client, "city-4301")

    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(URL, params=params, headers=city)).json()
        seen += [c["ticket_no"] for c in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == tickets  # most urgent (earliest 签收 deadline) first, each exactly once
    assert page["counts"] == {"received": 7}

    bodycam = (await client.get(URL, params={"category": "NO_BODYCAM"}, headers=city)).json()[
        "items"
    ]
    assert [c["ticket_no"] for c in bodycam] == tickets[1::2]
    tianxin = (await client.get(URL, params={"unit": "430103"}, headers=city)).json()["items"]
    assert [c["ticket_no"] for c in tianxin] == tickets[5:]
    clock.freeze(at("2025-03-03 11:03"))
    city = await staff_token(client, "city-4301")
    overdue = (await client.get(URL, params={"overdue": "true"}, headers=city)).json()["items"]
    assert [c["ticket_no"] for c in overdue] == tickets[:4] and all(c["overdue"] for c in overdue)
    for bad in (
        {"category": "NOPE"},
        {"overdue": "yes"},
        {"due_before": "tomorrow"},
        {"cursor": "!!"},
        {"unit": "4302"},
    ):
        res = await client.get(URL, params=bad, headers=city)
        assert res.status_code == 422, (bad, res.text)


async def test_lockout_is_recorded_and_unknown_names_lock_alike(
    client: httpx.AsyncClient, services: Services
) -> None:
    await make_world()
    for name in ("county-430102", "nobody-here"):
        codes = []
        for _ in range(6):
            res = await client.post(
                "/api/v1/staff/auth/login", json={"username": name, "password": "wrong-password-1"}
            )
            codes.append(res.json()["error"]["code"])
        assert codes == ["invalid_credentials"] * 5 + ["account_locked"], (name, codes)
    res = await client.post(
        "/api/v1/staff/auth/login", json={"username": "county-430102", "password": PASSWORD}
    )
    assert res.status_code == 401 and res.json()["error"]["code"] == "account_locked"
    assert await SecurityEvent.filter(kind="locked", staff__username="county-430102").count() == 1


def test_password_rules() -> None:
    assert password_problem("short1", username="zhang", production=False)
    assert password_problem("zhang-2025-abc", username="zhang", production=False)
    assert password_problem("1234567890123", username="zhang", production=False)
    assert password_problem("pingyi-demo", username="zhang", production=True)
    assert password_problem("Hunan-2025-ok!", username="zhang", production=True) is None


async def test_change_password_and_disable_take_effect_at_once(
    client: httpx.AsyncClient, services: Services
) -> None:
    await make_world()
    county = await staff_token(client, "county-430102")
    weak = await client.post(
        "/api/v1/staff/auth/password",
        json={"old_password": PASSWORD, "new_password": "abc"},
        headers=county,
    )
    assert (
        weak.status_code == 422
        and weak.json()["error"]["details"]["fields"][0]["field"] == "new_password"
    )
    ok = await client.post(
        "/api/v1/staff/auth/password",
        json={"old_password": PASSWORD, "new_password": "Furong-2025-safe"},
        headers=county,
    )
    assert ok.status_code == 200
    login = await client.post(
        "/api/v1/staff/auth/login",
        json={"username": "county-430102", "password": "Furong-2025-safe"},
    )
    assert login.status_code == 200
    fresh = {"Authorization": f"Bearer {login.json()['token']}"}

    handler = await staff_token(client, "county-430103")
    assert (
        await client.post("/api/v1/admin/staff/county-430102/disable", headers=handler)
    ).status_code == 403
    province = await staff_token(client, "province")
    res = await client.post("/api/v1/admin/staff/county-430102/disable", headers=province)
    assert res.status_code == 200
    for token in (county, fresh):
        assert (await client.get(URL, headers=token)).status_code == 401
    assert (
        await client.post("/api/v1/admin/staff/no-such-user/disable", headers=province)
    ).status_code == 404


async def test_staff_binds_wechat_and_signs_in_from_the_mini_program(
    client: httpx.AsyncClient, services: Services, wechat_fake: FakeWeChatServer
) -> None:
    await make_world()
    unbound = await client.post("/api/v1/staff/auth/wechat", json={"code": dev_code("zhangsan")})
    assert unbound.status_code == 401 and unbound.json()["error"]["code"] == "wechat_not_bound"
    county = await staff_token(client, "county-430102")
    res = await client.post(
        "/api/v1/staff/auth/wechat/bind", json={"code": dev_code("zhangsan")}, headers=county
    )
    assert res.status_code == 200
    other = await staff_token(client, "county-430103")
    taken = await client.post(
        "/api/v1/staff/auth/wechat/bind", json={"code": dev_code("zhangsan")}, headers=other
    )
    assert taken.status_code == 409
    login = await client.post("/api/v1/staff/auth/wechat", json={"code": dev_code("zhangsan")})
    assert login.status_code == 200
    inbox = await client.get(URL, headers={"Authorization": f"Bearer {login.json()['token']}"})
    assert inbox.status_code == 200


async def test_password_change_ends_other_sessions_and_counts_failures(
    client: httpx.AsyncClient, services: Services
) -> None:
    await make_world()
    first, second = (
        await staff_token(client, "county-430102"),
        await staff_token(client, "county-430102"),
    )
    url = "/api/v1/staff/auth/password"
    same = await client.post(
        url, json={"old_password": PASSWORD, "new_password": PASSWORD}, headers=first
    )
    assert same.status_code == 422
    ok = await client.post(
        url, json={"old_password": PASSWORD, "new_password": "Furong-2025-new"}, headers=first
    )
    assert ok.status_code == 200
    assert (await client.get(URL, headers=first)).status_code == 200  # the session that changed it
    assert (await client.get(URL, headers=second)).status_code == 401  # every other one ends
    for _ in range(5):
        res = await client.post(
            url, json={"old_password": "guess-1234", "new_password": "Another-2025"}, headers=first
        )
        assert res.status_code == 401
    login = await client.post(
        "/api/v1/staff/auth/login",
        json={"username": "county-430102", "password": "Furong-2025-new"},
    )
    assert login.json()["error"]["code"] == "account_locked"
    province = await staff_token(client, "province")
    own = await client.post("/api/v1/admin/staff/province/disable", headers=province)
    assert own.status_code == 409 and own.json()["error"]["code"] == "cannot_disable_self"


async def _wrong_logins(client: httpx.AsyncClient, username: str, count: int) -> list[str]:
    """``count`` wrong passwords for ``username`` at the same moment; each answer's code."""
    body = {"username": username, "password": "wrong-password-1"}
    answers = await asyncio.gather(
        *(client.post("/api/v1/staff/auth/login", json=body) for _ in range(count))
    )
    assert all(r.status_code == 401 for r in answers), [r.text for r in answers]
    return [r.json()["error"]["code"] for r in answers]


async def test_parallel_wrong_passwords_are_each_counted_and_lock_once(
    client: httpx.AsyncClient, services: Services
) -> None:
    await make_world()
    # Four at once, below the threshold: the database counts every one (no lost increment).
    assert await _wrong_logins(client, "county-430102", 4) == ["invalid_credentials"] * 4
    user = await StaffUser.get(username="county-430102")
    assert (user.failed_logins, user.locked_until) == (4, None)

    # Twenty more at once: exactly one of them is the fifth failure and locks the account; the
    # ones that passed the lock check before it was set are refused but not counted again.
    await _wrong_logins(client, "county-430102", 20)
    user = await StaffUser.get(username="county-430102")
    assert user.locked_until is not None and user.locked_until > clock.now()
    assert user.failed_logins == 0
    events = await SecurityEvent.filter(staff_id=user.id, kind="locked")
    assert [e.detail for e in events] == ["5 failed logins"]
    res = await client.post(
        "/api/v1/staff/auth/login", json={"username": "county-430102", "password": PASSWORD}
    )
    assert res.status_code == 401 and res.json()["error"]["code"] == "account_locked"

    # Twenty at once from nothing: one lock, not four.
    await _wrong_logins(client, "county-430103", 20)
    other = await StaffUser.get(username="county-430103")
    assert other.locked_until is not None
    assert await SecurityEvent.filter(staff_id=other.id, kind="locked").count() == 1


async def test_a_staff_session_lasts_eight_hours_by_default(
    client: httpx.AsyncClient, services: Services
) -> None:
    assert Settings.model_fields["staff_token_ttl"].default == 8 * 3600
    assert services.settings.staff_token_ttl == 8 * 3600  # the suite runs on the default
    clock.freeze(at("2025-03-03 09:00"))
    await make_world()
    res = await client.post(
        "/api/v1/staff/auth/login", json={"username": "county-430102", "password": PASSWORD}
    )
    assert res.status_code == 200 and res.json()["expires_in"] == 8 * 3600
    token = {"Authorization": f"Bearer {res.json()['token']}"}
    session = await AuthSession.get(kind="staff", staff__username="county-430102")
    assert session.expires_at == at("2025-03-03 17:00")
    clock.freeze(at("2025-03-03 16:59"))
    assert (await client.get(URL, headers=token)).status_code == 200
    clock.freeze(at("2025-03-03 17:00"))
    expired = await client.get(URL, headers=token)
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "token_invalid"


async def test_inbox_counts_every_state_puts_breached_first_and_takes_due_before(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-03-03 09:00"))  # Monday
    world = await make_world()
    citizen = await citizen_token(client)
    county = await staff_token(client, "county-430102")
    tickets = []
    for minute in range(6):
        clock.freeze(at("2025-03-03 09:00") + timedelta(minutes=10 * minute))
        tickets.append(await _file(client, citizen, world.card.code, ["RUDE"]))
    late, soon, working, replied, waiting, closed = tickets

    async def act(ticket: str, action: str, body: dict[str, object] | None = None) -> None:
        res = await client.post(f"{URL}/{ticket}/{action}", json=body or {}, headers=county)
        assert res.status_code == 200, res.text

    for ticket in (working, replied, waiting, closed):
        await act(ticket, "acknowledge")
    for ticket in (replied, closed):
        await act(ticket, "reply", {"message": "经核实，已处理"})
    await act(waiting, "request-info", {"message": "请提供罚单照片"})
    res = await client.post(
        f"/api/v1/complaints/{closed}/feedback", json={"satisfied": True}, headers=citizen
    )
    assert res.status_code == 200, res.text

    clock.freeze(at("2025-03-03 11:05"))  # the first case's 签收 deadline (11:00) has passed
    page = (await client.get(URL, params={"limit": 50}, headers=county)).json()
    assert page["counts"] == {
        "received": 2,
        "acknowledged": 1,
        "waiting": 1,
        "replied": 1,
        "closed": 1,
    }
    order = [i["ticket_no"] for i in page["items"]]
    overdue = [i["overdue"] for i in page["items"]]
    assert order[:2] == [late, soon] and overdue[:2] == [True, False]  # breached first
    assert overdue == sorted(overdue, reverse=True)  # no breached case after one that is not
    # Then by the nearest deadline (the 7-day feedback window ends before the 5-working-day
    # reply); last what has no running deadline (paused, closed), newest first.
    assert order == [late, soon, replied, working, closed, waiting]
    assert [i["next_due_at"] is None for i in page["items"]] == [False] * 4 + [True] * 2

    for due_before in ("2025-03-03T11:30:00+08:00", "2025-03-03T03:30:00Z"):
        res = await client.get(URL, params={"due_before": due_before}, headers=county)
        assert res.status_code == 200, res.text
        assert [i["ticket_no"] for i in res.json()["items"]] == [late, soon], due_before
    res = await client.get(URL, params={"due_before": "2025-03-03T11:30:00"}, headers=county)
    assert_invalid = res.json()["error"]
    assert (
        res.status_code == 422 and assert_invalid["details"]["fields"][0]["field"] == "due_before"
    )
