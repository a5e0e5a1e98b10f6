"""The mini-program skeleton stays in step with the API it calls."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from typing import Any

import httpx
import pytest

from api.models import AuthSession, Case, Evaluation
from api.services.auth import token_hash
from api.services.context import Services
from api.settings import ROOT
from tests.support import make_world

MP = ROOT / "miniprogram_stubs"


def _normalise(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_every_page_has_its_four_files() -> None:
    pages = json.loads((MP / "app.json").read_text())["pages"]
    assert {
        "pages/card/card",
        "pages/rate/rate",
        "pages/report/report",
        "pages/track/track",
    } <= set(pages)
    for page in pages:
        for ext in ("js", "json", "wxml", "wxss"):
            assert (MP / f"{page}.{ext}").is_file(), f"{page}.{ext}"


async def test_api_js_calls_exactly_the_citizen_routes(
    client: httpx.AsyncClient, services: Services
) -> None:
    source = (MP / "utils" / "api.js").read_text()
    block = source[source.index("const ROUTES") : source.index("}\n", source.index("const ROUTES"))]
    called = {
        _normalise(re.sub(r"\$\{[^}]*\}", "{}", path))
        for path in re.findall(r"['`](/api/v1/[^'`]*)['`]", block)
    }
    spec = (await client.get("/docs/openapi.json")).json()["paths"]
    citizen = {
        _normalise(path)
        for path in spec
        if path.startswith("/api/v1/") and not path.startswith(("/api/v1/staff", "/api/v1/admin"))
    }
    assert called <= citizen, called - citizen
    assert {
        "/api/v1/auth/wechat",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/api/v1/cards/{}",
        "/api/v1/cards/{}/evaluations",
        "/api/v1/complaints",
        "/api/v1/complaints/{}",
        "/api/v1/complaints/{}/feedback",
        "/api/v1/misconduct-categories",
    } <= called


# --- utils/api.js itself, run in Node against the real server -----------------------------------

HARNESS = ROOT / "tests" / "miniprogram" / "harness.js"


async def run_stub(base_url: str, scenario: str, **args: Any) -> dict[str, Any]:
    """One scenario of tests/miniprogram/harness.js (the stub with a real-HTTP ``wx``)."""
    node = shutil.which("node")
    assert node, "Node.js is needed to run the mini-program stub (apt-get install nodejs)"
    proc = await asyncio.create_subprocess_exec(
        node,
        str(HARNESS),
        base_url,
        scenario,
        json.dumps(args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    report: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return report


def requests_to(report: dict[str, Any], method: str, path: str) -> list[dict[str, Any]]:
    return [r for r in report["log"] if r["method"] == method and r["path"] == path]


def calls(report: dict[str, Any]) -> list[str]:
    return [f"{r['method']} {r['path']} {r['status']}" for r in report["log"]]


LOGIN, REFRESH, MINE = "/api/v1/auth/wechat", "/api/v1/auth/refresh", "/api/v1/complaints"


async def test_stub_sends_a_lost_submission_again_with_the_same_key(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    report = await run_stub(str(client.base_url), "lost_answers", user="mp-a", card=world.card.code)
    assert report["error"] is None, report
    for path in (MINE, f"/api/v1/cards/{world.card.code}/evaluations"):
        first, retry = requests_to(report, "POST", path)
        assert first["lost"] and first["status"] == 201  # it was done; the phone never heard
        assert re.fullmatch(r"[A-Za-z0-9_-]{8,64}", first["key"]), first
        assert retry["key"] == first["key"] and retry["replayed"] and retry["status"] == 201
    assert await Case.filter(kind="complaint").count() == 1
    assert await Evaluation.all().count() == 1
    case = await Case.get(kind="complaint")
    assert report["result"]["ticket_no"] == case.ticket_no


async def test_stub_keeps_the_key_when_the_citizen_taps_again_and_changes_it_for_a_new_body(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    report = await run_stub(str(client.base_url), "tap_again", user="mp-b", card=world.card.code)
    assert report["error"] is None, report
    result = report["result"]
    assert result["error"] == "network"  # three attempts, every answer lost: the page is told
    posts = requests_to(report, "POST", MINE)
    assert [p["lost"] for p in posts] == [True, True, True, False, False]
    assert len({p["key"] for p in posts[:4]}) == 1  # 3 automatic + the tap: one submission
    assert posts[1]["replayed"] and posts[3]["replayed"]
    assert posts[4]["key"] != posts[0]["key"] and not posts[4]["replayed"]  # edited: a new one
    tickets = set(await Case.all().values_list("ticket_no", flat=True))
    assert tickets == {result["again"], result["edited"]} and len(tickets) == 2


async def test_stub_refreshes_the_token_a_day_before_it_expires(
    client: httpx.AsyncClient, services: Services
) -> None:
    report = await run_stub(str(client.base_url), "refresh_before_expiry", user="mp-c")
    assert report["error"] is None, report
    assert calls(report) == [
        f"POST {LOGIN} 200",
        f"GET {MINE} 200",
        f"POST {REFRESH} 200",  # before the call, not after a 401
        f"GET {MINE} 200",
        f"GET {MINE} 200",  # once: the new token has seven days again
    ]
    first, second = report["result"]["first"], report["result"]["second"]
    assert first != second
    assert [r["token"] for r in report["log"][1:]] == [first, first, second, second]
    old = await AuthSession.get(token_hash=token_hash(first))
    new = await AuthSession.get(token_hash=token_hash(second))
    assert new.family_id == old.id and new.citizen_id == old.citizen_id


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("relogin_on_401", [f"POST {LOGIN} 200", f"GET {MINE} 200", f"GET {MINE} 401"]),
        (
            "refresh_refused",
            [f"POST {LOGIN} 200", f"GET {MINE} 200", f"POST {REFRESH} 401"],
        ),
        ("expired", [f"POST {LOGIN} 200", f"GET {MINE} 200"]),
    ],
)
async def test_stub_logs_in_again_when_the_server_refuses_the_token(
    client: httpx.AsyncClient, services: Services, scenario: str, expected: list[str]
) -> None:
    report = await run_stub(str(client.base_url), scenario, user="mp-d")
    assert report["error"] is None, report
    assert calls(report) == [*expected, f"POST {LOGIN} 200", f"GET {MINE} 200"]
    tokens = [r["token"] for r in report["log"] if r["path"] == MINE]
    assert tokens[0] != tokens[-1]
    assert report["storage"]["pingyi_token"] == tokens[-1]


async def test_stub_logout_ends_the_session_on_the_server(
    client: httpx.AsyncClient, services: Services
) -> None:
    report = await run_stub(str(client.base_url), "logout", user="mp-e")
    assert report["error"] is None, report
    assert calls(report) == [
        f"POST {LOGIN} 200",
        f"GET {MINE} 200",
        "POST /api/v1/auth/logout 200",
        f"POST {LOGIN} 200",  # the next call signs in anew
        f"GET {MINE} 200",
    ]
    assert report["result"]["forgotten"] is True
    old = report["result"]["token"]
    res = await client.get(MINE, headers={"Authorization": f"Bearer {old}"})
    assert res.status_code == 401
