from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from api.models.case import Case
    from api.models.citizen import Citizen
    from api.models.org import Card, Officer


class Evaluation(Model):
    """A citizen's rating of one encounter (好差评, five levels of GB/T 39735-2020)."""

    id = fields.IntField(primary_key=True)
    card: fields.ForeignKeyRelation[Card] = fields.ForeignKeyField(
        "models.Card", related_name="evaluations"
    )
    officer: fields.ForeignKeyRelation[Officer] = fields.ForeignKeyField(
        "models.Officer", related_name="evaluations"
    )
    citizen: fields.ForeignKeyNullableRelation[Citizen] = fields.ForeignKeyField(
        "models.Citizen", related_name="evaluations", null=True, on_delete=fields.SET_NULL
    )
    level = fields.SmallIntField()
    dimensions: fields.Field[dict[str, Any]] = fields.JSONField(default=dict)
    answers: fields.Field[dict[str, Any]] = fields.JSONField(default=dict)
    comment = fields.TextField(default="")
    content_status = fields.CharField(max_length=10, default="ok")  # of the comment (moderation)
    verified = fields.BooleanField(default=False)
    flagged = fields.BooleanField(default=False)
    # Burst flags (api/services/rating_flags.py): why it was flagged and the review's outcome.
    # flag_status: "" never flagged | pending | confirmed (excluded from assessment) | cleared.
    flag_reasons: fields.Field[list[dict[str, Any]]] = fields.JSONField(default=list)
    flag_status = fields.CharField(max_length=10, default="", db_index=True)
    flagged_at = fields.DatetimeField(null=True)
    case: fields.ForeignKeyNullableRelation[Case] = fields.ForeignKeyField(
        "models.Case", related_name="evaluations", null=True, on_delete=fields.SET_NULL
    )
    created_at = fields.DatetimeField(db_index=True)
    card_id: int
    officer_id: int
    citizen_id: int | None
    case_id: int | None

    class Meta:
        table = "evaluation"
        # The once-per-window rule (a citizen's ratings of one card) and the burst counts (an
        # officer's ratings, a citizen's ratings) read recent rows of one citizen or one officer.
        indexes = (("citizen_id", "card_id", "created_at"), ("officer_id", "created_at"))
