"""Public disclosure of a unit (执法公示): what it does, on what basis, how, and who watches it."""

from __future__ import annotations

import re

import httpx

from api.models import Unit, UnitDisclosure
from api.services.context import Services
from api.services.disclosure import load_defaults
from tests.support import make_world, staff, staff_token

URL = "/api/v1/units"
# A parenthesised part written twice in a row, e.g. "湖南省交通运输厅（法制处）（法制处）".
DOUBLED = re.compile(r"(（[^（）]*）)\1|(\([^()]*\))\2")


def _admin(code: str) -> str:
    return f"/api/v1/admin/units/{code}/disclosure"


async def test_every_level_discloses_its_defaults_without_login(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    await Unit.filter(code="430102").update(hotline="0731-84110000")
    county = (await client.get(f"{URL}/430102")).json()
    assert county["name"] == "长沙市芙蓉区交通运输综合行政执法大队"
    assert (county["level"], county["level_label"]) == ("county", "大队")
    assert county["parent"] == {"code": "4301", "name": "长沙市交通运输综合行政执法支队"}
    assert county["duties"][0].startswith(county["name"]) and "芙蓉区" in county["duties"][0]
    assert any("长沙市交通运输综合行政执法支队" in d for d in county["duties"])
    assert "《中华人民共和国行政处罚法》" in county["legal_bases"]
    assert any("陈述、申辩" in p for p in county["procedures"])
    assert county["supervision_channels"][:2] == [
        {"name": "12328交通运输服务监督电话", "value": "12328"},
        {"name": f"{county['name']}监督电话", "value": "0731-84110000"},
    ]
    assert county["supervision_channels"][2]["name"] == "上级监督：长沙市交通运输综合行政执法支队"
    assert county["updated_at"] is None

    # The card shows the same channels: one source.
    card = (await client.get(f"/api/v1/cards/{world.card.code}")).json()
    assert card["channels"] == county["supervision_channels"]

    city = (await client.get(f"{URL}/4301")).json()
    assert city["level"] == "city" and city["parent"]["code"] == "43"
    assert "复核" in "".join(city["duties"])
    province = (await client.get(f"{URL}/43")).json()
    assert province["level"] == "province" and province["parent"] is None
    assert [c["value"] for c in province["supervision_channels"]] == ["12328", "12328"]
    for page in (county, city, province):  # every placeholder filled in
        items = page["duties"] + page["legal_bases"] + page["procedures"]
        assert items and not any("{" in item or "}" in item for item in items)
    assert any("{unit}" in d for d in load_defaults()["county"]["duties"])

    for code in ("999999", "abc", "4301029", "4" * 40, "%20"):
        res = await client.get(f"{URL}/{code}")
        assert res.status_code == 404 and res.json()["error"]["code"] == "unit_not_found", code


async def test_admins_maintain_their_subtree(client: httpx.AsyncClient, services: Services) -> None:
    await make_world()
    await staff("cityadmin-4301", "4301", "city_admin")
    province = await staff_token(client, "province")
    city_admin = await staff_token(client, "cityadmin-4301")
    body = {
        "duties": ["负责芙蓉区公路路政和道路运输执法。", "受理群众投诉举报。"],
        "address": "长沙市芙蓉区某某路1号",
        "mailbox": "frjdjb@example.gov.cn",
    }
    res = await client.put(_admin("430102"), json=body, headers=city_admin)
    assert res.status_code == 200, res.text
    page = (await client.get(f"{URL}/430102")).json()
    assert page["duties"] == body["duties"] and page["updated_at"]
    assert "《中华人民共和国行政处罚法》" in page["legal_bases"]  # untouched: still the default
    channels = {c["value"] for c in page["supervision_channels"]}
    assert {"12328", body["address"], body["mailbox"]} <= channels
    row = await UnitDisclosure.get(unit__code="430102")
    assert row.updated_by_id is not None

    # null puts a list back to its default, "" clears a channel; omitted fields stay.
    res = await client.put(_admin("430102"), json={"duties": None, "mailbox": ""}, headers=province)
    assert res.status_code == 200, res.text
    page = res.json()
    assert page["duties"][0].startswith("长沙市芙蓉区交通运输综合行政执法大队")
    values = [c["value"] for c in page["supervision_channels"]]
    assert body["address"] in values and body["mailbox"] not in values

    # Outside the city admin's subtree: as if it did not exist. A handler may not at all.
    res = await client.put(_admin("4302"), json=body, headers=city_admin)
    assert res.status_code == 404 and res.json()["error"]["code"] == "unit_not_found"
    res = await client.put(_admin("nowhere"), json=body, headers=province)
    assert res.status_code == 404
    handler = await staff_token(client, "county-430102")
    res = await client.put(_admin("430102"), json=body, headers=handler)
    assert res.status_code == 403 and res.json()["error"]["code"] == "capability_missing"
    assert (await client.put(_admin("430102"), json=body)).status_code == 401


async def test_disclosure_sizes_are_bounded(client: httpx.AsyncClient, services: Services) -> None:
    await make_world()
    province = await staff_token(client, "province")
    for bad in (
        {"duties": []},
        {"duties": ["职" * 501]},
        {"duties": ["一"]},
        {"duties": ["  "]},
        {"legal_bases": ["《法》x"] * 51},
        {"procedures": "立案调查"},
        {"address": "址" * 201},
        {"mailbox": ["a@b.cn"]},
        {"duties": ["ok ok"], "other": 1},
    ):
        res = await client.put(_admin("430102"), json=bad, headers=province)
        assert res.status_code == 422, bad
    assert not await UnitDisclosure.exists()


async def test_no_unit_discloses_a_doubled_parenthesised_part(
    client: httpx.AsyncClient, services: Services
) -> None:
    # Unit names carry their own suffix (the province: "湖南省交通运输厅（法制处）"); a default text
    # that adds it again after {unit} reads it twice.
    await make_world()
    doubled = []
    for code in await Unit.all().order_by("code").values_list("code", flat=True):
        page = (await client.get(f"{URL}/{code}")).json()
        texts = page["duties"] + page["legal_bases"] + page["procedures"] + [page["name"]]
        texts += [c["name"] for c in page["supervision_channels"]]
        doubled += [(code, text) for text in texts if DOUBLED.search(text)]
    assert not doubled, doubled[:5]
    province = (await client.get(f"{URL}/43")).json()
    assert province["duties"][0].startswith("湖南省交通运输厅（法制处）指导、监督全省")
