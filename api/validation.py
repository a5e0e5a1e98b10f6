"""Request parsing at the edge: typed models, errors in Chinese that name the field."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sanic.request import Request

from api.errors import BadRequest, ValidationFailed

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
        reason = _REASONS.get(err["type"], "取值无效")
        if err["type"] == "value_error" and err.get("ctx", {}).get("error"):
            reason = str(err["ctx"]["error"])
        errors.append({"field": field, "reason": reason, "type": err["type"]})
    return errors


def parse_json(request: Request, model: type[M]) -> M:
    raw = request.body or b""
    if not raw.strip():
        data: Any = {}
    else:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest("请求体不是合法的 JSON", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise BadRequest("请求体应为 JSON 对象", code="invalid_json")
    return validate(model, data)


def validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = _field_errors(exc)
        names = "、".join(sorted({e["field"] for e in errors}))
        raise ValidationFailed(f"字段 {names} 不符合要求", details={"fields": errors}) from exc
