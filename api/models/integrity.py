"""Integrity of ratings: one-time encounter codes and the review log of flagged ratings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from api.models.evaluation import Evaluation
    from api.models.org import Card, Officer
    from api.models.staff import StaffUser


class EncounterCode(Model):
    """A short-lived, single-use code an officer hands out for one encounter (dynamic QR).

    Only a keyed hash of the code is stored: the database alone cannot mint verified ratings.
    Whether a code was used must survive restarts, so the row (not Redis) is the truth.
    """

    id = fields.IntField(primary_key=True)
    card: fields.ForeignKeyRelation[Card] = fields.ForeignKeyField(
        "models.Card", related_name="encounter_codes", on_delete=fields.CASCADE
    )
    officer: fields.ForeignKeyRelation[Officer] = fields.ForeignKeyField(
        "models.Officer", related_name="encounter_codes", on_delete=fields.CASCADE
    )
    code_hash = fields.CharField(max_length=64)
    issued_by: fields.ForeignKeyNullableRelation[StaffUser] = fields.ForeignKeyField(
        "models.StaffUser", related_name="encounter_codes", null=True, on_delete=fields.SET_NULL
    )
    issued_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)
    evaluation: fields.ForeignKeyNullableRelation[Evaluation] = fields.ForeignKeyField(
        "models.Evaluation", related_name="encounter_codes", null=True, on_delete=fields.SET_NULL
    )
    card_id: int
    officer_id: int
    issued_by_id: int | None
    evaluation_id: int | None

    class Meta:
        table = "encounter_code"
        unique_together = (("card", "code_hash"),)


class RatingReview(Model):
    """One reviewer decision on a flagged rating. Rows are only ever added (the audit trail)."""

    id = fields.IntField(primary_key=True)
    evaluation: fields.ForeignKeyRelation[Evaluation] = fields.ForeignKeyField(
        "models.Evaluation", related_name="reviews", on_delete=fields.RESTRICT
    )
    staff: fields.ForeignKeyRelation[StaffUser] = fields.ForeignKeyField(
        "models.StaffUser", related_name="rating_reviews", on_delete=fields.RESTRICT
    )
    decision = fields.CharField(max_length=10)  # confirmed | cleared
    previous_status = fields.CharField(max_length=10)
    note = fields.TextField()
    created_at = fields.DatetimeField()
    evaluation_id: int
    staff_id: int

    class Meta:
        table = "rating_review"
