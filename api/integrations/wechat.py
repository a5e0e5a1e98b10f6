"""WeChat mini-program API: login, content check, phone numbers, subscribe messages, encryptedData.

wechatpy does the HTTP work but is synchronous, so every call runs in a thread with a timeout.
The access_token is *one* token shared by every process (WeChat keeps only the latest valid):
it comes from ``cgi-bin/stable_token`` in normal mode, is cached in Redis and refreshed behind a
Redis lock, and is handed to wechatpy per call — wechatpy's own per-process token logic (which
calls ``cgi-bin/token`` and so invalidates the other processes' token) never runs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import requests
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException
from wechatpy.session import SessionStorage

if TYPE_CHECKING:
    from redis.asyncio import Redis

T = TypeVar("T")
Json = dict[str, Any]

# 40001 token replaced/invalid, 40014 malformed token, 42001 token expired.
TOKEN_ERRORS = frozenset({40001, 40014, 42001})
DECRYPT_FAILED = -41003
RISKY_CONTENT = 87014  # wxa/img_sec_check: the image is risky
_REFRESH_MARGIN = 300  # seconds: stop using a token five minutes before WeChat expires it
_POLL = 0.05
_COMPARE_AND_DELETE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


@dataclass(frozen=True)
class WeChatSession:
    openid: str
    session_key: str
    unionid: str | None


class WeChatError(Exception):
    """An error answered by WeChat (its errcode), or -1 for network errors and timeouts."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"WeChat error {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


class _CallTokenStorage(SessionStorage):  # type: ignore[misc]
    """wechatpy session storage holding only the token primed for the call in this thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _data(self) -> dict[str, Any]:
        data: dict[str, Any] | None = getattr(self._local, "data", None)
        if data is None:
            data = self._local.data = {}
        return data

    def get(self, key: str, default: Any = None) -> Any:
        return self._data().get(key, default)

    def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        if value is not None:
            self._data()[key] = value

    def delete(self, key: str) -> None:
        self._data().pop(key, None)


class _Client(WeChatClient):  # type: ignore[misc]
    """wechatpy client with a configurable base URL and the stable (shared) access_token."""

    def __init__(self, *, appid: str, secret: str, api_base: str, timeout: float) -> None:
        super().__init__(
            appid, secret, session=_CallTokenStorage(), timeout=timeout, auto_retry=False
        )
        self.api_root = api_base
        self.API_BASE_URL = f"{api_base}cgi-bin/"
        self.wxa.API_BASE_URL = api_base

    @property
    def access_token(self) -> str | None:
        # Only the token primed for this call, never wechatpy's own fetch via cgi-bin/token.
        token: str | None = self.session.get(self.access_token_key)
        return token

    def fetch_access_token(self) -> Json:
        # Normal mode keeps the current token valid for everyone else (no force_refresh).
        payload = {
            "grant_type": "client_credential",
            "appid": self.appid,
            "secret": self.secret,
            "force_refresh": False,
        }
        res = self._http.post(
            f"{self.api_root}cgi-bin/stable_token", json=payload, timeout=self.timeout
        )
        result = self._decode_result(res)
        if not isinstance(result, dict):
            raise WeChatClientException(None, f"HTTP {res.status_code}", client=self, response=res)
        if result.get("errcode"):
            raise WeChatClientException(
                int(result["errcode"]), result.get("errmsg", ""), client=self, response=res
            )
        return result

    def call(self, token: str | None, fn: Callable[[_Client], T]) -> T:
        """Run ``fn`` in this thread with ``token`` as the access_token, mapping errors."""
        self.session.set(self.access_token_key, token)
        try:
            return fn(self)
        except WeChatClientException as exc:
            code = exc.errcode if isinstance(exc.errcode, int) else -1
            raise WeChatError(code, str(exc.errmsg or exc)) from exc
        except requests.RequestException as exc:
            raise WeChatError(-1, f"network error: {exc}") from exc
        finally:
            self.session.delete(self.access_token_key)


class WeChatGateway:
    def __init__(
        self,
        *,
        appid: str,
        secret: str,
        api_base: str,
        timeout: float,
        redis: Redis,
        key_prefix: str,
    ) -> None:
        base = api_base if api_base.endswith("/") else f"{api_base}/"
        self._client = _Client(appid=appid, secret=secret, api_base=base, timeout=timeout)
        self._timeout = timeout
        self._redis = redis
        self._token_key = f"{key_prefix}wechat:access_token"
        self._lock_key = f"{self._token_key}:lock"
        self._lock_ttl_ms = int(max(2 * timeout, 5.0) * 1000)
        self._compare_and_delete = redis.register_script(_COMPARE_AND_DELETE)

    async def code_to_session(self, code: str) -> WeChatSession:
        # jscode2session needs no access_token (nor the IP whitelist the token needs): with none
        # primed, wechatpy's added ``access_token`` param is None and requests leaves it out.
        result = await self._run(None, lambda c: c.wxa.code_to_session(code))
        try:
            return WeChatSession(
                openid=str(result["openid"]),
                session_key=str(result["session_key"]),
                unionid=result.get("unionid"),
            )
        except (KeyError, TypeError) as exc:
            raise WeChatError(-1, f"unexpected jscode2session answer: {result!r}") from exc

    async def access_token(self, *, force_refresh: bool = False) -> str:
        if force_refresh:
            await self._redis.delete(self._token_key)
        return await self._shared_token()

    async def msg_sec_check(self, *, openid: str, content: str, scene: int = 1) -> str:
        body = {"content": content, "version": 2, "scene": scene, "openid": openid}
        result = await self._with_token(lambda c: self._post(c, "wxa/msg_sec_check", body))
        suggest = (result.get("result") or {}).get("suggest")
        if suggest not in ("pass", "review", "risky"):
            raise WeChatError(-1, f"unexpected msgSecCheck answer: {result!r}")
        return str(suggest)

    async def img_sec_check(self, image: bytes, *, content_type: str = "image/jpeg") -> str:
        """The synchronous image check: "pass", or "risky" (WeChat's errcode 87014)."""
        files = {"media": ("evidence.jpg", image, content_type)}
        try:
            await self._with_token(lambda c: self._post_form(c, "wxa/img_sec_check", files))
        except WeChatError as exc:
            if exc.errcode == RISKY_CONTENT:
                return "risky"
            raise
        return "pass"

    async def phone_number(self, phone_code: str) -> str:
        body = {"code": phone_code}
        result = await self._with_token(
            lambda c: self._post(c, "wxa/business/getuserphonenumber", body)
        )
        info = result.get("phone_info") or {}
        pure, country = info.get("purePhoneNumber"), str(info.get("countryCode", "86"))
        if not pure:
            raise WeChatError(-1, f"unexpected getuserphonenumber answer: {result!r}")
        return str(pure) if country == "86" else f"+{country}{pure}"

    async def send_subscribe_message(
        self,
        *,
        openid: str,
        template_id: str,
        data: dict[str, Any],
        page: str | None = None,
        miniprogram_state: str | None = None,
        lang: str | None = None,
    ) -> str:
        """``cgi-bin/message/subscribe/send``; returns WeChat's msgid. wechatpy's own helper
        leaves out ``miniprogram_state`` and ``lang``, so the body is posted as WeChat documents it."""
        body: Json = {"touser": openid, "template_id": template_id, "data": data}
        optional = {"page": page, "miniprogram_state": miniprogram_state, "lang": lang}
        body.update({k: v for k, v in optional.items() if v})
        result = await self._with_token(
            lambda c: self._post(c, "cgi-bin/message/subscribe/send", body)
        )
        return str(result.get("msgid", ""))

    @staticmethod
    def _post_form(client: _Client, endpoint: str, files: dict[str, Any]) -> Json:
        result = client.post(endpoint, files=files, api_base_url=client.api_root)
        if not isinstance(result, dict):
            raise WeChatClientException(None, "answer is not JSON", client=client)
        return result

    @staticmethod
    def _post(client: _Client, endpoint: str, body: Json) -> Json:
        result = client.post(endpoint, data=body, api_base_url=client.api_root)
        if not isinstance(result, dict):
            raise WeChatClientException(None, "answer is not JSON", client=client)
        return result

    async def _with_token(self, fn: Callable[[_Client], Json]) -> Json:
        # A 40001/42001 means the token was replaced or expired: refresh once, retry once.
        token = await self._shared_token()
        try:
            return await self._run(token, fn)
        except WeChatError as exc:
            if exc.errcode not in TOKEN_ERRORS:
                raise
        await self._invalidate(token)
        return await self._run(await self._shared_token(), fn)

    async def _run(self, token: str | None, fn: Callable[[_Client], T]) -> T:
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._client.call, token, fn), timeout=self._timeout + 1
            )
        except TimeoutError as exc:
            raise WeChatError(-1, "WeChat API timed out") from exc

    async def _shared_token(self) -> str:
        deadline = time.monotonic() + self._lock_ttl_ms / 1000 + self._timeout + 1
        owner = secrets.token_hex(8)
        while time.monotonic() < deadline:
            token = await self._cached_token()
            if token:
                return token
            if await self._redis.set(self._lock_key, owner, nx=True, px=self._lock_ttl_ms):
                try:
                    # Another process may have refreshed between our read and our lock.
                    return await self._cached_token() or await self._fetch_token()
                finally:
                    await self._compare_and_delete(keys=[self._lock_key], args=[owner])
            await asyncio.sleep(_POLL)
        raise WeChatError(-1, "timed out waiting for the access_token refresh")

    async def _cached_token(self) -> str | None:
        value = await self._redis.get(self._token_key)
        if isinstance(value, bytes):
            return value.decode()
        return value if isinstance(value, str) and value else None

    async def _fetch_token(self) -> str:
        result = await self._run(None, lambda c: c.fetch_access_token())
        token = str(result["access_token"])
        expires_in = int(result.get("expires_in", 7200))
        ttl = expires_in - _REFRESH_MARGIN if expires_in > 2 * _REFRESH_MARGIN else expires_in // 2
        await self._redis.set(self._token_key, token, ex=max(ttl, 1))
        return token

    async def _invalidate(self, token: str | None) -> None:
        # Compare-and-delete: never drop a token another process already refreshed.
        if token:
            await self._compare_and_delete(keys=[self._token_key], args=[token])


def _b64(value: str, *, size: int | None = None) -> bytes:
    raw = base64.b64decode(value, validate=True)
    if size is not None and len(raw) != size:
        raise ValueError(f"expected {size} bytes, got {len(raw)}")
    return raw


def _cipher(session_key: str, iv: str) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(_b64(session_key, size=16)), modes.CBC(_b64(iv, size=16)))


def decrypt_data(*, session_key: str, encrypted_data: str, iv: str, appid: str) -> dict[str, Any]:
    """Decrypt wx encryptedData (AES-128-CBC, PKCS#7) and check the watermark's appid."""
    try:
        decryptor = _cipher(session_key, iv).decryptor()
        padded = decryptor.update(_b64(encrypted_data)) + decryptor.finalize()
        unpadder = padding.PKCS7(algorithms.AES.block_size).unpadder()
        payload = json.loads((unpadder.update(padded) + unpadder.finalize()).decode("utf-8"))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise WeChatError(DECRYPT_FAILED, f"cannot decrypt encryptedData: {exc}") from exc
    if not isinstance(payload, dict):
        raise WeChatError(DECRYPT_FAILED, "encryptedData is not a JSON object")
    watermark = payload.get("watermark")
    if not isinstance(watermark, dict) or watermark.get("appid") != appid:
        raise WeChatError(DECRYPT_FAILED, "encryptedData watermark appid mismatch")
    return dict(payload)


def encrypt_data(*, session_key: str, iv: str, payload: dict[str, Any]) -> str:
    """Inverse of :func:`decrypt_data` (compact JSON), for the fake and tests."""
    plain = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    padder = padding.PKCS7(algorithms.AES.block_size).padder()
    encryptor = _cipher(session_key, iv).encryptor()
    padded = padder.update(plain) + padder.finalize()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()
