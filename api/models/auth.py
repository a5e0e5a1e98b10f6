from __future__ import annotations

from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from api.models.citizen import Citizen
    from api.models.staff import StaffUser


class AuthSession(Model):
    """A bearer token. Only its SHA-256 is stored, and revoking sets ``revoked_at``."""

    id = fields.IntField(primary_key=True)
    token_hash = fields.CharField(max_length=64, unique=True)
    kind = fields.CharField(max_length=10)  # citizen | staff
    citizen: fields.ForeignKeyNullableRelation[Citizen] = fields.ForeignKeyField(
        "models.Citizen", related_name="sessions", null=True, on_delete=fields.CASCADE
    )
    staff: fields.ForeignKeyNullableRelation[StaffUser] = fields.ForeignKeyField(
        "models.StaffUser", related_name="sessions", null=True, on_delete=fields.CASCADE
    )
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField()
    revoked_at = fields.DatetimeField(null=True)
    # A citizen session's WeChat session_key (decrypts wx encryptedData); never leaves the server.
    wechat_session_key = fields.CharField(max_length=64, null=True)
    # The login session a refreshed token descends from (None: this is the login session). One
    # family is one sign-in: Idempotency-Keys are scoped by it, and logout ends all of it.
    family_id = fields.IntField(null=True)
    citizen_id: int | None
    staff_id: int | None

    class Meta:
        table = "auth_session"
