"""One error hierarchy: every error carries its HTTP status, a stable code and a Chinese message."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status = 400
    code = "bad_request"
    message = "请求有误"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.details = details
        self.headers = headers or {}
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class BadRequest(AppError):
    status = 400


class ValidationFailed(AppError):
    status = 422
    code = "validation_failed"
    message = "提交的内容不符合要求"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"
    message = "请先登录"


class Forbidden(AppError):
    status = 403
    code = "forbidden"
    message = "无权进行此操作"


class NotFound(AppError):
    status = 404
    code = "not_found"
    message = "未找到"


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(AppError):
    status = 415
    code = "unsupported_media_type"
    message = "不支持的内容类型"


class Conflict(AppError):
    status = 409
    code = "conflict"
    message = "当前状态不允许此操作"


class Gone(AppError):
    status = 410
    code = "gone"
    message = "已失效"


class TooManyRequests(AppError):
    status = 429
    code = "too_many_requests"
    message = "操作过于频繁，请稍后再试"


class UpstreamUnavailable(AppError):
    status = 503
    code = "upstream_unavailable"
    message = "服务暂时繁忙，请稍后再试"
