"""A local WeChat API server speaking the real wire protocol (stdlib only).

It answers the endpoints Pingyi uses with WeChat's own JSON shapes and error codes, so the real
wechatpy client is exercised end to end: one-time login codes (40029 / 40163), an access-token
chain where ``cgi-bin/token`` invalidates the previous token (40001 afterwards) while
``cgi-bin/stable_token`` in normal mode hands out the current one (a new one once it expired;
an expired token answers 42001, as WeChat does, and ``expire_token`` ends it early), msgSecCheck
v2 verdicts, phone numbers (single-use codes; ``encrypted_phone`` mints the older encryptedData form with the
user's current session_key), the synchronous image check ``wxa/img_sec_check`` (87014 for risky
images) and subscribe messages (value limits checked, 47003; 43101 for users who refused; every
message received is recorded). ``fail_next`` injects an errcode, ``delay_next`` a slow answer
(a timeout for the client).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_DEV_CODE = re.compile(r"dev-([A-Za-z0-9_]{1,32})-[^\s]+")
_PHONE_CODE = re.compile(r"phone-(\d{11})")
_TOKEN_TTL = 7200
# Labels from the msgSecCheck v2 documentation: 100 normal, 20006 illegal, 21000 other.
_VERDICTS = (("违禁词", "risky", 20006), ("待审", "review", 21000))

_FAULT_MESSAGES = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    42001: "access_token expired",
    45011: "api minute-quota reach limit  mustslower  retry next minute",
    61010: "user access record expired",
    87014: "risky content",
}
# wxa/img_sec_check takes images up to 1 MB (its documentation: 750 x 1334 px recommended).
_IMG_MAX_BYTES = 1024 * 1024

Json = dict[str, Any]
Query = dict[str, str]


def _rid() -> str:
    return f"{secrets.token_hex(4)}-{secrets.token_hex(4)}-{secrets.token_hex(4)}"


def _error(errcode: int, errmsg: str) -> Json:
    return {"errcode": errcode, "errmsg": f"{errmsg} rid: {_rid()}"}


def _digest_id(*parts: str) -> str:
    # Real openids/unionids are 28 characters of [A-Za-z0-9_-] starting with "o".
    raw = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return "o" + base64.urlsafe_b64encode(raw).decode()[:27]


class _State:
    """Everything the fake remembers, guarded by one lock (handlers run in threads)."""

    def __init__(self, *, appid: str, secret: str) -> None:
        self.appid = appid
        self.secret = secret
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.used_codes: set[str] = set()
        self.faults: dict[str, list[int]] = {}
        self.delays: dict[str, list[float]] = {}  # path -> [seconds, times]
        self.session_keys: dict[str, str] = {}  # openid -> its current session_key
        self.next_session_keys: dict[str, str] = {}  # user -> the key their next login gets
        self.used_phone_codes: set[str] = set()
        # The current token -> its expiry (monotonic): kept after it expired (42001), dropped
        # when a newer one replaces it (40001).
        self.tokens: dict[str, float] = {}
        self.current: str | None = None
        # Every subscribe message request that passed the token check, with the errcode answered.
        self.subscribe_messages: list[Json] = []
        self.refused_openids: set[str] = set()

    def clear(self) -> None:
        with self.lock:
            self.calls.clear()
            self.used_codes.clear()
            self.faults.clear()
            self.delays.clear()
            self.session_keys.clear()
            self.next_session_keys.clear()
            self.used_phone_codes.clear()
            self.tokens.clear()
            self.current = None
            self.subscribe_messages.clear()
            self.refused_openids.clear()

    def take_fault(self, path: str) -> int | None:
        with self.lock:
            fault = self.faults.get(path)
            if not fault:
                return None
            fault[1] -= 1
            if fault[1] <= 0:
                del self.faults[path]
            return fault[0]

    def take_delay(self, path: str) -> float:
        with self.lock:
            delay = self.delays.get(path)
            if not delay:
                return 0.0
            delay[1] -= 1
            if delay[1] <= 0:
                del self.delays[path]
            return delay[0]

    def issue_token(self) -> tuple[str, int]:
        # A new token replaces the previous one at once (the worst case of the real platform).
        token = secrets.token_urlsafe(96)[:128]
        self.tokens = {token: time.monotonic() + _TOKEN_TTL}
        self.current = token
        return token, _TOKEN_TTL

    def current_token(self) -> tuple[str, int]:
        now = time.monotonic()
        if self.current and self.tokens.get(self.current, 0.0) > now:
            return self.current, int(self.tokens[self.current] - now)
        return self.issue_token()

    def token_error(self, token: str | None) -> Json | None:
        if not token:
            return _error(41001, "access_token missing")
        with self.lock:
            expires_at = self.tokens.get(token)
        if expires_at is None:
            return _error(40001, "invalid credential, access_token is invalid or not latest")
        if expires_at <= time.monotonic():
            return _error(42001, "access_token expired")
        return None

    def credential_error(self, appid: str | None, secret: str | None) -> Json | None:
        if appid != self.appid:
            return _error(40013, "invalid appid")
        if secret != self.secret:
            return _error(40125, "invalid appsecret")
        return None


def _jscode2session(state: _State, query: Query, _body: Json) -> Json:
    problem = state.credential_error(query.get("appid"), query.get("secret"))
    if problem:
        return problem
    if query.get("grant_type") != "authorization_code":
        return _error(40002, "invalid grant_type")
    code = query.get("js_code", "")
    match = _DEV_CODE.fullmatch(code)
    if not match:
        return _error(40029, "invalid code,")
    with state.lock:
        if code in state.used_codes:
            return _error(40163, "code been used,")
        state.used_codes.add(code)
    user = match.group(1)
    key = hashlib.sha256(f"{state.secret}\x1f{user}\x1f{code}".encode()).digest()[:16]
    openid, session_key = _digest_id(state.appid, user), base64.b64encode(key).decode()
    with state.lock:
        session_key = state.next_session_keys.pop(user, session_key)
        # A new login rotates the user's session_key: older encryptedData no longer decrypts.
        state.session_keys[openid] = session_key
    return {"openid": openid, "session_key": session_key, "unionid": _digest_id("unionid", user)}


def _legacy_token(state: _State, query: Query, _body: Json) -> Json:
    problem = state.credential_error(query.get("appid"), query.get("secret"))
    if problem:
        return problem
    if query.get("grant_type") != "client_credential":
        return _error(40002, "invalid grant_type")
    with state.lock:
        token, expires_in = state.issue_token()
    return {"access_token": token, "expires_in": expires_in}


def _stable_token(state: _State, _query: Query, body: Json) -> Json:
    problem = state.credential_error(body.get("appid"), body.get("secret"))
    if problem:
        return problem
    if body.get("grant_type") != "client_credential":
        return _error(40002, "invalid grant_type")
    with state.lock:
        if body.get("force_refresh") is True:
            token, expires_in = state.issue_token()
        else:
            token, expires_in = state.current_token()
    return {"access_token": token, "expires_in": expires_in}


def _msg_sec_check(state: _State, query: Query, body: Json) -> Json:
    problem = state.token_error(query.get("access_token"))
    if problem:
        return problem
    content = body.get("content")
    if body.get("version") != 2 or not isinstance(content, str) or not body.get("openid"):
        return _error(47001, "data format error")
    if body.get("scene") not in (1, 2, 3, 4):
        return _error(40003, "invalid scene")
    suggest, label, keyword = "pass", 100, ""
    for word, verdict, code in _VERDICTS:
        if word in content:
            suggest, label, keyword = verdict, code, word
            break
    detail: list[Json] = [
        {"strategy": "content_model", "errcode": 0, "suggest": suggest, "label": label, "prob": 90}
    ]
    if keyword:
        detail.append(
            {
                "strategy": "keyword",
                "errcode": 0,
                "suggest": suggest,
                "label": label,
                "level": 20,
                "keyword": keyword,
            }
        )
    return {
        "errcode": 0,
        "errmsg": "ok",
        "result": {"suggest": suggest, "label": label},
        "detail": detail,
        "trace_id": _rid(),
    }


def _phone_number(state: _State, query: Query, body: Json) -> Json:
    problem = state.token_error(query.get("access_token"))
    if problem:
        return problem
    code = str(body.get("code", ""))
    match = _PHONE_CODE.fullmatch(code)
    if not match:
        return _error(40029, "invalid code")
    with state.lock:  # a phone code is good for one call (and five minutes)
        if code in state.used_phone_codes:
            return _error(40029, "invalid code")
        state.used_phone_codes.add(code)
    phone = match.group(1)
    return {
        "errcode": 0,
        "errmsg": "ok",
        "phone_info": {
            "phoneNumber": phone,
            "purePhoneNumber": phone,
            "countryCode": "86",
            "watermark": {"timestamp": int(time.time()), "appid": state.appid},
        },
    }


# subscribeMessage.send value rules: a field's keyword names its type (thing1, phrase2 …).
_SUBSCRIBE_FIELD = re.compile(r"([a-z_]+?)(\d{1,2})")
_SUBSCRIBE_LIMITS = {
    "thing": 20,
    "phrase": 5,
    "character_string": 32,
    "number": 32,
    "letter": 32,
    "symbol": 5,
    "name": 10,
    "phone_number": 17,
    "car_number": 8,
    "amount": 32,
}
_SUBSCRIBE_PATTERNS = {
    "character_string": re.compile(r"[0-9A-Za-z!-/:-@\[-`{-~]+"),
    "number": re.compile(r"[0-9.]+"),
    "letter": re.compile(r"[A-Za-z]+"),
    "time": re.compile(
        r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}(:\d{2})?|\d{4}年\d{1,2}月\d{1,2}日( \d{2}:\d{2})?|\d{2}:\d{2})"
    ),
    "date": re.compile(r"(\d{4}-\d{2}-\d{2}|\d{4}年\d{1,2}月\d{1,2}日)"),
}
_MINIPROGRAM_STATES = ("developer", "trial", "formal")
_LANGS = ("zh_CN", "en_US", "zh_HK", "zh_TW")
_OPENID = re.compile(r"o[A-Za-z0-9_-]{4,63}")


def _bad_subscribe_value(key: str, item: Any) -> bool:
    match = _SUBSCRIBE_FIELD.fullmatch(key)
    kind = match.group(1) if match else ""
    if kind not in _SUBSCRIBE_LIMITS and kind not in _SUBSCRIBE_PATTERNS:
        return True
    value = item.get("value") if isinstance(item, dict) else None
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        return True
    if len(value) > _SUBSCRIBE_LIMITS.get(kind, 64):
        return True
    pattern = _SUBSCRIBE_PATTERNS.get(kind)
    return pattern is not None and pattern.fullmatch(value) is None


def _subscribe_problem(state: _State, body: Json) -> Json | None:
    touser = body.get("touser")
    if not isinstance(touser, str) or not _OPENID.fullmatch(touser):
        return _error(40003, "invalid openid")
    if not isinstance(body.get("template_id"), str) or not body["template_id"]:
        return _error(40037, "invalid template_id")
    if body.get("miniprogram_state", "formal") not in _MINIPROGRAM_STATES:
        return _error(47001, "data format error: miniprogram_state")
    if body.get("lang", "zh_CN") not in _LANGS:
        return _error(47001, "data format error: lang")
    page = body.get("page", "")
    if not isinstance(page, str) or len(page) > 1024:
        return _error(41030, "invalid page")
    data = body.get("data")
    if not isinstance(data, dict) or not data:
        return _error(47003, "argument invalid! data is empty")
    for key, item in data.items():
        if _bad_subscribe_value(key, item):
            return _error(47003, f"argument invalid! data.{key}.value invalid")
    with state.lock:
        refused = touser in state.refused_openids
    if refused or touser.startswith("ounsub"):
        return _error(43101, "user refuse to accept the msg")
    return None


def _img_sec_check(state: _State, query: Query, body: Json) -> Json:
    problem = state.token_error(query.get("access_token"))
    if problem:
        return problem
    media = body.get("media")
    if not isinstance(media, bytes) or not media:
        return _error(41005, "media data missing")
    if len(media) > _IMG_MAX_BYTES:
        return _error(40006, "invalid meida size")
    verdict = _image_verdict(media)
    if verdict is None:
        return _error(40113, "unsupported file type")
    if verdict == "risky":
        return _error(87014, "risky content")
    return {"errcode": 0, "errmsg": "ok"}


def _image_verdict(media: bytes) -> str | None:
    """The fake's "model": a picture that is mostly pure red is risky. None: not an image."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(media)) as img:
            pixel = img.convert("RGB").resize((8, 8)).getpixel((4, 4))
    except Exception:
        return None
    if not isinstance(pixel, tuple):
        return None
    red, green, blue = pixel[:3]
    return "risky" if red > 200 and green < 60 and blue < 60 else "pass"


def _subscribe_send(state: _State, query: Query, body: Json) -> Json:
    problem = state.token_error(query.get("access_token"))
    if problem:
        return problem
    answer = _subscribe_problem(state, body) or {
        "errcode": 0,
        "errmsg": "ok",
        "msgid": secrets.randbelow(10**18),
    }
    with state.lock:
        state.subscribe_messages.append({**body, "errcode": answer["errcode"]})
    return answer


Route = Callable[[_State, Query, Json], Json]
_ROUTES: dict[str, tuple[str, Route]] = {
    "/sns/jscode2session": ("GET", _jscode2session),
    "/cgi-bin/token": ("GET", _legacy_token),
    "/cgi-bin/stable_token": ("POST", _stable_token),
    "/wxa/msg_sec_check": ("POST", _msg_sec_check),
    "/wxa/business/getuserphonenumber": ("POST", _phone_number),
    "/wxa/img_sec_check": ("POST", _img_sec_check),
    "/cgi-bin/message/subscribe/send": ("POST", _subscribe_send),
}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        body = self._read_body()
        state = self.server.state
        with state.lock:
            state.calls[url.path] += 1
        route = _ROUTES.get(url.path)
        if route is None:
            self._reply(404, {"errcode": -1, "errmsg": "not found"})
            return
        expected, handler = route
        # Both are the next call's: taken as it arrives, so a call still sleeping on its delay
        # cannot take a fault meant for a later one.
        delay = state.take_delay(url.path)
        fault = state.take_fault(url.path)
        if delay:
            time.sleep(delay)
        if fault is not None:
            self._reply(200, _error(fault, _FAULT_MESSAGES.get(fault, "injected fault")))
        elif method != expected:
            self._reply(200, _error(43002, f"require {expected} method"))
        elif body is None:
            self._reply(200, _error(47001, "data format error"))
        else:
            self._reply(200, handler(state, query, body))

    def _read_body(self) -> Json | None:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        raw = self.rfile.read(length)
        content_type = self.headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/form-data"):
            return _multipart(content_type, raw)
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    def _reply(self, status: int, payload: Json) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _multipart(content_type: str, raw: bytes) -> Json | None:
    """The form's parts by field name: bytes for files, text for plain fields."""
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    if not message.is_multipart():
        return None
    fields: Json = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        fields[name] = data if part.get_filename() is not None else data.decode("utf-8", "replace")
    return fields


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: _State) -> None:
        self.state = state
        super().__init__(address, _Handler)


class FakeWeChatServer:
    def __init__(self, *, appid: str, secret: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self._state = _State(appid=appid, secret=secret)
        self._host = host
        self._requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        self.base_url = f"http://{host}:{port}/"

    @property
    def calls(self) -> Counter[str]:
        return self._state.calls

    def start(self) -> FakeWeChatServer:
        self._server = _Server((self._host, self._requested_port), self._state)
        self.port = int(self._server.server_address[1])
        self.base_url = f"http://{self._host}:{self.port}/"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-wechat", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def serve_forever(self) -> None:
        """Run in the calling thread (the CLI); returns on KeyboardInterrupt."""
        self._server = _Server((self._host, self._requested_port), self._state)
        self.port = int(self._server.server_address[1])
        self.base_url = f"http://{self._host}:{self.port}/"
        print(f"fake WeChat API listening on {self.base_url}", flush=True)
        try:
            self._server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self._server.server_close()
            self._server = None

    def fail_next(self, path: str, errcode: int, times: int = 1) -> None:
        with self._state.lock:
            self._state.faults[path] = [errcode, times]

    def delay_next(self, path: str, seconds: float, times: int = 1) -> None:
        """The next ``times`` calls of ``path`` answer after ``seconds`` (a client timeout)."""
        with self._state.lock:
            self._state.delays[path] = [seconds, times]

    def expire_token(self) -> str | None:
        """The current access_token expires now: calls with it answer 42001, and the next
        stable_token (normal mode) hands out a new one. Returns the expired token."""
        with self._state.lock:
            token = self._state.current
            if token is not None:
                self._state.tokens[token] = time.monotonic()
            return token

    def issue_session_key(self, user: str, session_key: str) -> None:
        """The next login of ``user`` gets this session_key (e.g. the official test vector's)."""
        with self._state.lock:
            self._state.next_session_keys[user] = session_key

    def encrypted_phone(self, user: str, phone: str) -> tuple[str, str]:
        """What the mini-program's old getPhoneNumber hands over: (encryptedData, iv).

        Encrypted, as WeChat does, with the user's current session_key (from their latest login).
        """
        from api.integrations.wechat import encrypt_data

        openid = self.openid_for(user)
        with self._state.lock:
            session_key = self._state.session_keys.get(openid)
        if session_key is None:
            raise LookupError(f"{user} has not logged in")
        iv = base64.b64encode(secrets.token_bytes(16)).decode()
        payload = {
            "phoneNumber": phone,
            "purePhoneNumber": phone,
            "countryCode": "86",
            "watermark": {"timestamp": int(time.time()), "appid": self._state.appid},
        }
        return encrypt_data(session_key=session_key, iv=iv, payload=payload), iv

    def reset(self) -> None:
        self._state.clear()

    @property
    def subscribe_messages(self) -> list[Json]:
        """The subscribe message bodies received (token accepted), each with its ``errcode``."""
        with self._state.lock:
            return [dict(m) for m in self._state.subscribe_messages]

    def refuse_subscribe(self, openid: str) -> None:
        """From now on, messages to ``openid`` answer 43101 (refused, or no consent left)."""
        with self._state.lock:
            self._state.refused_openids.add(openid)

    def openid_for(self, user: str) -> str:
        return _digest_id(self._state.appid, user)


def main(argv: list[str] | None = None) -> None:
    # Defaults follow the app's settings environment (PINGYI_WECHAT_APPID / _SECRET).
    appid, secret = os.environ.get("PINGYI_WECHAT_APPID"), os.environ.get("PINGYI_WECHAT_SECRET")
    parser = argparse.ArgumentParser(description="Run the local fake WeChat API server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--appid", default=appid, required=appid is None)
    parser.add_argument("--secret", default=secret, required=secret is None)
    args = parser.parse_args(argv)
    fake = FakeWeChatServer(appid=args.appid, secret=args.secret, host=args.host, port=args.port)
    fake.serve_forever()


if __name__ == "__main__":
    main()
