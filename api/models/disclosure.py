"""What a unit discloses to the public (执法公示): duties, legal bases, procedures, channels."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from api.models.org import Unit
    from api.models.staff import StaffUser


class UnitDisclosure(Model):
    """An administrator's own text for a unit. A missing list (null) falls back to the default
    of ``config/disclosure.toml`` for the unit's level."""

    id = fields.IntField(primary_key=True)
    unit: fields.OneToOneRelation[Unit] = fields.OneToOneField(
        "models.Unit", related_name="disclosure", on_delete=fields.CASCADE
    )
    duties: fields.Field[list[str] | None] = fields.JSONField(null=True)  # 职责
    legal_bases: fields.Field[list[str] | None] = fields.JSONField(null=True)  # 执法依据
    procedures: fields.Field[list[str] | None] = fields.JSONField(null=True)  # 执法程序
    address = fields.CharField(max_length=200, null=True)  # 来信来访地址
    mailbox = fields.CharField(max_length=200, null=True)  # 监督信箱 (e-mail or postal)
    updated_at = fields.DatetimeField()
    updated_by: fields.ForeignKeyNullableRelation[StaffUser] = fields.ForeignKeyField(
        "models.StaffUser", related_name="disclosures", null=True, on_delete=fields.SET_NULL
    )
    unit_id: int
    updated_by_id: int | None

    class Meta:
        table = "unit_disclosure"
