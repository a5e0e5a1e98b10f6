"""WeChat gateway against the local fake (real wechatpy, HTTP and Redis) and official vectors."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from redis.asyncio import Redis

from api.fakes.wechat import FakeWeChatServer
from api.integrations.wechat import WeChatError, WeChatGateway, decrypt_data, encrypt_data

REDIS_URL = os.environ.get("PINGYI_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
APPID = "wxpingyitest000001"
SECRET = "pingyi-test-secret"
ROOT = Path(__file__).resolve().parent.parent
STABLE = "/cgi-bin/stable_token"
SEC_CHECK = "/wxa/msg_sec_check"

# Official demo vector (TEST-VECTORS.md).
VECTOR_APPID = "wx4f4bc4dec97d474b"
VECTOR_KEY = "tiihtNczf5v6AKRyjwEUhQ=="
VECTOR_IV = "r7BXXKkLb8qrSNn05n0qiA=="
VECTOR_DATA = (
    "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+"
    "3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6"
    "/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs"
    "8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns"
    "/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG"
    "20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew=="
)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeWeChatServer]:
    server = FakeWeChatServer(appid=APPID, secret=SECRET).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_fake(fake: FakeWeChatServer) -> None:
    fake.reset()


@pytest.fixture
def prefix() -> str:
    return f"test-wechat-{uuid4().hex}:"


@pytest.fixture
async def wechat_redis(prefix: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, decode_responses=True, socket_timeout=5)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def _gateway(
    fake: FakeWeChatServer, redis: Redis, prefix: str, *, timeout: float = 3.0
) -> WeChatGateway:
    return WeChatGateway(
        appid=APPID,
        secret=SECRET,
        api_base=fake.base_url,
        timeout=timeout,
        redis=redis,
        key_prefix=prefix,
    )


@pytest.fixture
def gateway(fake: FakeWeChatServer, wechat_redis: Redis, prefix: str) -> WeChatGateway:
    return _gateway(fake, wechat_redis, prefix)


# --- encryptedData ------------------------------------------------------------------------------


def test_official_vector_decrypts() -> None:
    data = decrypt_data(
        session_key=VECTOR_KEY, encrypted_data=VECTOR_DATA, iv=VECTOR_IV, appid=VECTOR_APPID
    )
    assert data["openId"] == "oGZUI0egBJY1zhBYw2KhdUfwVJJE"
    assert data["unionId"] == "ocMvos6NjeKLIBqg5Mr9QjxrP1FA"
    assert data["watermark"] == {"appid": VECTOR_APPID, "timestamp": 1477314187}


def test_official_vector_with_other_appid_fails() -> None:
    with pytest.raises(WeChatError) as info:
        decrypt_data(session_key=VECTOR_KEY, encrypted_data=VECTOR_DATA, iv=VECTOR_IV, appid=APPID)
    assert info.value.errcode == -41003


def test_reencrypting_compact_json_gives_official_ciphertext() -> None:
    data = decrypt_data(
        session_key=VECTOR_KEY, encrypted_data=VECTOR_DATA, iv=VECTOR_IV, appid=VECTOR_APPID
    )
    assert encrypt_data(session_key=VECTOR_KEY, iv=VECTOR_IV, payload=data) == VECTOR_DATA


@pytest.mark.parametrize(
    "session_key",
    ["AAAAAAAAAAAAAAAAAAAAAA==", "not base64!", "dGlpaA=="],  # wrong key, garbage, short key
)
def test_bad_key_fails_cleanly(session_key: str) -> None:
    with pytest.raises(WeChatError) as info:
        decrypt_data(
            session_key=session_key, encrypted_data=VECTOR_DATA, iv=VECTOR_IV, appid=VECTOR_APPID
        )
    assert info.value.errcode == -41003


def test_minted_payload_round_trips() -> None:
    payload = {"phoneNumber": "13800138000", "watermark": {"appid": APPID, "timestamp": 1}}
    blob = encrypt_data(session_key=VECTOR_KEY, iv=VECTOR_IV, payload=payload)
    assert decrypt_data(session_key=VECTOR_KEY, encrypted_data=blob, iv=VECTOR_IV, appid=APPID) == (
        payload
    )


# --- login ---------------------------------------------------------------------------------------


async def test_code_to_session(gateway: WeChatGateway, fake: FakeWeChatServer) -> None:
    session = await gateway.code_to_session("dev-alice-1")
    assert session.openid == fake.openid_for("alice")
    assert len(session.openid) == 28 and session.openid.startswith("o")
    assert session.unionid
    assert len(base64.b64decode(session.session_key)) == 16
    # Login needs no access_token: no token fetch happened.
    assert fake.calls[STABLE] == 0


async def test_reused_code_is_40163(gateway: WeChatGateway) -> None:
    await gateway.code_to_session("dev-alice-reuse")
    with pytest.raises(WeChatError) as info:
        await gateway.code_to_session("dev-alice-reuse")
    assert info.value.errcode == 40163


@pytest.mark.parametrize("code", ["garbage", "dev--x", "dev-" + "a" * 33 + "-1", ""])
async def test_invalid_code_is_40029(gateway: WeChatGateway, code: str) -> None:
    with pytest.raises(WeChatError) as info:
        await gateway.code_to_session(code)
    assert info.value.errcode == 40029


async def test_injected_system_error(gateway: WeChatGateway, fake: FakeWeChatServer) -> None:
    fake.fail_next("/sns/jscode2session", -1)
    with pytest.raises(WeChatError) as info:
        await gateway.code_to_session("dev-alice-busy")
    assert info.value.errcode == -1
    # The fault was consumed: the same (unused) code works now.
    assert (await gateway.code_to_session("dev-alice-busy")).openid == fake.openid_for("alice")


async def test_same_user_same_openid(gateway: WeChatGateway, fake: FakeWeChatServer) -> None:
    first = await gateway.code_to_session("dev-bob-1")
    second = await gateway.code_to_session("dev-bob-2")
    other = await gateway.code_to_session("dev-carol-1")
    assert first.openid == second.openid == fake.openid_for("bob")
    assert first.unionid == second.unionid
    assert first.session_key != second.session_key
    assert other.openid != first.openid


async def test_wrong_secret(fake: FakeWeChatServer, wechat_redis: Redis, prefix: str) -> None:
    gateway = _gateway(fake, wechat_redis, prefix)
    gateway_bad = WeChatGateway(
        appid=APPID,
        secret="wrong",
        api_base=fake.base_url,
        timeout=3,
        redis=wechat_redis,
        key_prefix=prefix,
    )
    with pytest.raises(WeChatError) as info:
        await gateway_bad.code_to_session("dev-alice-1")
    assert info.value.errcode == 40125
    with pytest.raises(WeChatError) as info:
        await gateway_bad.access_token()
    assert info.value.errcode == 40125
    assert await gateway.access_token()


async def test_network_failure_and_timeout(wechat_redis: Redis, prefix: str) -> None:
    # A listening socket that never answers: the request must time out, not hang.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        gateway = WeChatGateway(
            appid=APPID,
            secret=SECRET,
            api_base=f"http://127.0.0.1:{port}/",
            timeout=0.5,
            redis=wechat_redis,
            key_prefix=prefix,
        )
        started = time.monotonic()
        with pytest.raises(WeChatError) as info:
            await gateway.code_to_session("dev-alice-1")
        assert info.value.errcode == -1
        assert time.monotonic() - started < 3
    with pytest.raises(WeChatError) as info:  # now nothing listens: connection refused
        await gateway.access_token()
    assert info.value.errcode == -1


# --- access_token ---------------------------------------------------------------------------------


async def test_concurrent_gateways_fetch_once(
    fake: FakeWeChatServer, wechat_redis: Redis, prefix: str
) -> None:
    gateways = [_gateway(fake, wechat_redis, prefix) for _ in range(4)]
    tokens = await asyncio.gather(*(g.access_token() for g in gateways))
    assert len(set(tokens)) == 1
    assert fake.calls[STABLE] == 1
    assert fake.calls["/cgi-bin/token"] == 0
    assert await wechat_redis.get(f"{prefix}wechat:access_token") == tokens[0]
    ttl = await wechat_redis.ttl(f"{prefix}wechat:access_token")
    assert 7200 - 300 - 5 <= ttl <= 7200 - 300


def _token_in_own_loop(base_url: str, prefix: str, barrier: threading.Barrier) -> str:
    async def run() -> str:
        client = Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            gateway = WeChatGateway(
                appid=APPID,
                secret=SECRET,
                api_base=base_url,
                timeout=3,
                redis=client,
                key_prefix=prefix,
            )
            barrier.wait(timeout=10)
            return await gateway.access_token()
        finally:
            await client.aclose()

    return asyncio.run(run())


@pytest.fixture
def sync_cleanup(prefix: str) -> Iterator[None]:
    yield
    asyncio.run(_delete_prefix(prefix))


async def _delete_prefix(prefix: str) -> None:
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def test_concurrent_threads_fetch_once(
    fake: FakeWeChatServer, prefix: str, sync_cleanup: None
) -> None:
    barrier = threading.Barrier(4)
    results: list[str] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(_token_in_own_loop(fake.base_url, prefix, barrier))
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert len(results) == 4 and len(set(results)) == 1
    assert fake.calls[STABLE] == 1


_CHILD = """
import asyncio, sys, time
from redis.asyncio import Redis
from api.integrations.wechat import WeChatGateway

base_url, prefix, start_at, redis_url, appid, secret = sys.argv[1:7]

async def main() -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    gateway = WeChatGateway(appid=appid, secret=secret, api_base=base_url, timeout=3,
                            redis=client, key_prefix=prefix)
    await asyncio.sleep(max(0.0, float(start_at) - time.time()))
    print(await gateway.access_token())
    await client.aclose()

asyncio.run(main())
"""


def test_concurrent_processes_fetch_once(
    fake: FakeWeChatServer, prefix: str, sync_cleanup: None
) -> None:
    start_at = str(time.time() + 4)  # all four call at the same instant, after their imports
    args = [fake.base_url, prefix, start_at, REDIS_URL, APPID, SECRET]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outputs = [child.communicate(timeout=30)[0].strip() for child in children]
    assert [child.returncode for child in children] == [0, 0, 0, 0]
    assert len(set(outputs)) == 1 and outputs[0]
    assert fake.calls[STABLE] == 1


_CHILD_CHECK = """
import asyncio, sys, time
from redis.asyncio import Redis
from api.integrations.wechat import WeChatGateway

base_url, prefix, start_at, redis_url, appid, secret, openid = sys.argv[1:8]

async def main() -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    gateway = WeChatGateway(appid=appid, secret=secret, api_base=base_url, timeout=3,
                            redis=client, key_prefix=prefix)
    await asyncio.sleep(max(0.0, float(start_at) - time.time()))
    print(await gateway.msg_sec_check(openid=openid, content="你好"))
    await client.aclose()

asyncio.run(main())
"""


def test_token_race_in_four_processes_refreshes_once(
    fake: FakeWeChatServer, prefix: str, sync_cleanup: None
) -> None:
    """The shared token went stale (someone called cgi-bin/token): four processes hit 40001 at
    the same instant, and between them make exactly one new stable_token request."""

    async def stale_token_in_redis() -> None:
        client = Redis.from_url(REDIS_URL, decode_responses=True)
        gateway = _gateway(fake, client, prefix)
        await gateway.access_token()
        await _rotate_with_legacy_token(fake)
        await client.aclose()

    asyncio.run(stale_token_in_redis())
    assert fake.calls[STABLE] == 1
    start_at = str(time.time() + 4)
    args = [fake.base_url, prefix, start_at, REDIS_URL, APPID, SECRET, fake.openid_for("alice")]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD_CHECK, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outputs = [child.communicate(timeout=30)[0].strip() for child in children]
    assert [child.returncode for child in children] == [0, 0, 0, 0]
    assert outputs == ["pass"] * 4
    assert fake.calls[STABLE] == 2  # one refresh for the four of them, never a loop
    assert 4 < fake.calls[SEC_CHECK] <= 8  # each at most one retry


async def _rotate_with_legacy_token(fake: FakeWeChatServer) -> str:
    params = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    async with httpx.AsyncClient(base_url=fake.base_url, trust_env=False) as client:
        answer = (await client.get("cgi-bin/token", params=params)).json()
    return str(answer["access_token"])


async def test_stale_token_is_refreshed_once(
    gateway: WeChatGateway, fake: FakeWeChatServer, wechat_redis: Redis, prefix: str
) -> None:
    old = await gateway.access_token()
    new = await _rotate_with_legacy_token(fake)  # someone called cgi-bin/token: `old` is dead
    assert new != old
    assert await gateway.msg_sec_check(openid=fake.openid_for("alice"), content="你好") == "pass"
    assert fake.calls[SEC_CHECK] == 2
    assert fake.calls[STABLE] == 2
    assert await wechat_redis.get(f"{prefix}wechat:access_token") == new


async def test_persistent_40001_gives_up_after_one_refresh(
    gateway: WeChatGateway, fake: FakeWeChatServer
) -> None:
    fake.fail_next(SEC_CHECK, 40001, times=100)
    with pytest.raises(WeChatError) as info:
        await gateway.msg_sec_check(openid=fake.openid_for("alice"), content="你好")
    assert info.value.errcode == 40001
    assert fake.calls[SEC_CHECK] == 2
    assert fake.calls[STABLE] == 2


async def test_fake_tells_an_expired_token_from_a_replaced_one(
    gateway: WeChatGateway, fake: FakeWeChatServer
) -> None:
    body = {"content": "你好", "version": 2, "scene": 1, "openid": fake.openid_for("alice")}

    async def check(token: str) -> int:
        async with httpx.AsyncClient(base_url=fake.base_url, trust_env=False) as client:
            answer = await client.post(SEC_CHECK, params={"access_token": token}, json=body)
        return int(answer.json()["errcode"])

    first = await gateway.access_token()
    assert await check(first) == 0
    assert fake.expire_token() == first
    assert await check(first) == 42001  # expired: WeChat says 42001, not 40001
    second = await gateway.access_token(force_refresh=True)
    assert second != first and await check(second) == 0
    await _rotate_with_legacy_token(fake)
    assert await check(second) == 40001  # replaced by a newer token
    assert await check(first) == 40001


async def test_expired_token_is_refreshed_once(
    gateway: WeChatGateway, fake: FakeWeChatServer, wechat_redis: Redis, prefix: str
) -> None:
    """WeChat expired the token before our cached copy's end (42001): one stable_token
    request (normal mode, which now hands out a new token), one retry, and the new token is
    shared through Redis."""
    old = await gateway.access_token()
    fake.expire_token()
    assert await gateway.msg_sec_check(openid=fake.openid_for("alice"), content="你好") == "pass"
    assert fake.calls[SEC_CHECK] == 2
    assert fake.calls[STABLE] == 2
    new = await wechat_redis.get(f"{prefix}wechat:access_token")
    assert new and new != old
    # The next call uses the refreshed token straight away.
    assert await gateway.msg_sec_check(openid=fake.openid_for("alice"), content="你好") == "pass"
    assert fake.calls[SEC_CHECK] == 3 and fake.calls[STABLE] == 2


async def test_persistent_42001_gives_up_after_one_refresh(
    gateway: WeChatGateway, fake: FakeWeChatServer
) -> None:
    fake.fail_next(SEC_CHECK, 42001, times=100)
    with pytest.raises(WeChatError) as info:
        await gateway.msg_sec_check(openid=fake.openid_for("alice"), content="你好")
    assert info.value.errcode == 42001
    assert fake.calls[SEC_CHECK] == 2  # one retry, never a loop
    assert fake.calls[STABLE] == 2


async def test_force_refresh_and_compare_and_delete(
    gateway: WeChatGateway, fake: FakeWeChatServer, wechat_redis: Redis, prefix: str
) -> None:
    key = f"{prefix}wechat:access_token"
    token = await gateway.access_token()
    assert await gateway.access_token() == token and fake.calls[STABLE] == 1
    # Normal-mode stable_token: refetching gives the same, still-valid token.
    assert await gateway.access_token(force_refresh=True) == token
    assert fake.calls[STABLE] == 2
    # A process invalidating a stale token must not drop the one another process refreshed.
    await wechat_redis.set(key, "refreshed-by-someone-else")
    await gateway._invalidate(token)
    assert await wechat_redis.get(key) == "refreshed-by-someone-else"


# --- other endpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "verdict"),
    [("今天执法人员态度很好", "pass"), ("这段内容待审", "review"), ("含有违禁词的内容", "risky")],
)
async def test_msg_sec_check_verdicts(
    gateway: WeChatGateway, fake: FakeWeChatServer, content: str, verdict: str
) -> None:
    assert await gateway.msg_sec_check(openid=fake.openid_for("a"), content=content) == verdict


async def test_phone_number(gateway: WeChatGateway) -> None:
    assert await gateway.phone_number("phone-13800138000") == "13800138000"
    with pytest.raises(WeChatError) as info:
        await gateway.phone_number("phone-123")
    assert info.value.errcode == 40029


async def test_subscribe_message(gateway: WeChatGateway, fake: FakeWeChatServer) -> None:
    data = {"thing1": {"value": "您的评议已受理"}}
    await gateway.send_subscribe_message(
        openid=fake.openid_for("a"), template_id="tpl", data=data, page="pages/index"
    )
    with pytest.raises(WeChatError) as info:
        await gateway.send_subscribe_message(openid="ounsub-1", template_id="tpl", data=data)
    assert info.value.errcode == 43101
    assert fake.calls["/cgi-bin/message/subscribe/send"] == 2


async def test_unknown_path_is_404_json(fake: FakeWeChatServer) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url, trust_env=False) as client:
        answer = await client.get("nope")
    assert answer.status_code == 404
    assert answer.json()["errcode"] == -1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_cli_runs_the_fake() -> None:
    port = _free_port()
    cmd = [sys.executable, "-m", "api.fakes.wechat", "--port", str(port)]
    cmd += ["--appid", APPID, "--secret", SECRET]
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert f"127.0.0.1:{port}" in child.stdout.readline()
        url = f"http://127.0.0.1:{port}/sns/jscode2session"
        params = {
            "appid": APPID,
            "secret": SECRET,
            "js_code": "dev-dave-1",
            "grant_type": "authorization_code",
            "access_token": "wechatpy-adds-this",  # must be ignored, as WeChat does
        }
        answer = httpx.get(url, params=params, trust_env=False)
        assert json.loads(answer.text)["openid"] == FakeWeChatServer(
            appid=APPID, secret=SECRET
        ).openid_for("dave")
        answer = httpx.get(url, params=params, trust_env=False)
        assert json.loads(answer.text)["errcode"] == 40163
    finally:
        child.terminate()
        child.wait(timeout=10)
