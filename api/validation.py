"""Request parsing at the edge: typed models, errors in Chinese that name the field."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sanic.request import Request

from api.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed

M = TypeVar("M", bound=BaseModel)

_REASONS = {
    "missing": "必填",
    "extra_forbidden": "不允许的字段",
    "string_too_long": "内容过长",
    "string_too_short": "内容过短",
    "too_long": "数量过多",
    "too_short": "数量不足",
    "greater_than_equal": "数值过小",
    "less_than_equal": "数值过大",
    "int_type": "应为整数",
    "int_parsing": "应为整数",
    "bool_type": "应为布尔值",
    "bool_parsing": "应为布尔值",
    "string_type": "应为字符串",
    "list_type": "应为列表",
    "dict_type": "应为对象",
    "datetime_type": "应为 ISO 8601 时间",
    "datetime_parsing": "应为 ISO 8601 时间",
    "datetime_from_date_parsing": "应为 ISO 8601 时间",
    "timezone_aware": "时间须带时区",
    "literal_error": "取值无效",
    "enum": "取值无效",
    "model_type": "应为对象",
    "value_error": "取值无效",
}


def _field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err["loc"]) or "body"
        kind = err["type"]
        if kind in ("too_long", "too_short") and isinstance(err.get("input"), str):
            kind = f"string_{kind}"  # a length limit on text, reported as such
        reason = _REASONS.get(kind, "取值无效")
        if err["type"] == "value_error" and err.get("ctx", {}).get("error"):
            reason = str(err["ctx"]["error"])
        errors.append({"field": field, "reason": reason, "type": kind})
    return errors


def _reject_constant(name: str) -> Any:
    raise ValueError(f"JSON does not allow {name}")


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKey(key)
        data[key] = value
    return data


# A JSON body is a form's worth of text (photos are uploaded on their own, up to the request
# limit): a larger one is refused before it is parsed, and an error lists at most this many fields.
JSON_MAX_BYTES = 256 * 1024  # the largest form: a unit's disclosure, 110 items of 500 characters
MAX_FIELD_ERRORS = 20


def _json_body(request: Request) -> Any:
    if len(request.body or b"") > JSON_MAX_BYTES:
        raise PayloadTooLarge(
            f"请求内容过大（JSON 不超过 {JSON_MAX_BYTES // 1024} KB）",
            details={"max_bytes": JSON_MAX_BYTES},
        )
    content_type = (request.headers.get("content-type") or "application/json").split(";")[0]
    if content_type.strip().lower() != "application/json":
        raise UnsupportedMediaType(
            "请求体应为 JSON（Content-Type: application/json）", code="unsupported_media_type"
        )
    try:
        return json.loads(
            request.body, parse_constant=_reject_constant, object_pairs_hook=_unique_keys
        )
    except _DuplicateKey as exc:
        # Which of the two was meant is not ours to guess: both are refused.
        raise BadRequest(
            f"请求体中的字段 {exc.args[0]} 出现了不止一次", code="duplicate_field"
        ) from exc
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest("请求体不是合法的 JSON", code="invalid_json") from exc


def parse_json(request: Request, model: type[M]) -> M:
    raw = request.body or b""
    data = _json_body(request) if raw.strip() else {}
    if not isinstance(data, dict):
        raise BadRequest("请求体应为 JSON 对象", code="invalid_json")
    return validate(model, data)


def validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except UnicodeEncodeError as exc:  # a lone surrogate (\ud800) in a key: no text at all
        raise ValidationFailed(
            "请求体含无法识别的字符",
            details={
                "fields": [
                    {"field": "body", "reason": "含无效的 Unicode 字符", "type": "string_unicode"}
                ]
            },
        ) from exc
    except ValidationError as exc:
        errors = _field_errors(exc)
        names = sorted({e["field"] for e in errors})
        shown = "、".join(names[:5]) + (f" 等 {len(names)} 个字段" if len(names) > 5 else "")
        details: dict[str, Any] = {"fields": errors[:MAX_FIELD_ERRORS]}
        if len(errors) > MAX_FIELD_ERRORS:
            details["more_fields"] = len(errors) - MAX_FIELD_ERRORS
        raise ValidationFailed(f"字段 {shown} 不符合要求", details=details) from exc


def field_error(field: str, reason: str) -> ValidationFailed:
    """A rule checked past the schema, reported in the same shape as schema errors."""
    return ValidationFailed(
        f"字段 {field} 不符合要求：{reason}",
        details={"fields": [{"field": field, "reason": reason, "type": "value_error"}]},
    )
