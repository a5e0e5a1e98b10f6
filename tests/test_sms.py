"""Aliyun SMS: the real SDK client against a local Dysmsapi that verifies signatures like Aliyun."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from api.fakes.sms import FakeSmsServer, sign_rpc, string_to_sign
from api.integrations.sms import SmsGateway, clamp_params, normalize_phone

ROOT = Path(__file__).resolve().parent.parent
KEY_ID = "pingyi-test-key"
SECRET = "pingyi-test-secret"
TEMPLATE = "SMS_100001"
SIGN_NAME = "评议"
PHONE = "13800138000"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSmsServer]:
    server = FakeSmsServer(
        access_keys={KEY_ID: SECRET}, templates={TEMPLATE}, sign_names={SIGN_NAME}
    ).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clean(fake: FakeSmsServer) -> None:
    fake.reset()


def _gateway(
    endpoint: str,
    *,
    key_id: str = KEY_ID,
    secret: str = SECRET,
    timeout: float = 3.0,
) -> SmsGateway:
    return SmsGateway(
        access_key_id=key_id,
        access_key_secret=secret,
        region="cn-hangzhou",
        endpoint=endpoint,
        protocol="http",
        timeout=timeout,
        sign_name=SIGN_NAME,
    )


@pytest.fixture
def gateway(fake: FakeSmsServer) -> Iterator[SmsGateway]:
    gw = _gateway(fake.endpoint)
    yield gw
    gw.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the signature itself ----------------------------------------------------------------------


def test_sign_rpc_reproduces_aliyuns_published_vector() -> None:
    params = {
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "Format": "XML",
        "Version": "2014-05-26",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "Timestamp": "2016-02-23T12:46:24Z",
    }
    assert sign_rpc(params, secret="testsecret", method="GET") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
    # Signature itself never takes part in the string to sign.
    signed = {**params, "Signature": "whatever"}
    assert sign_rpc(signed, secret="testsecret", method="GET") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_string_to_sign_uses_rfc3986_encoding() -> None:
    text = string_to_sign({"b": "a b*~+/", "a": "张"}, method="post")
    # Sorted keys; space %20, * %2A, ~ kept, + and / encoded; then the whole query encoded again.
    assert text == "POST&%2F&a%3D%25E5%25BC%25A0%26b%3Da%2520b%252A~%252B%252F"


# -- SmsGateway → FakeSmsServer ----------------------------------------------------------------


async def test_message_arrives_with_phone_template_params_and_out_id(
    fake: FakeSmsServer, gateway: SmsGateway
) -> None:
    result = await gateway.send(
        phone=PHONE, template_code=TEMPLATE, params={"code": "123456"}, out_id="outbox-1"
    )
    assert result.ok and result.code == "OK"
    assert not result.transient and not result.maybe_delivered
    assert result.biz_id is not None
    assert result.biz_id.split("^")[0].isdigit() and result.biz_id.split("^")[1].isdigit()
    assert fake.attempts == 1
    [message] = fake.received
    assert message["phone"] == PHONE
    assert message["sign_name"] == SIGN_NAME
    assert message["template_code"] == TEMPLATE
    assert message["params"] == {"code": "123456"}
    assert message["out_id"] == "outbox-1"
    assert message["biz_id"] == result.biz_id


async def test_chinese_and_reserved_characters_round_trip(
    fake: FakeSmsServer, gateway: SmsGateway
) -> None:
    params = {"name": "张三", "case": "投诉A-001：已受理", "odd": "100% & a=b +~*/ 空 格"}
    result = await gateway.send(phone=PHONE, template_code=TEMPLATE, params=params, out_id="cn")
    assert result.ok, result
    assert fake.received[0]["params"] == params


async def test_wrong_secret_is_a_permanent_signature_error(fake: FakeSmsServer) -> None:
    gw = _gateway(fake.endpoint, secret="not-the-secret")
    result = await gw.send(phone=PHONE, template_code=TEMPLATE, params={}, out_id="x")
    gw.close()
    # The SDK parsed the answer (it splits the message on "string to sign is:") without crashing.
    assert result.code == "SignatureDoesNotMatch"
    assert not result.ok and not result.transient and not result.maybe_delivered
    assert PHONE not in result.message  # the echoed string to sign is not kept
    assert fake.attempts == 0 and fake.received == []


async def test_unknown_access_key_is_permanent(fake: FakeSmsServer) -> None:
    gw = _gateway(fake.endpoint, key_id="nobody")
    result = await gw.send(phone=PHONE, template_code=TEMPLATE, params={}, out_id="x")
    gw.close()
    assert result.code == "InvalidAccessKeyId.NotFound"
    assert not result.transient


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        ("Throttling", True),
        ("isv.BUSINESS_LIMIT_CONTROL", True),
        ("ServiceUnavailable", True),
        ("isv.MOBILE_NUMBER_ILLEGAL", False),
        ("isv.SMS_TEMPLATE_ILLEGAL", False),
        ("isv.SMS_SIGNATURE_ILLEGAL", False),
    ],
)
async def test_injected_provider_errors_are_classified(
    fake: FakeSmsServer, gateway: SmsGateway, code: str, transient: bool
) -> None:
    fake.fail_next(code)
    result = await gateway.send(phone=PHONE, template_code=TEMPLATE, params={}, out_id="f")
    assert (result.ok, result.code, result.transient) == (False, code, transient)
    assert not result.maybe_delivered
    assert fake.attempts == 1  # the SDK did not retry on its own
    assert fake.received == []
    again = await gateway.send(phone=PHONE, template_code=TEMPLATE, params={}, out_id="f")
    assert again.ok


async def test_invalid_phone_is_rejected_by_the_provider(gateway: SmsGateway) -> None:
    result = await gateway.send(phone="12345", template_code=TEMPLATE, params={}, out_id="p")
    assert result.code == "isv.MOBILE_NUMBER_ILLEGAL"
    assert not result.transient


async def test_unknown_template_is_permanent(gateway: SmsGateway) -> None:
    result = await gateway.send(phone=PHONE, template_code="SMS_404", params={}, out_id="t")
    assert result.code == "isv.SMS_TEMPLATE_ILLEGAL"
    assert not result.transient


async def test_lost_answer_is_transient_and_maybe_delivered(fake: FakeSmsServer) -> None:
    fake.drop_response_next()
    gw = _gateway(fake.endpoint, timeout=1.0)
    started = time.monotonic()
    result = await gw.send(phone=PHONE, template_code=TEMPLATE, params={"k": "v"}, out_id="lost")
    gw.close()
    assert time.monotonic() - started < 5
    assert result.code == "Timeout"
    assert result.transient and result.maybe_delivered and not result.ok
    # Aliyun did take it: that is why a blind resend would text the citizen twice.
    assert [m["out_id"] for m in fake.received] == ["lost"]


async def test_refused_connection_is_transient_and_not_delivered() -> None:
    gw = _gateway(f"127.0.0.1:{_free_port()}")
    result = await gw.send(phone=PHONE, template_code=TEMPLATE, params={}, out_id="r")
    gw.close()
    assert result.code == "NetworkError"
    assert result.transient and not result.maybe_delivered


async def test_proxy_environment_is_ignored(
    monkeypatch: pytest.MonkeyPatch, fake: FakeSmsServer, gateway: SmsGateway
) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("HTTP_PROXY", dead)
    monkeypatch.setenv("http_proxy", dead)
    result = await gateway.send(phone=PHONE, template_code=TEMPLATE, params={}, out_id="px")
    assert result.ok, result


async def test_clamped_params_pass_the_length_limit(
    fake: FakeSmsServer, gateway: SmsGateway
) -> None:
    long = {"reason": "违规" * 30}
    refused = await gateway.send(phone=PHONE, template_code=TEMPLATE, params=long, out_id="long")
    assert refused.code == "isv.PARAM_LENGTH_LIMIT" and not refused.transient
    sent = await gateway.send(
        phone=PHONE, template_code=TEMPLATE, params=clamp_params(dict(long)), out_id="long"
    )
    assert sent.ok
    assert fake.received[0]["params"]["reason"] == "违规" * 17 + "…"


async def test_https_from_config_is_really_used(fake: FakeSmsServer) -> None:
    # The SDK compares protocols with ``is``: a str read from config must still mean TLS.
    protocol = "".join(["ht", "tps"])
    gw = SmsGateway(
        access_key_id=KEY_ID,
        access_key_secret=SECRET,
        region="cn-hangzhou",
        endpoint=fake.endpoint,
        protocol=protocol,
        timeout=3,
        sign_name=SIGN_NAME,
    )
    result = await gw.send(phone=PHONE, template_code=TEMPLATE, params={}, out_id="tls")
    gw.close()
    assert result.code == "NetworkError" and "SSL" in result.message  # TLS against plain HTTP
    assert result.transient and not result.maybe_delivered
    assert fake.attempts == 0


def test_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValueError):
        SmsGateway(
            access_key_id=KEY_ID,
            access_key_secret=SECRET,
            region="cn-hangzhou",
            endpoint="dysmsapi.aliyuncs.com",
            protocol="ftp",
            timeout=1,
            sign_name=SIGN_NAME,
        )


# -- the fake on the wire, signed by hand --------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _params(**overrides: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "Action": "SendSms",
        "Version": "2017-05-25",
        "Format": "JSON",
        "AccessKeyId": KEY_ID,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": uuid.uuid4().hex,
        "Timestamp": _now(),
        "RegionId": "cn-hangzhou",
        "PhoneNumbers": PHONE,
        "SignName": SIGN_NAME,
        "TemplateCode": TEMPLATE,
        "TemplateParam": '{"code":"1234"}',
        "OutId": "raw",
        **overrides,
    }
    return {k: v for k, v in params.items() if v is not None}


def _signed(
    params: dict[str, str], *, method: str = "POST", secret: str = SECRET
) -> dict[str, str]:
    return {**params, "Signature": sign_rpc(params, secret=secret, method=method)}


def _call(fake: FakeSmsServer, params: dict[str, str], *, method: str = "POST") -> tuple[int, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    base = f"http://{fake.endpoint}/"
    if method == "GET":
        request = urllib.request.Request(f"{base}?{urlencode(params)}", method="GET")
    else:
        request = urllib.request.Request(base, data=urlencode(params).encode(), method="POST")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with opener.open(request, timeout=5) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    text = raw.decode("utf-8")
    return status, json.loads(text) if params.get("Format", "JSON") == "JSON" else text


def _stale() -> str:
    return (datetime.now(UTC) - timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({"PhoneNumbers": None}, 400, "MissingPhoneNumbers"),
        ({"TemplateCode": None}, 400, "MissingTemplateCode"),
        ({"SignatureNonce": None}, 400, "MissingSignatureNonce"),
        ({"PhoneNumbers": "1380013800"}, 200, "isv.MOBILE_NUMBER_ILLEGAL"),
        ({"TemplateParam": "code=1234"}, 200, "isv.INVALID_JSON_PARAM"),
        ({"TemplateParam": '{"code":1234}'}, 200, "isv.TEMPLATE_PARAMS_ILLEGAL"),
        ({"TemplateParam": json.dumps({"a": "x" * 36})}, 200, "isv.PARAM_LENGTH_LIMIT"),
        ({"SignName": "别的签名"}, 200, "isv.SMS_SIGNATURE_ILLEGAL"),
        ({"Timestamp": _stale()}, 400, "InvalidTimeStamp.Expired"),
        ({"Timestamp": "yesterday"}, 400, "InvalidTimeStamp.Format"),
        ({"AccessKeyId": "nobody"}, 404, "InvalidAccessKeyId.NotFound"),
        ({"Action": "SendBatchSms"}, 404, "InvalidAction.NotFound"),
    ],
)
def test_fake_rejects_like_aliyun(
    fake: FakeSmsServer, overrides: dict[str, str | None], status: int, code: str
) -> None:
    answer = _call(fake, _signed(_params(**overrides)))
    assert answer[0] == status
    assert answer[1]["Code"] == code and answer[1]["RequestId"]
    assert fake.received == []


def test_tampered_request_gets_the_server_string_to_sign(fake: FakeSmsServer) -> None:
    params = _signed(_params())
    params["PhoneNumbers"] = "13900139000"  # changed after signing
    status, body = _call(fake, params)
    assert (status, body["Code"]) == (400, "SignatureDoesNotMatch")
    assert body["Message"].split("string to sign is:")[1] == string_to_sign(params, method="POST")
    assert fake.attempts == 0


def test_signature_is_bound_to_the_http_method(fake: FakeSmsServer) -> None:
    status, body = _call(fake, _signed(_params(), method="GET"), method="POST")
    assert (status, body["Code"]) == (400, "SignatureDoesNotMatch")


def test_nonce_is_single_use(fake: FakeSmsServer) -> None:
    params = _signed(_params())
    assert _call(fake, params)[1]["Code"] == "OK"
    status, body = _call(fake, params)
    assert (status, body["Code"]) == (400, "SignatureNonceUsed")
    assert len(fake.received) == 1


def test_get_with_query_string_and_xml_answer(fake: FakeSmsServer) -> None:
    status, body = _call(fake, _signed(_params(Format="XML"), method="GET"), method="GET")
    assert status == 200
    assert body.startswith('<?xml version="1.0" encoding="UTF-8"?><SendSmsResponse>')
    assert "<Code>OK</Code>" in body and "<BizId>" in body


def test_several_numbers_are_recorded_one_by_one(fake: FakeSmsServer) -> None:
    status, body = _call(fake, _signed(_params(PhoneNumbers="13800138000,+8613900139000")))
    assert (status, body["Code"]) == (200, "OK")
    assert [m["phone"] for m in fake.received] == ["13800138000", "+8613900139000"]


async def test_cli_runs_the_fake_and_records_messages(tmp_path: Path) -> None:
    record = tmp_path / "sms.jsonl"
    key = f"{KEY_ID}:{SECRET}"
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "api.fakes.sms", "--port", "0", "--key", key),
        *("--record", str(record)),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=10)).decode()
        prefix = "fake Dysmsapi listening on http://"
        assert line.startswith(prefix + "127.0.0.1:"), line
        gw = _gateway(line.strip().removeprefix(prefix).rstrip("/"))
        result = await gw.send(phone=PHONE, template_code="SMS_9", params={"a": "甲"}, out_id="cli")
        gw.close()
        assert result.ok, result
        [saved] = [json.loads(x) for x in record.read_text(encoding="utf-8").splitlines()]
        assert saved["out_id"] == "cli" and saved["params"] == {"a": "甲"}
        assert saved["biz_id"] == result.biz_id
    finally:
        if proc.returncode is None:
            proc.terminate()
        assert await asyncio.wait_for(proc.wait(), timeout=5) == 0


# -- helpers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "13800138000",
        "+86 138 0013 8000",
        "86-13800138000",
        "138-0013-8000",
        "0086 13800138000",
        "(+86) 138.0013.8000",
        "１３８００１３８０００",
    ],
)
def test_normalize_phone_accepts_mainland_mobiles(raw: str) -> None:
    assert normalize_phone(raw) == "13800138000"


@pytest.mark.parametrize(
    "raw",
    ["", "12800138000", "1380013800", "138001380001", "+1 13800138000", "86138001380", "abc"],
)
def test_normalize_phone_rejects_the_rest(raw: str) -> None:
    with pytest.raises(ValueError, match="手机号码无效"):
        normalize_phone(raw)


def test_clamp_params() -> None:
    exact = "x" * 35
    clamped = clamp_params(
        {"exact": exact, "long": "y" * 36, "cn": "投诉" * 20, "n": 12, "none": None, "ok": True}
    )
    assert clamped["exact"] == exact
    assert clamped["long"] == "y" * 34 + "…" and len(clamped["long"]) == 35
    assert clamped["cn"] == ("投诉" * 20)[:34] + "…"
    assert (clamped["n"], clamped["none"], clamped["ok"]) == ("12", "", "True")
    assert clamp_params({"a": "abcdefgh"}, limit=5) == {"a": "abcd…"}
    assert all(isinstance(v, str) for v in clamped.values())
