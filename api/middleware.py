"""Request guards before every handler: rate limits (429) and ``Idempotency-Key`` replays.

Order: the per-IP limit first (cheapest, counted in this worker's memory, protects the rest), then
the idempotency check (a replay costs no quota and runs nothing), then the per-caller limits in
Redis. A GET stops after the first step: the card scan costs no round trip here. The response
side stores the answer of a claimed key and releases its lock, also when the handler failed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sanic import Sanic
from sanic.request import Request
from sanic.response import BaseHTTPResponse, HTTPResponse
from sanic_ext.extensions.openapi.builders import OperationStore

from api.errors import Unauthorized
from api.services import auth, idempotency, ratelimit, sessions
from api.services.context import Services
from api.settings import Settings

COMPLAINTS_PATH = "/api/v1/complaints"
# The sign-ins take no token: one sent anyway is not who is asking, so they count by address
# (any made-up token would otherwise be a fresh count of its own).
SIGN_IN_PATHS = frozenset(
    {"/api/v1/auth/wechat", "/api/v1/staff/auth/login", "/api/v1/staff/auth/wechat"}
)
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
log = logging.getLogger("pingyi.requests")


def configure_proxies(app: Sanic, settings: Settings) -> None:
    """X-Forwarded-For / a real-IP header count only behind proxies the settings declare."""
    if settings.trusted_proxies > 0:
        app.config.PROXIES_COUNT = settings.trusted_proxies
        if settings.real_ip_header:
            app.config.REAL_IP_HEADER = settings.real_ip_header
    else:
        app.config.PROXIES_COUNT = 0
        app.config.REAL_IP_HEADER = None
        app.config.FORWARDED_SECRET = None


def client_ip(request: Request) -> str:
    settings: Settings = request.app.ctx.settings
    if settings.trusted_proxies > 0 and request.remote_addr:
        return request.remote_addr
    return request.ip


def _token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def caller(request: Request) -> str:
    """Who is asking: the bearer token's hash (one session), else — and always on a sign-in —
    the client IP."""
    token = _token(request) if request.path not in SIGN_IN_PATHS else None
    if token is not None:
        return "t-" + auth.token_hash(token)[:40]
    return "ip-" + client_ip(request)


async def _idempotency_scope(request: Request) -> str:
    """A citizen's keys belong to the sign-in, not to one token: a refresh between a submission
    and its retry must not make the retry look new (one indexed lookup, keyed POSTs only)."""
    token = _token(request)
    scope = await sessions.idempotency_scope(token) if token is not None else None
    return scope or caller(request)


async def _complaint_limit(request: Request, services: Services) -> None:
    """Complaints filed per citizen (not per session): only filed ones count, see ``record``."""
    limit = ratelimit.complaints_per_citizen(services)
    token = _token(request)
    if token is None or not ratelimit.enforced(services, limit):
        return  # without a token the handler answers 401
    try:
        citizen = await auth.citizen_identity(services, token)
    except Unauthorized:
        return
    counter = ratelimit.counter(services, limit=limit, subject=str(citizen.id))
    request.ctx.complaint_counter = counter
    await ratelimit.hit(services, limit=limit, counter=counter)


async def guard(request: Request) -> HTTPResponse | None:
    services: Services = request.app.ctx.services
    ratelimit.check_local(services, limit=ratelimit.per_ip(services), subject=client_ip(request))
    if request.method != "POST":
        return None
    raw_key = request.headers.get(idempotency.HEADER)
    if raw_key is not None:
        outcome = await idempotency.begin(
            services,
            scope=await _idempotency_scope(request),
            method=request.method,
            path=request.path,
            key=idempotency.check_key(raw_key),
            body=request.body or b"",
        )
        if isinstance(outcome, idempotency.Stored):
            request.ctx.replayed = True
            return HTTPResponse(
                outcome.body,
                status=outcome.status,
                content_type=outcome.content_type,
                headers={idempotency.REPLAYED_HEADER: "true"},
            )
        request.ctx.idempotency_claim = outcome
    await ratelimit.check(
        services, limit=ratelimit.posts_per_caller(services), subject=caller(request)
    )
    if request.path == COMPLAINTS_PATH:
        await _complaint_limit(request, services)
    return None


async def record(request: Request, response: BaseHTTPResponse) -> None:
    write = getattr(request.ctx, "write", None)
    if write is not None and not write.done():
        return  # the client left: the write records its own answer when it ends
    await _record(request, response)


async def _record(request: Request, response: BaseHTTPResponse | None) -> None:
    """Refunds a complaint that was not filed and stores the answer of a claimed key (None: no
    answer to store, the key is released); once per request."""
    if request.method != "POST":
        return
    services: Services = request.app.ctx.services
    status = response.status if response is not None else 500
    complaint_counter = getattr(request.ctx, "complaint_counter", None)
    if complaint_counter is not None and not 200 <= status < 300:
        request.ctx.complaint_counter = None
        await ratelimit.refund(services, complaint_counter)
    claim = getattr(request.ctx, "idempotency_claim", None)
    if claim is None:
        return
    request.ctx.idempotency_claim = None
    answer = None
    if response is not None and idempotency.storable(status):
        answer = idempotency.Stored(
            status=status,
            content_type=response.content_type or "application/json",
            body=bytes(response.body or b""),
        )
    await idempotency.finish(services, claim, answer)


def register(app: Sanic, settings: Settings) -> None:
    configure_proxies(app, settings)
    app.register_middleware(guard, "request")
    app.register_middleware(record, "response")


def finish_writes(app: Sanic) -> None:
    """Writes run to the end even when the client goes away (a weak 4G signal, a closed app).

    Sanic cancels a request's task when its connection drops. Cancelled half-way, a write would
    lose what it was about to commit, a transaction cancelled inside its BEGIN keeps its
    database connection checked out, and an answer already committed would miss its
    ``Idempotency-Key`` record, so the retry would run it again. Each write handler therefore runs
    in a task of its own that the disconnect does not cancel, and records its answer for the key
    there; the response middleware finds it recorded. Call after the blueprints are registered.
    """
    for route in app.router.routes:
        if route.methods & WRITES:
            route.handler = _to_the_end(route.handler)


def _to_the_end(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(handler)
    async def shielded(request: Request, *args: Any, **kwargs: Any) -> Any:
        async def run() -> Any:
            try:
                response = await handler(request, *args, **kwargs)
            except BaseException:
                if getattr(request.ctx, "abandoned", False):
                    await _record(request, None)  # no one renders this error: free the key
                raise
            if isinstance(response, BaseHTTPResponse):
                await _record(request, response)
            return response

        request.ctx.write = task = asyncio.ensure_future(run())
        task.add_done_callback(_log_abandoned_failure)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            request.ctx.abandoned = True
            raise

    operations = OperationStore()  # the OpenAPI operation documented on the handler
    if handler in operations:
        operations[shielded] = operations[handler]
    return shielded


def _log_abandoned_failure(task: asyncio.Future[Any]) -> None:
    # Errors of a write whose client is still there are rendered by the app's error handlers.
    if not task.cancelled() and task.exception() is not None:
        log.debug("write ended with %r", task.exception())
