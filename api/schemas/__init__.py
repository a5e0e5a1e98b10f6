"""Typed request models, validated at the edge (``XxxCreate`` for what clients send)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from api.services.catalog import CATEGORIES
from api.texts import DIMENSIONS, QUESTIONS

Text = Annotated[str, StringConstraints(strip_whitespace=True)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class WeChatLogin(Strict):
    code: Annotated[Text, StringConstraints(min_length=1, max_length=128)]


class StaffLogin(Strict):
    username: Annotated[Text, StringConstraints(min_length=1, max_length=50)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class EvaluationCreate(Strict):
    level: int = Field(ge=1, le=5, strict=True)
    dimensions: dict[str, int] = Field(default_factory=dict)
    answers: dict[str, bool] = Field(default_factory=dict)
    comment: Annotated[Text, StringConstraints(max_length=500)] = ""

    @field_validator("dimensions")
    @classmethod
    def _dimensions(cls, value: dict[str, int]) -> dict[str, int]:
        for key, score in value.items():
            if key not in DIMENSIONS:
                raise ValueError(f"未知的评价维度 {key}")
            if not 1 <= score <= 5:
                raise ValueError(f"评价维度 {key} 的分值应为 1–5")
        return value

    @field_validator("answers")
    @classmethod
    def _answers(cls, value: dict[str, bool]) -> dict[str, bool]:
        unknown = set(value) - set(QUESTIONS)
        if unknown:
            raise ValueError(f"未知的问题 {', '.join(sorted(unknown))}")
        return value


class ComplaintCreate(Strict):
    card_code: Annotated[Text, StringConstraints(min_length=1, max_length=32)]
    categories: list[str] = Field(min_length=1, max_length=len(CATEGORIES))
    description: Annotated[Text, StringConstraints(min_length=5, max_length=2000)]
    occurred_at: datetime | None = None
    location: Annotated[Text, StringConstraints(max_length=200)] = ""
    anonymous: bool = Field(default=False, strict=True)
    phone: Annotated[Text, StringConstraints(max_length=20)] | None = None

    @field_validator("categories")
    @classmethod
    def _categories(cls, value: list[str]) -> list[str]:
        unknown = [c for c in value if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"未知的问题类别 {', '.join(unknown)}")
        return list(dict.fromkeys(value))

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("时间须带时区，例如 2025-05-01T10:00:00+08:00")
        return value


class FeedbackCreate(Strict):
    satisfied: bool = Field(strict=True)
    comment: Annotated[Text, StringConstraints(max_length=500)] = ""


class ReplyCreate(Strict):
    message: Annotated[Text, StringConstraints(min_length=2, max_length=2000)]
