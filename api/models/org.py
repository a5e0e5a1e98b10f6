"""The organisation: enforcement units (a tree), their officers and the officers' evaluation cards."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class Unit(Model):
    """An enforcement unit: 省厅 (province) → 支队 (city) → 大队 (county), keyed by GB/T 2260 code."""

    id = fields.IntField(primary_key=True)
    code = fields.CharField(max_length=12, unique=True)
    name = fields.CharField(max_length=100)
    division_name = fields.CharField(max_length=50)
    level = fields.CharField(max_length=10)  # province | city | county
    parent: fields.ForeignKeyNullableRelation[Unit] = fields.ForeignKeyField(
        "models.Unit", related_name="children", null=True, on_delete=fields.RESTRICT
    )
    # Materialised path "43/4301/430102/": a subtree is a prefix match on an index.
    path = fields.CharField(max_length=100, db_index=True)
    leader_phone = fields.CharField(max_length=11, null=True)
    # A unit may name another supervising unit in config (DOMAIN.md, routing).
    supervising_unit: fields.ForeignKeyNullableRelation[Unit] = fields.ForeignKeyField(
        "models.Unit", related_name="supervised", null=True, on_delete=fields.SET_NULL
    )
    hotline = fields.CharField(max_length=30, null=True)
    parent_id: int | None
    supervising_unit_id: int | None

    class Meta:
        table = "unit"


class Officer(Model):
    id = fields.IntField(primary_key=True)
    unit: fields.ForeignKeyRelation[Unit] = fields.ForeignKeyField(
        "models.Unit", related_name="officers", on_delete=fields.RESTRICT
    )
    name = fields.CharField(max_length=50)
    cert_no = fields.CharField(max_length=30, unique=True)  # 执法证号, unique province-wide
    active = fields.BooleanField(default=True)
    unit_id: int

    class Meta:
        table = "officer"


class Card(Model):
    """An evaluation card (执法评议卡). Its code is the unguessable key printed as a QR code."""

    id = fields.IntField(primary_key=True)
    code = fields.CharField(max_length=32, unique=True)
    officer: fields.ForeignKeyRelation[Officer] = fields.ForeignKeyField(
        "models.Officer", related_name="cards", on_delete=fields.RESTRICT
    )
    created_at = fields.DatetimeField(auto_now_add=True)
    revoked_at = fields.DatetimeField(null=True)
    officer_id: int

    class Meta:
        table = "card"
