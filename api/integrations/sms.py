"""Aliyun SMS (Dysmsapi ``SendSms``) through the official core SDK.

The SDK is synchronous (requests), so every call runs in a worker thread. ``SendSms`` is not
idempotent: the SDK's own retries are switched off and the outbox decides about resends from the
``transient`` / ``maybe_delivered`` flags of :class:`SmsResult`. ``send`` never raises for
provider or network failures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.http import method_type, protocol_type
from aliyunsdkcore.request import CommonRequest

log = logging.getLogger("pingyi.sms")

API_VERSION = "2017-05-25"
ACTION = "SendSms"
# Aliyun limits each template variable to 35 characters (a Chinese character counts as one).
PARAM_LIMIT = 35

TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "Throttling.User",
        "Throttling.Api",
        "Throttling.System",
        "ServiceUnavailable",
        "InternalError",
        "isp.SYSTEM_ERROR",
        # Per-number flow control (1/min, 5/hour, 10/day for one signature): later is fine.
        "isv.BUSINESS_LIMIT_CONTROL",
        "isv.DAY_LIMIT_CONTROL",
        # Account out of balance / suspended for arrears: the message itself is fine, and
        # sending works again once operations have topped the account up.
        "isv.AMOUNT_NOT_ENOUGH",
        "isv.OUT_OF_SERVICE",
    }
)

_HTTP_ERROR = "SDK.HttpError"
_STRING_TO_SIGN = "server string to sign is:"
# Fragments of the requests/urllib3 messages the SDK wraps into SDK.HttpError. The SDK keeps only
# the text, so this is the one way to tell "never left" from "sent, answer lost".
_READ_TIMEOUT = ("Read timed out", "read timeout=")
_CONNECT_TIMEOUT = ("ConnectTimeout", "connect timeout=")
_NOT_SENT = (
    "NewConnectionError",
    "Connection refused",
    "NameResolutionError",
    "Failed to resolve",
    "Name or service not known",
    "SSLError",
)
_PHONE = re.compile(r"(?:\+?86|0086)?(1[3-9][0-9]{9})", re.ASCII)
_PHONE_NOISE = re.compile(r"[\s\-().]")
_PROTOCOLS = {"http": protocol_type.HTTP, "https": protocol_type.HTTPS}


@dataclass(frozen=True)
class SmsResult:
    ok: bool
    code: str  # "OK", Aliyun's Code, or "NetworkError" / "Timeout" for transport failures
    message: str
    biz_id: str | None
    transient: bool  # worth retrying later
    maybe_delivered: bool  # the request may have reached Aliyun but the answer was lost


class SmsGateway:
    def __init__(
        self,
        *,
        access_key_id: str,
        access_key_secret: str,
        region: str,
        endpoint: str,
        protocol: str,
        timeout: float,
        sign_name: str,
    ) -> None:
        if protocol not in _PROTOCOLS:
            raise ValueError(f"unsupported SMS protocol {protocol!r} (http or https)")
        self._endpoint = endpoint
        # The SDK compares the protocol with ``is``: hand it its own constant, never a config str.
        self._protocol = _PROTOCOLS[protocol]
        self._sign_name = sign_name
        self._client = AcsClient(
            ak=access_key_id,
            secret=access_key_secret,
            region_id=region,
            auto_retry=False,
            max_retry_time=0,
            connect_timeout=timeout,
            timeout=timeout,
            # The SDK reads HTTP(S)_PROXY but ignores NO_PROXY: never go through a proxy.
            proxy={"http": None, "https": None},
        )

    async def send(
        self, *, phone: str, template_code: str, params: dict[str, str], out_id: str
    ) -> SmsResult:
        request = self._request(
            phone=phone, template_code=template_code, params=params, out_id=out_id
        )
        try:
            body = await asyncio.to_thread(self._client.do_action_with_exception, request)
        except ServerException as exc:
            result = _server_error(exc)
        except ClientException as exc:
            result = _client_error(exc)
        else:
            result = _answer(body)
        if not result.ok:
            log.warning(
                "sms %s failed: %s %s (transient=%s, maybe_delivered=%s)",
                out_id,
                result.code,
                result.message,
                result.transient,
                result.maybe_delivered,
            )
        return result

    def close(self) -> None:
        self._client.session.close()

    def _request(
        self, *, phone: str, template_code: str, params: dict[str, str], out_id: str
    ) -> CommonRequest:
        request = CommonRequest(domain=self._endpoint, version=API_VERSION, action_name=ACTION)
        request.set_method(method_type.POST)
        request.set_protocol_type(self._protocol)
        request.set_accept_format("JSON")
        # Business fields go in the signed form body: they stay out of URLs and access logs.
        request.add_body_params("PhoneNumbers", phone)
        request.add_body_params("SignName", self._sign_name)
        request.add_body_params("TemplateCode", template_code)
        if params:
            template_param = json.dumps(params, ensure_ascii=False, separators=(",", ":"))
            request.add_body_params("TemplateParam", template_param)
        request.add_body_params("OutId", out_id)
        return request


def _failure(code: str, message: str, *, transient: bool, maybe_delivered: bool) -> SmsResult:
    return SmsResult(
        ok=False,
        code=code,
        message=message,
        biz_id=None,
        transient=transient,
        maybe_delivered=maybe_delivered,
    )


def _answer(body: bytes) -> SmsResult:
    try:
        data: Any = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("Code"), str):
        # HTTP 200 without a readable answer: Aliyun may well have taken the message.
        text = body[:200].decode("utf-8", "replace")
        return _failure("InvalidResponse", text, transient=True, maybe_delivered=True)
    code = data["Code"]
    if code != "OK":
        message = str(data.get("Message", ""))
        return _failure(code, message, transient=code in TRANSIENT_CODES, maybe_delivered=False)
    biz_id = data.get("BizId")
    return SmsResult(
        ok=True,
        code=code,
        message=str(data.get("Message", "")),
        biz_id=str(biz_id) if biz_id else None,
        transient=False,
        maybe_delivered=False,
    )


def _server_error(exc: ServerException) -> SmsResult:
    code = str(exc.get_error_code())
    status = int(exc.get_http_status() or 0)
    # The string to sign echoed by SignatureDoesNotMatch holds the phone number: keep it out
    # of logs and outbox rows.
    message = str(exc.get_error_msg()).split(_STRING_TO_SIGN, 1)[0].rstrip()
    transient = code in TRANSIENT_CODES or code.startswith("Throttling") or status == 429
    return _failure(
        code,
        message,
        transient=transient or status >= 500,
        # A gateway error (502/504) may hide a backend that did take the message.
        maybe_delivered=status in {502, 504},
    )


def _client_error(exc: ClientException) -> SmsResult:
    code, message = str(exc.get_error_code()), str(exc.get_error_msg())
    if code != _HTTP_ERROR:
        # Invalid parameters or credentials on our side: resending the same thing cannot help.
        return _failure(code, message, transient=False, maybe_delivered=False)
    if any(marker in message for marker in _READ_TIMEOUT):
        return _failure("Timeout", message, transient=True, maybe_delivered=True)
    if any(marker in message for marker in _CONNECT_TIMEOUT):
        return _failure("Timeout", message, transient=True, maybe_delivered=False)
    never_sent = any(marker in message for marker in _NOT_SENT)
    return _failure("NetworkError", message, transient=True, maybe_delivered=not never_sent)


def normalize_phone(raw: str) -> str:
    """A mainland mobile number as Aliyun wants it: 11 digits, no country code."""
    compact = _PHONE_NOISE.sub("", unicodedata.normalize("NFKC", raw))
    match = _PHONE.fullmatch(compact)
    if match is None:
        raise ValueError("手机号码无效")
    return match.group(1)


def clamp_params(params: dict[str, object], *, limit: int = PARAM_LIMIT) -> dict[str, str]:
    """Template variables as strings, each cut to Aliyun's per-variable limit."""
    return {
        str(key): _clamp("" if value is None else str(value), limit)
        for key, value in params.items()
    }


def _clamp(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    return value[: max(limit - 1, 0)] + "…"
