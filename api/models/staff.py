from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

from api.models.org import Officer, Unit


class StaffUser(Model):
    """A supervisor's account. Its role is a named set of capabilities (api.services.permissions)."""

    id = fields.IntField(primary_key=True)
    username = fields.CharField(max_length=50, unique=True)
    password_hash = fields.CharField(max_length=200)
    name = fields.CharField(max_length=50)
    role = fields.CharField(max_length=30)
    unit: fields.ForeignKeyRelation[Unit] = fields.ForeignKeyField(
        "models.Unit", related_name="staff", on_delete=fields.RESTRICT
    )
    # Set when the account belongs to an enforcement officer: cases about them stay invisible.
    officer: fields.ForeignKeyNullableRelation[Officer] = fields.ForeignKeyField(
        "models.Officer", related_name="staff_accounts", null=True, on_delete=fields.SET_NULL
    )
    phone = fields.CharField(max_length=11, null=True)
    # A bound WeChat account lets the staff member sign in from the mini-program.
    wechat_openid = fields.CharField(max_length=64, null=True, unique=True)
    is_active = fields.BooleanField(default=True)
    is_demo = fields.BooleanField(default=False)
    failed_logins = fields.IntField(default=0)
    locked_until = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    unit_id: int
    officer_id: int | None

    class Meta:
        table = "staff_user"


class SecurityEvent(Model):
    """Sign-in security events of staff accounts (lockouts, disabling), kept for accountability."""

    id = fields.IntField(primary_key=True)
    staff: fields.ForeignKeyNullableRelation[StaffUser] = fields.ForeignKeyField(
        "models.StaffUser", related_name="security_events", null=True, on_delete=fields.RESTRICT
    )
    kind = fields.CharField(max_length=30)
    detail = fields.CharField(max_length=200, default="")
    actor_id = fields.IntField(null=True)
    created_at = fields.DatetimeField()
    staff_id: int | None

    class Meta:
        table = "security_event"
