"""Citizens' phones at rest: AES-GCM ciphertext in every row (read back with raw SQL), plain
numbers where a handler needs them, masked elsewhere; keys checked at start."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from redis.asyncio import Redis
from tortoise import Tortoise, connections

from api import fieldcrypt
from api.fieldcrypt import PREFIX, FieldCipher, FieldKeyError
from api.models import Case, Citizen
from api.services.context import Services, build_context
from api.settings import DEV_FIELD_KEY, Settings
from tests.support import citizen_token, make_world, staff_token

VERIFIED = "13812348000"  # bound through getPhoneNumber
TYPED = "13955556666"  # typed into a named report


async def raw(sql: str) -> list[dict[str, object]]:
    return list(await connections.get("default").execute_query_dict(sql))


@pytest.fixture
def restore_key(services: Services) -> Iterator[None]:
    yield
    fieldcrypt.configure(services.settings.field_key)


async def test_no_plaintext_phone_anywhere_in_the_database(
    client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    alice = await citizen_token(client, "alice")
    res = await client.post(
        "/api/v1/me/phone", json={"phone_code": f"phone-{VERIFIED}"}, headers=alice
    )
    assert res.status_code == 200 and res.json()["phone"] == "138****8000", res.text
    body = {"card_code": world.card.code, "categories": ["RUDE"], "description": "态度恶劣。"}
    typed = await client.post("/api/v1/complaints", json={**body, "phone": TYPED}, headers=alice)
    verified = await client.post("/api/v1/complaints", json=body, headers=alice)
    assert typed.status_code == verified.status_code == 201, (typed.text, verified.text)

    # Every row of every table, as the database holds it: no number in the clear.
    for model in Tortoise.apps["models"].values():
        table = model._meta.db_table
        for row in await raw(f'SELECT row_to_json(t)::text AS j FROM "{table}" t'):
            assert VERIFIED not in str(row["j"]) and TYPED not in str(row["j"]), (table, row)
    [citizen] = await raw('SELECT phone FROM "citizen"')
    cases = await raw('SELECT ticket_no, contact_phone FROM "case" ORDER BY id')
    stored = [str(citizen["phone"])] + [str(c["contact_phone"]) for c in cases]
    assert all(s.startswith(PREFIX) for s in stored), stored
    assert len(set(stored)) == 3  # a fresh nonce each time: equal numbers do not look equal

    # The code reads plain numbers: the handler who signed sees the number, others a mask.
    assert (await Citizen.get()).phone == VERIFIED
    assert [c.contact_phone for c in await Case.all().order_by("id")] == [TYPED, VERIFIED]
    ticket = str(cases[0]["ticket_no"])
    handler = await staff_token(client, "county-430102")
    acked = await client.post(f"/api/v1/staff/complaints/{ticket}/acknowledge", headers=handler)
    assert acked.status_code == 200, acked.text
    seen = await client.get(f"/api/v1/staff/complaints/{ticket}", headers=handler)
    assert seen.json()["reporter"]["phone"] == TYPED
    city = await staff_token(client, "city-4301")
    seen = await client.get(f"/api/v1/staff/complaints/{ticket}", headers=city)
    assert seen.json()["reporter"]["phone"] == "139****6666"


def test_a_ciphertext_opens_only_with_its_key_and_in_its_column() -> None:
    cipher = FieldCipher("a-test-key-of-more-than-thirty-two-characters")
    sealed = cipher.encrypt(VERIFIED, column="citizen.phone")
    assert sealed.startswith(PREFIX) and VERIFIED not in sealed
    assert cipher.decrypt(sealed, column="citizen.phone") == VERIFIED
    with pytest.raises(FieldKeyError):
        cipher.decrypt(sealed, column="case.contact_phone")  # copied into another column
    with pytest.raises(FieldKeyError):
        FieldCipher("another-key-of-more-than-thirty-two-chars").decrypt(
            sealed, column="citizen.phone"
        )
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(FieldKeyError):
        cipher.decrypt(tampered, column="citizen.phone")
    with pytest.raises(FieldKeyError):
        cipher.decrypt(PREFIX + "not base64!", column="citizen.phone")


async def test_a_wrong_key_refuses_to_start(services: Services, restore_key: None) -> None:
    await Citizen.create(openid="o-key-check", phone=VERIFIED)
    await fieldcrypt.check_stored_key()  # the key that wrote it: fine
    fieldcrypt.configure("a-different-key-of-more-than-thirty-two-chars")
    with pytest.raises(FieldKeyError, match="PINGYI_FIELD_KEY"):
        await fieldcrypt.check_stored_key()


async def test_production_refuses_to_start_without_a_field_key(
    services: Services, redis: Redis, restore_key: None
) -> None:
    for key in (DEV_FIELD_KEY, "", "too-short"):
        with pytest.raises(RuntimeError, match="PINGYI_FIELD_KEY"):
            build_context(
                services.settings.model_copy(
                    update={"environment": "production", "field_key": key}
                ),
                redis,
            )
    production = Settings(environment="production", field_key="k" * 40)
    assert build_context(production, redis).settings.field_key == "k" * 40
    fieldcrypt.configure(DEV_FIELD_KEY)  # outside production the default is accepted
