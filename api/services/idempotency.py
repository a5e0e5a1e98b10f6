"""Exactly-once POSTs: the first answer to an ``Idempotency-Key`` is stored and replayed.

A key lives in Redis for ``idempotency_ttl`` (24 h), scoped by the caller, method and path. While
the first request runs, a short lock (SET NX) holds the key: a retry then gets 409, never a second
run. The body's hash is kept beside the answer, so the same key with another body is refused.
Only 2xx and 4xx answers are stored (401 and 429 excepted): a 5xx, a rate limit or a sign-in
that was not valid may be retried.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass

from api.errors import AppError, BadRequest, Conflict
from api.services.context import Services

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_VALID_KEY = re.compile(r"[A-Za-z0-9_-]{8,64}")

# Compare-and-delete: a request whose lock expired must not release the lock of the next one.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class KeyReused(AppError):
    status = 422
    code = "idempotency_key_reused"
    message = "该幂等键已用于内容不同的请求，请为新的请求生成新的幂等键"


@dataclass(frozen=True)
class Stored:
    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class Claim:
    """The right to run a request once: its keys and the lock value proving ownership."""

    record_key: str
    lock_key: str
    lock_value: str


def check_key(raw: str) -> str:
    if not _VALID_KEY.fullmatch(raw):
        raise BadRequest(
            "幂等键（Idempotency-Key）应为 8–64 位字母、数字、下划线或连字符",
            code="idempotency_key_invalid",
        )
    return raw


def _fingerprint(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _record_key(services: Services, *, scope: str, method: str, path: str, key: str) -> str:
    digest = hashlib.sha256(f"{scope}\n{method}\n{path}\n{key}".encode()).hexdigest()
    return services.key("idem", digest)


async def begin(
    services: Services, *, scope: str, method: str, path: str, key: str, body: bytes
) -> Stored | Claim:
    """The stored answer of an earlier run, or the claim to run now (409/422 otherwise)."""
    record_key = _record_key(services, scope=scope, method=method, path=path, key=key)
    lock_key = record_key + ":lock"
    fingerprint = _fingerprint(body)
    lock_value = f"{fingerprint}:{secrets.token_hex(8)}"
    ttl = services.settings.idempotency_lock_seconds
    locked = await services.redis.set(lock_key, lock_value, nx=True, ex=ttl)
    # Read after locking: the first run stores its answer before it unlocks, so a retry that
    # gets the lock right after still finds the answer and does not run again.
    stored = await _load(services, record_key, fingerprint)
    if stored is not None:
        if locked:
            await services.redis.eval(_RELEASE, 1, lock_key, lock_value)
        return stored
    if locked:
        return Claim(record_key=record_key, lock_key=lock_key, lock_value=lock_value)
    holder = await services.redis.get(lock_key)
    if holder is not None and not str(holder).startswith(f"{fingerprint}:"):
        raise KeyReused()
    raise Conflict(
        "相同的请求正在处理中，请稍后再试",
        code="idempotency_in_progress",
        headers={"Retry-After": "1"},
    )


async def _load(services: Services, record_key: str, fingerprint: str) -> Stored | None:
    raw = await services.redis.get(record_key)
    if raw is None:
        return None
    record = json.loads(raw)
    if record["fingerprint"] != fingerprint:
        raise KeyReused()
    return Stored(
        status=int(record["status"]),
        content_type=str(record["content_type"]),
        body=base64.b64decode(record["body"]),
    )


def storable(status: int) -> bool:
    """2xx and 4xx answers, but not 429 (a retry may pass later) nor 401 (the session was not
    valid: the answer is the caller's, not the request's, and is not kept for 24 h)."""
    return 200 <= status < 500 and status not in (401, 429)


async def finish(services: Services, claim: Claim, answer: Stored | None) -> None:
    """Stores ``answer`` (None: not storable) and releases the lock, stored first."""
    if answer is not None:
        record = {
            "fingerprint": claim.lock_value.partition(":")[0],
            "status": answer.status,
            "content_type": answer.content_type,
            "body": base64.b64encode(answer.body).decode(),
        }
        await services.redis.set(
            claim.record_key, json.dumps(record), ex=services.settings.idempotency_ttl
        )
    await services.redis.eval(_RELEASE, 1, claim.lock_key, claim.lock_value)
