"""Typed request models, validated at the edge (``XxxCreate`` for what clients send)."""

from __future__ import annotations

import unicodedata
from datetime import datetime, timedelta
from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from api import clock
from api.services.catalog import CATEGORIES
from api.texts import DIMENSIONS, QUESTIONS

_ALLOWED_CONTROLS = frozenset("\n\r\t")
_INVISIBLE = frozenset({"Cc", "Cf", "Mn", "Me", "Zs", "Zl", "Zp"})
MAX_PAST = timedelta(days=366)
MAX_AHEAD = timedelta(minutes=10)


# Bidirectional overrides make text read differently from what it is (a reply could be spoofed).
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _clean(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and control characters have no place in what people write.
    if any(
        (unicodedata.category(c) == "Cc" and c not in _ALLOWED_CONTROLS) or c in _BIDI_CONTROLS
        for c in value
    ):
        raise ValueError("不能包含控制字符")
    return value


def _visible(value: str) -> str:
    if value and not any(unicodedata.category(c) not in _INVISIBLE for c in value):
        raise ValueError("内容不能为空白")
    return value


def _plausible(value: datetime | None) -> datetime | None:
    """When something happened: within the last year, not in the future."""
    if value is None:
        return None
    try:
        now = clock.now()
        if value > now + MAX_AHEAD:
            raise ValueError("时间不能晚于当前时间")
        if value < now - MAX_PAST:
            raise ValueError("时间不能早于一年前")
    except OverflowError as exc:
        raise ValueError("时间超出范围") from exc
    return value


Text = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_clean)]
# Free text a person must actually have written: not only spaces or invisible characters.
Prose = Annotated[Text, AfterValidator(_visible)]
Moment = Annotated[AwareDatetime, AfterValidator(_plausible)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class WeChatLogin(Strict):
    code: Annotated[Text, StringConstraints(min_length=1, max_length=128)]


class StaffLogin(Strict):
    username: Annotated[Text, StringConstraints(min_length=1, max_length=50)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class EvaluationCreate(Strict):
    level: int = Field(ge=1, le=5, strict=True)
    dimensions: dict[str, StrictInt] = Field(default_factory=dict)
    answers: dict[str, StrictBool] = Field(default_factory=dict)
    comment: Annotated[Text, StringConstraints(max_length=500)] = ""
    # The one-time code of a verified encounter (the ``e`` of the officer's dynamic QR).
    encounter_code: Annotated[Text, StringConstraints(max_length=32)] | None = None  # "": none

    @field_validator("dimensions", "answers", "comment", mode="before")
    @classmethod
    def _null_is_absent(cls, value: object, info: ValidationInfo) -> object:
        """``null`` for an optional part (a form's empty input) is the same as leaving it out."""
        if value is None:
            return "" if info.field_name == "comment" else {}
        return value

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


def _photo_id(value: str) -> str:
    try:
        return str(UUID(value))
    except ValueError as exc:
        raise ValueError("照片编号无效") from exc


PhotoId = Annotated[str, AfterValidator(_photo_id)]


class ComplaintCreate(Strict):
    card_code: Annotated[Text, StringConstraints(min_length=1, max_length=32)]
    categories: list[str] = Field(min_length=1, max_length=len(CATEGORIES))
    description: Annotated[Prose, StringConstraints(min_length=5, max_length=2000)]
    occurred_at: Moment | None = None
    location: Annotated[Text, StringConstraints(max_length=200)] = ""
    anonymous: bool = Field(default=False, strict=True)
    phone: Annotated[Text, StringConstraints(max_length=20)] | None = None
    # Evidence photos: ids from POST /api/v1/uploads (checked against their owner when filed).
    photos: list[PhotoId] = Field(default_factory=list, max_length=9)

    @field_validator("categories")
    @classmethod
    def _categories(cls, value: list[str]) -> list[str]:
        unknown = [c for c in value if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"未知的问题类别 {', '.join(unknown)}")
        return list(dict.fromkeys(value))


class FeedbackCreate(Strict):
    satisfied: bool = Field(strict=True)
    comment: Annotated[Text, StringConstraints(max_length=500)] = ""
    # Why the citizen asks for a re-check: required when not satisfied (checked by the service).
    reason: Annotated[Prose, StringConstraints(min_length=2, max_length=500)] | None = None


class ReplyCreate(Strict):
    message: Annotated[Prose, StringConstraints(min_length=2, max_length=2000)]


Reason = Annotated[Prose, StringConstraints(min_length=2, max_length=500)]


class ContactCreate(Strict):
    outcome: Reason
    contacted_at: Moment | None = None


class InfoRequestCreate(Strict):
    message: Reason


class SupplementCreate(Strict):
    message: Annotated[Prose, StringConstraints(min_length=2, max_length=2000)]


class NoteCreate(Strict):
    text: Annotated[Prose, StringConstraints(min_length=1, max_length=2000)]


class TransferCreate(Strict):
    unit_code: Annotated[Text, StringConstraints(min_length=2, max_length=12)]
    reason: Reason


class EscalateCreate(Strict):
    reason: Reason


class ExtensionCreate(Strict):
    # The most days is the case's profile's (config/sla*.toml [limits]), checked by the service.
    days: int = Field(strict=True, ge=1)
    reason: Reason


class ExtensionDecision(Strict):
    approve: bool = Field(strict=True)
    note: Annotated[Text, StringConstraints(max_length=500)] = ""


class PasswordChange(Strict):
    old_password: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    new_password: Annotated[str, StringConstraints(min_length=1, max_length=200)]


# --- administration: calendar overrides and unit contacts (api/services/calendar_admin.py,
# api/services/units_admin.py) ---------------------------------------------------------------


class CalendarOverrideSet(Strict):
    is_workday: StrictBool
    note: Annotated[Text, StringConstraints(max_length=200)] = ""


class UnitContactUpdate(Strict):
    # Omitted: unchanged; null or "": cleared. The phone is normalised by the service.
    leader_phone: Annotated[Text, StringConstraints(max_length=30)] | None = None
    hotline: Annotated[Text, StringConstraints(max_length=30)] | None = None


# --- content security and the citizen's phone (api/services/content_review.py,
# api/services/citizen_phone.py) -------------------------------------------------------------


class ContentDecision(Strict):
    decision: Literal["release", "reject"]
    note: Annotated[Text, StringConstraints(max_length=500)] = ""


_Base64 = Annotated[
    str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[A-Za-z0-9+/=]+$")
]


class PhoneCreate(Strict):
    """Either the ``code`` of getPhoneNumber (current), or its older ``encryptedData`` and ``iv``."""

    phone_code: Annotated[Text, StringConstraints(min_length=1, max_length=128)] | None = None
    encrypted_data: _Base64 | None = None
    iv: Annotated[_Base64, StringConstraints(max_length=64)] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> PhoneCreate:
        encrypted = self.encrypted_data is not None or self.iv is not None
        if self.phone_code is not None and encrypted:
            raise ValueError("phone_code 与 encrypted_data/iv 只能二选一")
        if self.phone_code is None and (self.encrypted_data is None or self.iv is None):
            raise ValueError("请提供 phone_code，或同时提供 encrypted_data 与 iv")
        return self


# --- integrity of ratings (api/services/encounters.py, api/services/rating_flags.py) -------------


class EncounterCreate(Strict):
    # Omitted: the officer linked to the caller's own account.
    cert_no: Annotated[Text, StringConstraints(min_length=1, max_length=30)] | None = None


class RatingReviewCreate(Strict):
    decision: Literal["confirm", "clear"]
    note: Reason


# --- anonymity and public disclosure (api/services/anonymity.py, api/services/disclosure.py) ---


class AnonymityUpdate(Strict):
    anonymous: StrictBool


DisclosureItem = Annotated[Prose, StringConstraints(min_length=2, max_length=500)]


class UnitDisclosureUpdate(Strict):
    # Omitted: unchanged; null: back to the default of config/disclosure.toml for the unit's level.
    duties: list[DisclosureItem] | None = Field(default=None, min_length=1, max_length=30)
    legal_bases: list[DisclosureItem] | None = Field(default=None, min_length=1, max_length=50)
    procedures: list[DisclosureItem] | None = Field(default=None, min_length=1, max_length=30)
    address: Annotated[Text, StringConstraints(max_length=200)] | None = None
    mailbox: Annotated[Text, StringConstraints(max_length=200)] | None = None


# --- 群众监督员 (api/services/public_supervisors.py) ---------------------------------------------


class PublicSupervisorSet(Strict):
    appointed: StrictBool
    note: Reason  # why: the appointment letter, or why it ends
