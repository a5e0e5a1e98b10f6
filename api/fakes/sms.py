"""A local Dysmsapi (Aliyun SMS) that checks requests the way Aliyun does (stdlib only).

Every request is authenticated like the real POP gateway: RPC signature v1.0 (HMAC-SHA1) over the
query string and the form body, a 15-minute timestamp window and single-use nonces. ``SendSms``
then applies Dysmsapi's own rules and answers with its JSON shapes: business errors are HTTP 200
with ``Code`` other than ``"OK"``, gateway errors carry a 4xx/5xx status. A wrong signature gets
``SignatureDoesNotMatch`` with the server's string to sign, which the Aliyun SDK parses.

Run it alone: ``python -m api.fakes.sms --port 9901 --key ID:SECRET [--record FILE]``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import select
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit
from xml.sax.saxutils import escape

log = logging.getLogger("pingyi.fakes.sms")

ACTION = "SendSms"
VERSION = "2017-05-25"
TIMESTAMP_WINDOW = 15 * 60
PARAM_LIMIT = 35
# How long a dropped answer is held at most; the handler returns as soon as the client gives up.
DROP_HOLD_SECONDS = 60.0

_PHONE = re.compile(r"(?:\+?86|0086)?1[3-9][0-9]{9}", re.ASCII)
_COMMON = ("Action", "Version", "AccessKeyId", "Signature", "SignatureNonce", "Timestamp")
_BUSINESS = ("PhoneNumbers", "SignName", "TemplateCode")
_SPECIAL_STATUS = {
    "ServiceUnavailable": 503,
    "InternalError": 500,
    "InvalidAccessKeyId.NotFound": 404,
}

Json = dict[str, Any]


def percent_encode(value: str) -> str:
    """RFC 3986: unreserved characters stay, everything else is %XX (UTF-8, upper case)."""
    return quote(value, safe="")


def string_to_sign(params: Mapping[str, str], *, method: str) -> str:
    pairs = sorted((k, v) for k, v in params.items() if k != "Signature")
    canonical = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in pairs)
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical)}"


def sign_rpc(params: dict[str, str], *, secret: str, method: str) -> str:
    """Aliyun RPC signature v1.0: base64(HMAC-SHA1(secret + "&", string to sign))."""
    source = string_to_sign(params, method=method).encode("utf-8")
    digest = hmac.new(f"{secret}&".encode(), source, hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _status_for(code: str) -> int:
    if code.startswith(("isv.", "isp.")):
        return 200  # Dysmsapi business errors
    return _SPECIAL_STATUS.get(code, 400)  # Throttling* and other gateway errors: 400


class AliyunError(Exception):
    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.message = message
        self.status = _status_for(code) if status is None else status


def _missing(name: str) -> AliyunError:
    return AliyunError(f"Missing{name}", f"{name} is mandatory for this action.")


class FakeSmsServer:
    def __init__(
        self,
        *,
        access_keys: dict[str, str],
        host: str = "127.0.0.1",
        port: int = 0,
        templates: set[str] | None = None,
        sign_names: set[str] | None = None,
    ) -> None:
        self.access_keys = dict(access_keys)
        self.templates = templates
        self.sign_names = sign_names
        self.host = host
        self.port = port
        self.received: list[Json] = []
        self.attempts = 0
        self.record_path: Path | None = None  # accepted messages appended as JSON lines
        self._lock = threading.Lock()
        self._nonces: dict[str, float] = {}
        self._failures: deque[str] = deque()
        self._drops = 0
        self.stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> FakeSmsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> FakeSmsServer:
        self.stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-dysmsapi", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # releases handlers holding a dropped answer
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def fail_next(self, code: str, times: int = 1) -> None:
        with self._lock:
            self._failures.extend([code] * times)

    def drop_response_next(self, times: int = 1) -> None:
        with self._lock:
            self._drops += times

    def reset(self) -> None:
        with self._lock:
            self.received.clear()
            self.attempts = 0
            self._nonces.clear()
            self._failures.clear()
            self._drops = 0

    # -- request handling (called from handler threads) --------------------------------------

    def handle(self, method: str, params: dict[str, str]) -> tuple[int, Json] | None:
        """The answer to one request, or None when the answer is to be lost."""
        request_id = str(uuid.uuid4()).upper()
        try:
            self._authenticate(method, params)
            with self._lock:
                self.attempts += 1
                injected = self._failures.popleft() if self._failures else None
            if injected is not None:
                raise AliyunError(injected, f"injected failure {injected}")
            messages = self._validate(params)
        except AliyunError as exc:
            body: Json = {"RequestId": request_id, "Code": exc.code, "Message": exc.message}
            if exc.status != 200:
                body["HostId"] = "dysmsapi.aliyuncs.com"
            return exc.status, body
        biz_id = f"{secrets.randbelow(9 * 10**17) + 10**17}^0"
        if self._accept(messages, biz_id):
            return None
        return 200, {"RequestId": request_id, "Code": "OK", "Message": "OK", "BizId": biz_id}

    def _authenticate(self, method: str, params: dict[str, str]) -> None:
        for name in _COMMON:
            if not params.get(name):
                raise _missing(name)
        if params["Action"] != ACTION:
            raise AliyunError(
                "InvalidAction.NotFound",
                "Specified api is not found, please check your url and method.",
                404,
            )
        if params["Version"] != VERSION:
            raise AliyunError("InvalidVersion", "Specified parameter Version is not valid.")
        if params.get("SignatureMethod") != "HMAC-SHA1" or params.get("SignatureVersion") != "1.0":
            raise AliyunError(
                "IncompleteSignature", "The request signature does not conform to Aliyun standards."
            )
        self._check_timestamp(params["Timestamp"])
        secret = self.access_keys.get(params["AccessKeyId"])
        if secret is None:
            raise AliyunError("InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        expected = sign_rpc(params, secret=secret, method=method)
        if not hmac.compare_digest(expected, params["Signature"]):
            raise AliyunError(
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. server string to sign is:"
                + string_to_sign(params, method=method),
            )
        self._use_nonce(params["SignatureNonce"])

    @staticmethod
    def _check_timestamp(value: str) -> None:
        try:
            signed_at = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise AliyunError(
                "InvalidTimeStamp.Format",
                "Specified time stamp or date value is not well formatted.",
            ) from None
        if abs(time.time() - signed_at.timestamp()) > TIMESTAMP_WINDOW:
            raise AliyunError(
                "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired."
            )

    def _use_nonce(self, nonce: str) -> None:
        now = time.monotonic()
        with self._lock:
            for old in [n for n, at in self._nonces.items() if now - at > TIMESTAMP_WINDOW]:
                del self._nonces[old]
            if nonce in self._nonces:
                raise AliyunError(
                    "SignatureNonceUsed", "Specified signature nonce was used already."
                )
            self._nonces[nonce] = now

    def _validate(self, params: dict[str, str]) -> list[Json]:
        for name in _BUSINESS:
            if not params.get(name):
                raise _missing(name)
        phones = [p.strip() for p in params["PhoneNumbers"].split(",")]
        if not all(_PHONE.fullmatch(p) for p in phones):
            raise AliyunError("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        if self.sign_names is not None and params["SignName"] not in self.sign_names:
            raise AliyunError("isv.SMS_SIGNATURE_ILLEGAL", "签名不合法(不存在或被拉黑)")
        if self.templates is not None and params["TemplateCode"] not in self.templates:
            raise AliyunError("isv.SMS_TEMPLATE_ILLEGAL", "模板不合法(不存在或被拉黑)")
        template_params = _template_params(params.get("TemplateParam"))
        return [
            {
                "phone": phone,
                "sign_name": params["SignName"],
                "template_code": params["TemplateCode"],
                "params": template_params,
                "out_id": params.get("OutId"),
            }
            for phone in phones
        ]

    def _accept(self, messages: list[Json], biz_id: str) -> bool:
        """Record the messages; True when the answer is to be dropped."""
        at = datetime.now(UTC).isoformat()
        records = [{**m, "biz_id": biz_id, "at": at} for m in messages]
        with self._lock:
            self.received.extend(records)
            if self.record_path is not None:
                with self.record_path.open("a", encoding="utf-8") as fh:
                    for record in records:
                        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            drop = self._drops > 0
            self._drops -= int(drop)
        return drop


def _template_params(raw: str | None) -> dict[str, str]:
    if raw is None:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise AliyunError("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值") from None
    if not isinstance(parsed, dict):
        raise AliyunError("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
    if not all(isinstance(v, str) for v in parsed.values()):
        raise AliyunError("isv.TEMPLATE_PARAMS_ILLEGAL", "模板变量不合法，变量值只能是字符串")
    if any(len(v) > PARAM_LIMIT for v in parsed.values()):
        raise AliyunError("isv.PARAM_LENGTH_LIMIT", "参数超出长度限制")
    return parsed


def _to_xml(root: str, payload: Json) -> bytes:
    fields = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in payload.items())
    return f'<?xml version="1.0" encoding="UTF-8"?><{root}>{fields}</{root}>'.encode()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def _serve(self) -> None:
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if "application/x-www-form-urlencoded" in self.headers.get("Content-Type", ""):
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        answer = self.server.fake.handle(self.command, params)
        if answer is None:
            self._hold()
        else:
            self._reply(*answer, xml=params.get("Format", "JSON").upper() == "XML")

    def _hold(self) -> None:
        """Keep the answer back until the client gives up (its read timeout) or we stop."""
        self.close_connection = True
        stopping = self.server.fake.stopping
        deadline = time.monotonic() + DROP_HOLD_SECONDS
        while time.monotonic() < deadline and not stopping.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if not readable:
                continue
            try:
                if not self.connection.recv(1, socket.MSG_PEEK):
                    return  # the client closed the connection
            except OSError:
                return
            time.sleep(0.05)

    def _reply(self, status: int, payload: Json, *, xml: bool) -> None:
        if xml:
            data = _to_xml("SendSmsResponse" if status == 200 else "Error", payload)
            content_type = "text/xml;charset=utf-8"
        else:
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            content_type = "application/json;charset=utf-8"
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client is gone


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeSmsServer) -> None:
        self.fake = fake
        super().__init__(address, _Handler)


def _access_key(value: str) -> tuple[str, str]:
    key_id, sep, secret = value.partition(":")
    if not sep or not key_id or not secret:
        raise argparse.ArgumentTypeError("expected ID:SECRET")
    return key_id, secret


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the local fake Aliyun Dysmsapi server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--key",
        type=_access_key,
        action="append",
        required=True,
        metavar="ID:SECRET",
        help="an accepted AccessKey (repeatable)",
    )
    parser.add_argument("--template", action="append", help="known TemplateCode (repeatable)")
    parser.add_argument("--sign", action="append", help="known SignName (repeatable)")
    parser.add_argument("--record", type=Path, help="append accepted messages as JSON lines")
    args = parser.parse_args(argv)
    fake = FakeSmsServer(
        access_keys=dict(args.key),
        host=args.host,
        port=args.port,
        templates=set(args.template) if args.template else None,
        sign_names=set(args.sign) if args.sign else None,
    )
    fake.record_path = args.record
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    fake.start()
    print(f"fake Dysmsapi listening on http://{fake.endpoint}/", flush=True)
    while not stop.wait(0.5):
        pass
    fake.stop()


if __name__ == "__main__":
    main()
