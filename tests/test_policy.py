"""SLA profiles from config/ and deadlines on the Chinese calendar, as a case sees them."""

from __future__ import annotations

import dataclasses
import tomllib

import httpx
import pytest

from api import clock
from api.models import Case, CaseClock
from api.services.context import Services
from api.settings import ROOT
from api.sla.policy import CaseLimits, load_policy, load_profiles, parse_policy
from tests.support import at, citizen_token, make_world, staff_token


def test_shipped_profiles_load() -> None:
    profiles = load_profiles(ROOT / "config")
    assert set(profiles) == {"default", "strict", "demo"}
    default, strict, demo = profiles["default"], profiles["strict"], profiles["demo"]
    assert (default.clock("reply").limit.amount, default.clock("reply").limit.unit) == (
        5,
        "working_days",
    )
    assert strict.clock("reply").limit.amount == 3 and strict.clock("recheck").limit.amount == 3
    assert default.clock("acknowledge").limit.unit == "natural_hours"
    assert default.quiet_hours.enabled and not demo.quiet_hours.enabled
    assert all(rule.limit.unit == "natural_seconds" for rule in demo.clocks.values())
    assert not default.clock("feedback_window").ladder


async def _reply_due(client: httpx.AsyncClient, card_code: str) -> str:
    headers = await citizen_token(client)
    body = {"card_code": card_code, "categories": ["RUDE"], "description": "态度恶劣，语言粗暴。"}
    res = await client.post("/api/v1/complaints", json=body, headers=headers)
    assert res.status_code == 201, res.text
    return next(d["due_at"] for d in res.json()["deadlines"] if d["clock"] == "reply")


@pytest.mark.parametrize(
    ("received", "reply_due"),
    [
        # Spring Festival 2025: 1/28–2/4 off, Saturday 2/8 a make-up workday.
        ("2025-01-27 10:00", "2025-02-10T17:30:00+08:00"),
        # May Day 2025: 5/1–5/5 off, Sunday 4/27 a make-up workday.
        ("2025-04-25 16:00", "2025-05-06T17:30:00+08:00"),
        # National Day 2025: 10/1–10/8 off, Sunday 9/28 and Saturday 10/11 workdays.
        ("2025-09-26 09:00", "2025-10-10T17:30:00+08:00"),
    ],
)
async def test_reply_deadline_follows_the_official_calendar(
    client: httpx.AsyncClient, services: Services, received: str, reply_due: str
) -> None:
    clock.freeze(at(received))
    world = await make_world()
    assert await _reply_due(client, world.card.code) == reply_due


async def test_switching_profile_affects_new_cases_only(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    assert await _reply_due(client, world.card.code) == "2025-03-10T17:30:00+08:00"
    old = await Case.first()
    assert old is not None and old.sla_profile == "default"

    default = services.policy
    services.policy = load_policy(ROOT / "config" / "sla-strict.toml")
    try:
        assert await _reply_due(client, world.other_card.code) == "2025-03-06T17:30:00+08:00"
        # The case opened under the default profile keeps it: its re-check gets 5 working days.
        county = await staff_token(client, "county-430102")
        citizen = await citizen_token(client)
        await client.post(f"/api/v1/staff/complaints/{old.ticket_no}/acknowledge", headers=county)
        await client.post(
            f"/api/v1/staff/complaints/{old.ticket_no}/reply",
            json={"message": "已处理完毕"},
            headers=county,
        )
        res = await client.post(
            f"/api/v1/complaints/{old.ticket_no}/feedback",
            json={"satisfied": False, "reason": "处理结果不合理"},
            headers=citizen,
        )
        assert res.status_code == 200, res.text
        recheck = await CaseClock.get(case_id=old.id, kind="recheck")
        assert clock.iso(recheck.due_at) == "2025-03-10T17:30:00+08:00"
    finally:
        services.policy = default


def test_policy_rejects_bad_units() -> None:
    import tomllib

    from api.sla.policy import parse_policy

    raw = tomllib.loads((ROOT / "config" / "sla.toml").read_text())
    raw["clocks"]["reply"]["unit"] = "fortnights"
    with pytest.raises(ValueError, match="unknown time unit"):
        parse_policy(raw)
    assert dataclasses.is_dataclass(load_policy(ROOT / "config" / "sla.toml"))


def test_case_limits_come_from_the_profile() -> None:
    profiles = load_profiles(ROOT / "config")
    for profile in profiles.values():
        assert (profile.limits.max_extension_days, profile.limits.max_transfers) == (10, 2)
    raw = tomllib.loads((ROOT / "config" / "sla.toml").read_text())
    raw["limits"] = {"max_extension_days": 15}
    assert parse_policy(raw).limits == CaseLimits(max_extension_days=15, max_transfers=2)
    del raw["limits"]
    assert parse_policy(raw).limits == CaseLimits()  # DOMAIN.md defaults: 10 and 2
    raw["limits"] = {"max_transfers": -1}
    with pytest.raises(ValueError, match="limits"):
        parse_policy(raw)


async def test_a_cases_profile_limits_its_extension_and_transfers(
    client: httpx.AsyncClient, services: Services
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    headers = await citizen_token(client)
    body = {"card_code": world.card.code, "categories": ["RUDE"], "description": "态度恶劣。"}
    ticket = (await client.post("/api/v1/complaints", json=body, headers=headers)).json()[
        "ticket_no"
    ]
    tight = dataclasses.replace(
        services.policy, name="tight", limits=CaseLimits(max_extension_days=5, max_transfers=1)
    )
    services.profiles["tight"] = tight
    try:
        await Case.filter(ticket_no=ticket).update(sla_profile="tight")
        county = await staff_token(client, "county-430102")
        tianxin = await staff_token(client, "county-430103")
        url = f"/api/v1/staff/complaints/{ticket}"
        move = {"unit_code": "430103", "reason": "属天心区管辖"}
        assert (await client.post(f"{url}/transfer", json=move, headers=county)).status_code == 200
        back = {"unit_code": "430102", "reason": "退回原单位"}
        res = await client.post(f"{url}/transfer", json=back, headers=tianxin)
        assert res.status_code == 409 and res.json()["error"]["code"] == "transfer_limit"
        assert "1次" in res.json()["error"]["message"]
        await client.post(f"{url}/acknowledge", headers=tianxin)
        long = {"days": 6, "reason": "需调取外地执法记录"}
        res = await client.post(f"{url}/extension", json=long, headers=tianxin)
        assert res.status_code == 422 and "1–5" in str(res.json())
        res = await client.post(f"{url}/extension", json={**long, "days": 5}, headers=tianxin)
        assert res.status_code == 200, res.text
    finally:
        del services.profiles["tight"]
