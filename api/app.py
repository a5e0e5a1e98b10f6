"""The app factory: settings in, a Sanic app with its blueprints, listeners and error renderer out."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from typing import Any

from sanic import Sanic
from sanic.exceptions import PayloadTooLarge, SanicException, ServiceUnavailable
from sanic.request import Request
from sanic.response import HTTPResponse, json
from sanic_ext import Extend
from sanic_ext.extensions.http.extension import HTTPExtension
from sanic_ext.extensions.openapi.extension import OpenAPIExtension

from api import db, fieldcrypt
from api.errors import AppError
from api.redis import open_redis
from api.settings import Settings, get_settings

log = logging.getLogger("pingyi")
GC_YOUNG_THRESHOLD = 10_000  # new container objects between two young collections

_SANIC_CODES = {
    404: ("not_found", "请求的地址不存在"),
    405: ("method_not_allowed", "不支持该请求方法"),
    413: ("payload_too_large", "请求过大（地址、请求头或请求内容超出限制）"),
    400: ("bad_request", "请求格式有误"),
    408: ("request_timeout", "请求超时"),
}


def create_app(settings: Settings | None = None, *, name: str = "pingyi") -> Sanic:
    settings = settings or get_settings()
    app = Sanic(name)
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.REQUEST_MAX_SIZE = 12 * 1024 * 1024
    app.config.OAS_URL_PREFIX = "/docs"
    app.config.API_TITLE = "Pingyi 评议 API"
    app.config.API_VERSION = "1.0"
    app.config.API_DESCRIPTION = "交通运输执法评议与监督"
    app.ctx.settings = settings
    # sanic-ext for the OpenAPI spec and automatic HEAD/OPTIONS only. Left out, because every
    # request paid for them and nothing uses them: dependency injection (a signal dispatched per
    # request), and CORS (the mini-program's wx.request is not a browser; no origin is allowed).
    app.config.CORS = False
    Extend(app, built_in_extensions=False, extensions=[OpenAPIExtension, HTTPExtension])
    # --- rate limits and Idempotency-Key (api/middleware.py) ---
    from api import middleware

    middleware.register(app, settings)
    # --- end rate limits and Idempotency-Key ---
    _register_listeners(app, settings)
    _register_errors(app)
    _register_blueprints(app)
    middleware.finish_writes(app)
    return app


def _register_listeners(app: Sanic, settings: Settings) -> None:
    @app.before_server_start
    async def open_clients(app: Sanic) -> None:
        from api.services import broadcast
        from api.services.auth import refuse_demo_accounts
        from api.services.context import build_context

        await db.init_db(settings.database_url, pool_max=settings.db_pool_max)
        if settings.is_production:
            await refuse_demo_accounts()
        app.ctx.redis = open_redis(settings.redis_url)
        app.ctx.services = build_context(settings, app.ctx.redis)
        # This worker's copies of card views and sessions follow the others' changes.
        app.ctx.follower = asyncio.get_running_loop().create_task(
            broadcast.follow(app.ctx.services)
        )
        await fieldcrypt.check_stored_key()

    @app.after_server_start
    async def settle_memory(app: Sanic) -> None:
        # What start-up made (modules, routes, schemas, pools) lives as long as the worker: moved
        # out of the collector's sight, so its full passes stop walking it again and again, and
        # young passes come less often than CPython's default of every 700 new objects.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

    @app.after_server_stop
    async def close_clients(app: Sanic) -> None:
        app.ctx.follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await app.ctx.follower
        await app.ctx.redis.aclose()
        await db.close_db()


def _error(status: int, code: str, message: str, **extra: Any) -> HTTPResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    body.update(extra)
    return json({"error": body}, status=status)


def _register_errors(app: Sanic) -> None:
    @app.exception(AppError)
    async def app_error(request: Request, exc: AppError) -> HTTPResponse:
        return json(exc.body(), status=exc.status, headers=exc.headers)

    @app.exception(PayloadTooLarge)
    async def too_large(request: Request, exc: PayloadTooLarge) -> HTTPResponse:
        # Sanic refuses a body over REQUEST_MAX_SIZE before any handler runs (an announced
        # Content-Length at once, a chunked body as soon as it grows past the limit).
        if "body" in str(exc):
            limit = int(app.config.REQUEST_MAX_SIZE)
            return _error(
                413,
                "payload_too_large",
                f"请求内容过大（不得超过 {limit // (1024 * 1024)} MB）",
                details={"max_bytes": limit},
            )
        return _error(413, "payload_too_large", "请求地址或请求头过长")

    @app.exception(SanicException)
    async def sanic_error(request: Request, exc: SanicException) -> HTTPResponse:
        status = getattr(exc, "status_code", 500) or 500
        code, message = _SANIC_CODES.get(status, ("bad_request", "请求有误"))
        if isinstance(exc, ServiceUnavailable) and _body_incomplete(request):
            # Sanic's response timeout while the body was still arriving: the client's doing.
            return _error(408, "request_timeout", "请求超时：请求内容未完整送达，请重试")
        if isinstance(exc, ServiceUnavailable):
            log.warning("response timeout on %s %s", request.method, request.path)
            return _error(503, "service_timeout", "服务繁忙，处理超时，请稍后重试")
        if status >= 500:
            log.exception("unhandled error", exc_info=exc)
            code, message = "internal_error", "服务器内部错误"
        return _error(status, code, message)

    @app.exception(Exception)
    async def unexpected(request: Request, exc: Exception) -> HTTPResponse:
        log.exception("unhandled error on %s %s", request.method, request.path, exc_info=exc)
        return _error(500, "internal_error", "服务器内部错误")


def _body_incomplete(request: Request) -> bool:
    announced = request.headers.get("content-length", "")
    return announced.isdigit() and int(announced) > len(request.body or b"")


def _register_blueprints(app: Sanic) -> None:
    from api.handlers import blueprints

    for bp in blueprints():
        app.blueprint(bp)


def production_app(*_cli_args: object) -> Sanic:
    """The app from the environment's settings, for `sanic api.app:production_app --factory`
    (Sanic's command line hands its own arguments to a factory; they are not settings)."""
    return create_app(get_settings())
