from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from api.models.case import Case
    from api.models.citizen import Citizen


class Evidence(Model):
    """An evidence photo a citizen uploaded: sanitised bytes in storage, attached to one case at most.

    Every upload is its own row (its own opaque id), even when the bytes are identical to an earlier
    upload: the stored file is shared by its SHA-256, ownership and attachment are not.
    """

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    owner: fields.ForeignKeyNullableRelation[Citizen] = fields.ForeignKeyField(
        "models.Citizen", related_name="evidence", null=True, on_delete=fields.SET_NULL
    )
    case: fields.ForeignKeyNullableRelation[Case] = fields.ForeignKeyField(
        "models.Case", related_name="evidence", null=True, on_delete=fields.CASCADE
    )
    position = fields.SmallIntField(null=True)  # order within the case, as the citizen listed them
    sha256 = fields.CharField(max_length=64, db_index=True)  # of the stored (re-encoded) bytes
    storage_key = fields.CharField(max_length=200)
    content_type = fields.CharField(max_length=20)  # of the stored bytes
    source_type = fields.CharField(max_length=20)  # what the upload was, decided by its content
    size = fields.IntField()
    width = fields.IntField()
    height = fields.IntField()
    created_at = fields.DatetimeField()
    attached_at = fields.DatetimeField(null=True)
    # WeChat image check (api/services/moderation.py): only ok/released photos are shown to staff.
    content_status = fields.CharField(max_length=10, default="ok")
    owner_id: int | None
    case_id: int | None

    class Meta:
        table = "evidence"
