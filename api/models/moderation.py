"""Content security (内容安全): citizen text or photos that WeChat's check did not clear.

A row is written only when something is *held*: WeChat answered ``review`` (or, for a photo, the
check could not be completed) or the check failed or timed out. The submission itself is kept and
its clocks run; the held content stays out of every view but a reviewer's until a person with the
``content.review`` capability releases or rejects it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from api.models.case import Case
    from api.models.citizen import Citizen
    from api.models.evaluation import Evaluation
    from api.models.evidence import Evidence
    from api.models.staff import StaffUser


class ContentStatus:
    OK = "ok"  # WeChat answered pass
    HELD = "held"  # waiting for a person
    RELEASED = "released"  # a person let it through
    REJECTED = "rejected"  # a person refused it; kept for the record, shown to no one

    VISIBLE = (OK, RELEASED)
    DECISIONS = (RELEASED, REJECTED)


class ContentHold(Model):
    id = fields.IntField(primary_key=True)
    citizen: fields.ForeignKeyNullableRelation[Citizen] = fields.ForeignKeyField(
        "models.Citizen", related_name="content_holds", null=True, on_delete=fields.SET_NULL
    )
    case: fields.ForeignKeyNullableRelation[Case] = fields.ForeignKeyField(
        "models.Case", related_name="content_holds", null=True, on_delete=fields.CASCADE
    )
    evaluation: fields.ForeignKeyNullableRelation[Evaluation] = fields.ForeignKeyField(
        "models.Evaluation", related_name="content_holds", null=True, on_delete=fields.CASCADE
    )
    evidence: fields.ForeignKeyNullableRelation[Evidence] = fields.ForeignKeyField(
        "models.Evidence", related_name="content_holds", null=True, on_delete=fields.CASCADE
    )
    # description | location | comment | feedback_comment | supplement | photo
    field = fields.CharField(max_length=20)
    text = fields.TextField(default="")  # the held text itself ("" for a photo)
    reason = fields.CharField(max_length=12)  # review | check_failed
    detail = fields.CharField(max_length=200, default="")  # WeChat's label or error
    status = fields.CharField(max_length=10, default=ContentStatus.HELD, db_index=True)
    created_at = fields.DatetimeField()
    decided_by: fields.ForeignKeyNullableRelation[StaffUser] = fields.ForeignKeyField(
        "models.StaffUser", related_name="content_decisions", null=True, on_delete=fields.RESTRICT
    )
    decided_at = fields.DatetimeField(null=True)
    note = fields.CharField(max_length=500, default="")
    citizen_id: int | None
    case_id: int | None
    evaluation_id: int | None
    evidence_id: int | None
    decided_by_id: int | None

    class Meta:
        table = "content_hold"
