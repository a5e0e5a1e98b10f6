from __future__ import annotations

from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from api.models.case import Case
    from api.models.staff import StaffUser


class ExtensionStatus:
    PENDING = "pending"
    APPROVED = "approved"
    REFUSED = "refused"


class ExtensionRequest(Model):
    """A request to extend a case's deadline (延期): once per case, decided one level up."""

    id = fields.IntField(primary_key=True)
    case: fields.ForeignKeyRelation[Case] = fields.ForeignKeyField(
        "models.Case", related_name="extensions", on_delete=fields.CASCADE
    )
    clock_kind = fields.CharField(max_length=30)
    days = fields.SmallIntField()
    reason = fields.TextField()
    status = fields.CharField(max_length=10, default=ExtensionStatus.PENDING)
    requested_by: fields.ForeignKeyRelation[StaffUser] = fields.ForeignKeyField(
        "models.StaffUser", related_name="extension_requests", on_delete=fields.RESTRICT
    )
    decided_by: fields.ForeignKeyNullableRelation[StaffUser] = fields.ForeignKeyField(
        "models.StaffUser", related_name="extension_decisions", null=True, on_delete=fields.RESTRICT
    )
    decision_note = fields.TextField(default="")
    created_at = fields.DatetimeField()
    decided_at = fields.DatetimeField(null=True)
    case_id: int
    requested_by_id: int
    decided_by_id: int | None

    class Meta:
        table = "extension_request"
