"""A citizen on a weak signal: the connection drops while the server is still writing. The write
runs to the end, and the retry with the same Idempotency-Key gets the first answer."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import asyncpg
import httpx

from api.models import Citizen, Evaluation
from api.services import rating_store
from api.services.context import Services
from tests.conftest import TEST_DATABASE_URL
from tests.support import citizen_token, make_world


async def _post_and_hang_up(base_url: str, path: str, headers: dict[str, str], body: bytes) -> None:
    url = urlsplit(base_url)
    _reader, writer = await asyncio.open_connection(url.hostname, url.port)
    head = [f"POST {path} HTTP/1.1", f"Host: {url.netloc}", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()
    await asyncio.sleep(0.5)  # the server is inside the transaction, waiting for the lock
    writer.transport.abort()  # the signal is gone: no answer is read


async def test_a_rating_whose_client_hung_up_is_kept_and_replayed(
    app_server: tuple[str, Services], client: httpx.AsyncClient, services: Services
) -> None:
    world = await make_world()
    auth = await citizen_token(client, "weak-signal")
    citizen = await Citizen.get()
    headers = {**auth, "Idempotency-Key": "rate-once-on-4g", "Content-Type": "application/json"}
    body = json.dumps({"level": 4}).encode()
    path = f"/api/v1/cards/{world.card.code}/evaluations"

    # Someone else holds the citizen's rating lock, so the rating waits inside its transaction.
    blocker = await asyncpg.connect(TEST_DATABASE_URL.replace("postgres://", "postgresql://", 1))
    try:
        async with blocker.transaction():
            await blocker.execute(
                "SELECT pg_advisory_xact_lock($1, $2)", rating_store.CITIZEN_LOCK, citizen.id
            )
            await _post_and_hang_up(app_server[0], path, headers, body)
            await asyncio.sleep(0.3)  # the server has seen the connection go
            assert await Evaluation.all().count() == 0
    finally:
        await blocker.close()

    for _ in range(50):  # the lock is gone: the abandoned write goes on and commits
        if await Evaluation.filter(citizen_id=citizen.id).exists():
            break
        await asyncio.sleep(0.1)
    assert await Evaluation.filter(citizen_id=citizen.id).count() == 1

    retry = await client.post(path, content=body, headers=headers)
    assert retry.status_code == 201, retry.text
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert await Evaluation.filter(citizen_id=citizen.id).count() == 1
