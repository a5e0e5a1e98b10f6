"""The citizen's phone through WeChat (getuserphonenumber, encryptedData) and GET /me."""

from __future__ import annotations

import httpx
import pytest

from api.fakes.wechat import FakeWeChatServer
from api.integrations.wechat import encrypt_data
from api.models import AuthSession, Case, Citizen
from api.services.context import Services
from tests.support import World, citizen_token, dev_code, make_world, staff_token
from tests.test_wechat import VECTOR_APPID, VECTOR_DATA, VECTOR_IV, VECTOR_KEY

PHONE = "/api/v1/me/phone"
PHONE_API = "/wxa/business/getuserphonenumber"


@pytest.fixture
async def world(services: Services) -> World:
    return await make_world()


async def test_phone_code(client: httpx.AsyncClient, services: Services) -> None:
    headers = await citizen_token(client, "alice")
    res = await client.get("/api/v1/me", headers=headers)
    assert res.status_code == 200
    assert res.json()["phone"] is None and res.json()["has_phone"] is False
    res = await client.post(PHONE, json={"phone_code": "phone-13800138000"}, headers=headers)
    assert res.status_code == 200, res.text
    assert res.json()["phone"] == "138****8000"
    assert "13800138000" not in res.text
    res = await client.get("/api/v1/me", headers=headers)
    assert res.json() == {**res.json(), "phone": "138****8000", "has_phone": True}
    assert "13800138000" not in res.text and "session_key" not in res.text
    citizen = await Citizen.get(openid=_openid(services, "alice"))
    assert citizen.phone == "13800138000"
    # A phone code is good once: the second use is WeChat's 40029.
    res = await client.post(PHONE, json={"phone_code": "phone-13800138000"}, headers=headers)
    assert res.status_code == 400
    assert res.json()["error"]["code"] == "phone_code_invalid"


def _openid(services: Services, user: str) -> str:
    from api.fakes.wechat import _digest_id

    return _digest_id(services.settings.wechat_appid, user)


@pytest.mark.parametrize("code", ["not-a-phone-code", "phone-123"])
async def test_invalid_code(client: httpx.AsyncClient, services: Services, code: str) -> None:
    headers = await citizen_token(client)
    res = await client.post(PHONE, json={"phone_code": code}, headers=headers)
    assert res.status_code == 400
    error = res.json()["error"]
    assert error["code"] == "phone_code_invalid" and error["details"]["errcode"] == 40029
    assert (await Citizen.get(openid=_openid(services, "citizen1"))).phone is None


@pytest.mark.parametrize("errcode", [45011, -1])
async def test_wechat_busy_is_503_with_retry_after(
    client: httpx.AsyncClient, wechat_fake: FakeWeChatServer, errcode: int
) -> None:
    headers = await citizen_token(client)
    wechat_fake.fail_next(PHONE_API, errcode)
    res = await client.post(PHONE, json={"phone_code": "phone-13800138000"}, headers=headers)
    assert res.status_code == 503
    assert res.headers["Retry-After"] == "5"
    assert res.json()["error"]["code"] == "wechat_busy"
    # The code was not spent: the same tap works once WeChat is back.
    res = await client.post(PHONE, json={"phone_code": "phone-13800138000"}, headers=headers)
    assert res.status_code == 200, res.text


async def test_encrypted_data_with_the_session_key(
    client: httpx.AsyncClient, wechat_fake: FakeWeChatServer, services: Services
) -> None:
    headers = await citizen_token(client, "bob")
    # Login kept the session_key on the server, never in the answer.
    session = await AuthSession.filter(kind="citizen").order_by("-id").first()
    assert session is not None and session.wechat_session_key
    data, iv = wechat_fake.encrypted_phone("bob", "13912345678")
    res = await client.post(PHONE, json={"encrypted_data": data, "iv": iv}, headers=headers)
    assert res.status_code == 200, res.text
    assert res.json()["phone"] == "139****5678"
    # Another wx.login rotates the key WeChat encrypts with; the older session still works.
    await citizen_token(client, "bob")
    data, iv = wechat_fake.encrypted_phone("bob", "13700001111")
    res = await client.post(PHONE, json={"encrypted_data": data, "iv": iv}, headers=headers)
    assert res.status_code == 200, res.text
    assert (await Citizen.get(openid=_openid(services, "bob"))).phone == "13700001111"
    # Someone else's encryptedData (another session_key) does not decrypt for me.
    await citizen_token(client, "carol")
    data, iv = wechat_fake.encrypted_phone("carol", "13600002222")
    res = await client.post(PHONE, json={"encrypted_data": data, "iv": iv}, headers=headers)
    assert res.status_code == 400
    assert res.json()["error"]["code"] == "encrypted_data_invalid"


async def test_official_vector(
    client: httpx.AsyncClient,
    wechat_fake: FakeWeChatServer,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # WeChat gives this login the official demo session_key (TEST-VECTORS.md).
    wechat_fake.issue_session_key("vector", VECTOR_KEY)
    res = await client.post("/api/v1/auth/wechat", json={"code": dev_code("vector")})
    assert set(res.json()) == {"token", "expires_in"}
    headers = {"Authorization": f"Bearer {res.json()['token']}"}
    body = {"encrypted_data": VECTOR_DATA, "iv": VECTOR_IV}
    # Under our appid the vector's watermark (another appid) must be refused.
    res = await client.post(PHONE, json=body, headers=headers)
    assert res.status_code == 400 and res.json()["error"]["code"] == "encrypted_data_invalid"
    # Configured with the vector's appid, it decrypts: it is user info, not a phone number.
    monkeypatch.setattr(services.settings, "wechat_appid", VECTOR_APPID)
    res = await client.post(PHONE, json=body, headers=headers)
    assert res.status_code == 400 and res.json()["error"]["code"] == "phone_missing"
    # A phone payload sealed the same way (same key and iv) is taken.
    payload = {
        "phoneNumber": "13800138000",
        "purePhoneNumber": "13800138000",
        "countryCode": "86",
        "watermark": {"appid": VECTOR_APPID, "timestamp": 1477314187},
    }
    sealed = encrypt_data(session_key=VECTOR_KEY, iv=VECTOR_IV, payload=payload)
    res = await client.post(
        PHONE, json={"encrypted_data": sealed, "iv": VECTOR_IV}, headers=headers
    )
    assert res.status_code == 200, res.text
    assert res.json()["phone"] == "138****8000"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"encrypted_data": "abcd"},
        {"phone_code": "phone-13800138000", "encrypted_data": "abcd", "iv": "abcd"},
        {"encrypted_data": "not base64!", "iv": "abcd"},
        {"phone_code": ""},
    ],
)
async def test_bad_bodies(client: httpx.AsyncClient, services: Services, body: object) -> None:
    headers = await citizen_token(client)
    res = await client.post(PHONE, json=body, headers=headers)
    assert res.status_code == 422, res.text
    assert res.json()["error"]["code"] == "validation_failed"


async def test_login_required(client: httpx.AsyncClient, services: Services) -> None:
    assert (await client.get("/api/v1/me")).status_code == 401
    res = await client.post(PHONE, json={"phone_code": "phone-13800138000"})
    assert res.status_code == 401
    staff_like = {"Authorization": "Bearer not-a-token"}
    assert (await client.get("/api/v1/me", headers=staff_like)).status_code == 401


async def test_named_complaint_uses_the_verified_phone(
    client: httpx.AsyncClient, world: World
) -> None:
    headers = await citizen_token(client, "dave")
    res = await client.post(PHONE, json={"phone_code": "phone-13800138000"}, headers=headers)
    assert res.status_code == 200
    base = {"card_code": world.card.code, "categories": ["RUDE"], "description": "态度恶劣。"}
    res = await client.post(
        "/api/v1/complaints", json={**base, "anonymous": False}, headers=headers
    )
    assert res.status_code == 201, res.text
    ticket = res.json()["ticket_no"]
    assert (await Case.get(ticket_no=ticket)).contact_phone == "13800138000"
    # Masked for everyone but the handler who signed for the case.
    city = await staff_token(client, "city-4301")
    res = await client.get(f"/api/v1/staff/complaints/{ticket}", headers=city)
    assert res.json()["reporter"]["phone"] == "138****8000"
    county = await staff_token(client, "county-430102")
    await client.post(f"/api/v1/staff/complaints/{ticket}/acknowledge", headers=county)
    res = await client.get(f"/api/v1/staff/complaints/{ticket}", headers=county)
    assert res.json()["reporter"]["phone"] == "13800138000"
    # A phone given with the report wins; anonymous reports carry none.
    res = await client.post(
        "/api/v1/complaints",
        json={**base, "anonymous": False, "phone": "13911112222"},
        headers=headers,
    )
    assert (await Case.get(ticket_no=res.json()["ticket_no"])).contact_phone == "13911112222"
    res = await client.post("/api/v1/complaints", json={**base, "anonymous": True}, headers=headers)
    assert (await Case.get(ticket_no=res.json()["ticket_no"])).contact_phone is None
