"""The mini-program skeleton stays in step with the API it calls."""

from __future__ import annotations

import json
import re

import httpx

from api.services.context import Services
from api.settings import ROOT

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
        "/api/v1/cards/{}",
        "/api/v1/cards/{}/evaluations",
        "/api/v1/complaints",
        "/api/v1/complaints/{}",
        "/api/v1/complaints/{}/feedback",
        "/api/v1/misconduct-categories",
    } <= called
