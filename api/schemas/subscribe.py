"""Request models of WeChat subscribe messages (api/services/subscriptions.py)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, field_validator

from api.schemas import Strict, Text

TemplateId = Annotated[Text, StringConstraints(min_length=1, max_length=64)]


class SubscriptionCreate(Strict):
    # The case page the citizen subscribed on, if any: its messages use these consents first.
    ticket_no: Annotated[Text, StringConstraints(pattern=r"^PY\d{14}$")] | None = None
    # The template ids wx.requestSubscribeMessage answered "accept" for (it asks ≤ 3 at once).
    template_ids: list[TemplateId] = Field(min_length=1, max_length=3)

    @field_validator("template_ids")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))
