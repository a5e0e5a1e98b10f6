from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

from api.fieldcrypt import EncryptedCharField


class Citizen(Model):
    """A WeChat user of the mini-program, known by the openid under our appid."""

    id = fields.IntField(primary_key=True)
    openid = fields.CharField(max_length=64, unique=True)
    unionid = fields.CharField(max_length=64, null=True)
    # Verified through WeChat (getPhoneNumber); encrypted at rest, plain in Python.
    phone = EncryptedCharField(column="citizen.phone", null=True)
    # 群众监督员: an appointed public supervisor; reports are marked and routed to the supervising unit.
    is_public_supervisor = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "citizen"
