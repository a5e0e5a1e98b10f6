from __future__ import annotations

from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

from api.fieldcrypt import EncryptedCharField

if TYPE_CHECKING:
    from api.models.org import Unit
    from api.models.staff import StaffUser


class Citizen(Model):
    """A WeChat user of the mini-program, known by the openid under our appid."""

    id = fields.IntField(primary_key=True)
    openid = fields.CharField(max_length=64, unique=True)
    unionid = fields.CharField(max_length=64, null=True)
    # Verified through WeChat (getPhoneNumber); encrypted at rest, plain in Python.
    phone = EncryptedCharField(column="citizen.phone", null=True)
    # 群众监督员: an appointed public supervisor; reports are marked and routed to the supervising unit.
    is_public_supervisor = fields.BooleanField(default=False)
    # What the citizen shows an administrator to be appointed (GET /me): random, never the openid.
    supervisor_code = fields.CharField(max_length=12, null=True, unique=True)
    # The unit whose administrator made the appointment: it is managed from that unit's subtree.
    public_supervisor_unit: fields.ForeignKeyNullableRelation[Unit] = fields.ForeignKeyField(
        "models.Unit", related_name="public_supervisors", null=True, on_delete=fields.RESTRICT
    )
    public_supervisor_note = fields.CharField(max_length=500, default="")
    public_supervisor_since = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    public_supervisor_unit_id: int | None

    class Meta:
        table = "citizen"


class PublicSupervisorChange(Model):
    """An appointment of a 群众监督员 made or ended: append-only, who, when, why."""

    id = fields.IntField(primary_key=True)
    citizen: fields.ForeignKeyRelation[Citizen] = fields.ForeignKeyField(
        "models.Citizen", related_name="supervisor_changes", on_delete=fields.RESTRICT
    )
    appointed = fields.BooleanField()
    note = fields.CharField(max_length=500)
    staff: fields.ForeignKeyRelation[StaffUser] = fields.ForeignKeyField(
        "models.StaffUser", related_name="supervisor_changes", on_delete=fields.RESTRICT
    )
    unit: fields.ForeignKeyRelation[Unit] = fields.ForeignKeyField(
        "models.Unit", related_name="supervisor_changes", on_delete=fields.RESTRICT
    )
    created_at = fields.DatetimeField()
    citizen_id: int
    staff_id: int
    unit_id: int

    class Meta:
        table = "public_supervisor_change"
