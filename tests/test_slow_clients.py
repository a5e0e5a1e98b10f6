"""A client whose body never arrives in full gets a 408 in the one error shape, not a 5xx."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from sanic import Sanic

from api.services.context import Services


@pytest.fixture
def impatient(app_server: tuple[str, Services]) -> Iterator[int]:
    """The test server, giving up on a request after 1 s (not 60): new connections only."""
    config = Sanic.get_app("pingyi_test").config
    saved = config.REQUEST_TIMEOUT, config.RESPONSE_TIMEOUT
    config.REQUEST_TIMEOUT, config.RESPONSE_TIMEOUT = 60, 1  # the response clock runs out first
    yield urlsplit(app_server[0]).port or 80
    config.REQUEST_TIMEOUT, config.RESPONSE_TIMEOUT = saved


async def test_a_body_that_stops_half_way_is_a_408(impatient: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", impatient)
    writer.write(
        b"POST /api/v1/auth/wechat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"code":'
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), timeout=10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(body)["error"]["code"] == "request_timeout"
