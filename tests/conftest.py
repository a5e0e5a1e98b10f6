"""Test fixtures: a real PostgreSQL database and a real Redis, cleaned before every test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from redis.asyncio import Redis
from tortoise import Tortoise, connections

from api import clock, db

BASE_URL = os.environ.get("PINGYI_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("PINGYI_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_DB = f"pingyi_test_{os.getpid()}"
# Per run, so two test runs sharing one Redis never clear each other's keys.
REDIS_PREFIX = f"pingyi-test-{os.getpid()}:"


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


TEST_DATABASE_URL = _with_database(BASE_URL, TEST_DB)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(BASE_URL.replace("postgres://", "postgresql://", 1))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def database() -> AsyncIterator[str]:
    await _admin(f'DROP DATABASE IF EXISTS "{TEST_DB}"')
    await _admin(f'CREATE DATABASE "{TEST_DB}"')
    await db.migrate(TEST_DATABASE_URL)
    yield TEST_DATABASE_URL
    await db.close_db()
    await _admin(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)')


@pytest.fixture(scope="session")
async def redis_client() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def clean_db(database: str) -> AsyncIterator[str]:
    tables = [model._meta.db_table for model in Tortoise.apps["models"].values()]
    conn = connections.get("default")
    quoted = ", ".join(f'"{t}"' for t in tables)
    await conn.execute_script(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")
    clock.reset()
    yield database
    clock.reset()


@pytest.fixture
async def redis(redis_client: Redis) -> AsyncIterator[Redis]:
    keys = [k async for k in redis_client.scan_iter(match=f"{REDIS_PREFIX}*", count=1000)]
    if keys:
        await redis_client.delete(*keys)
    yield redis_client


# --- the app, served over real HTTP on loopback, with the provider fakes beside it ---------------

import socket  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402

from api.app import create_app  # noqa: E402
from api.fakes.sms import FakeSmsServer  # noqa: E402
from api.fakes.wechat import FakeWeChatServer  # noqa: E402
from api.services.context import Services  # noqa: E402
from api.settings import ROOT, Settings  # noqa: E402

APPID, APPSECRET = "wxpingyitest000001", "pingyi-test-secret"
SMS_KEY, SMS_SECRET = "pingyi-test-key", "pingyi-test-key-secret"


@pytest.fixture(scope="session")
def wechat_fake() -> Iterator[FakeWeChatServer]:
    fake = FakeWeChatServer(appid=APPID, secret=APPSECRET).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def sms_fake() -> Iterator[FakeSmsServer]:
    fake = FakeSmsServer(access_keys={SMS_KEY: SMS_SECRET}).start()
    yield fake
    fake.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_settings(
    database_url: str,
    wechat: FakeWeChatServer,
    sms: FakeSmsServer,
    cards_dir: Path,
    **overrides: object,
) -> Settings:
    values: dict[str, object] = {
        "environment": "test",
        "database_url": database_url,
        "redis_url": REDIS_URL,
        "redis_prefix": REDIS_PREFIX,
        "public_base_url": "https://pingyi.test",
        "cards_dir": cards_dir,
        "sla_policy": ROOT / "config" / "sla.toml",
        "wechat_appid": APPID,
        "wechat_secret": APPSECRET,
        "wechat_api_base": wechat.base_url,
        "wechat_timeout": 3.0,
        "sms_access_key_id": SMS_KEY,
        "sms_access_key_secret": SMS_SECRET,
        "sms_endpoint": sms.endpoint,
        "sms_protocol": "http",
        "sms_timeout": 2.0,
        "worker_poll_seconds": 0.1,
        # Suites send hundreds of requests a minute from one address; tests/test_idempotency.py
        # turns the limits on where it tests them.
        "rate_limits_enabled": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
async def app_server(
    database: str,
    wechat_fake: FakeWeChatServer,
    sms_fake: FakeSmsServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[str, Services]]:
    settings = make_settings(
        database,
        wechat_fake,
        sms_fake,
        tmp_path_factory.mktemp("cards"),
        uploads_dir=tmp_path_factory.mktemp("uploads"),
    )
    app = create_app(settings, name="pingyi_test")
    port = _free_port()
    server = await app.create_server(host="127.0.0.1", port=port, return_asyncio_server=True)
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    yield f"http://127.0.0.1:{port}", app.ctx.services
    await server.before_stop()
    await server.close()
    await server.after_stop()


@pytest.fixture
async def services(
    app_server: tuple[str, Services],
    clean_db: str,
    redis: Redis,
    wechat_fake: FakeWeChatServer,
    sms_fake: FakeSmsServer,
) -> Services:
    wechat_fake.reset()
    sms_fake.reset()
    ctx = app_server[1]
    ctx.forget_calendars()
    ctx.forget_local()  # the database and Redis were emptied: so are this worker's copies
    ctx.unknown_years.clear()
    return ctx


@pytest.fixture
async def client(
    app_server: tuple[str, Services], services: Services
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=app_server[0], timeout=10) as http:
        yield http
