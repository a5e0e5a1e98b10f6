"""A case: a misconduct report (投诉举报) or the follow-up of a bad rating (差评回访核实)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

from api.fieldcrypt import EncryptedCharField

if TYPE_CHECKING:
    from api.models.citizen import Citizen
    from api.models.org import Card, Officer, Unit
    from api.models.staff import StaffUser


class CaseKind:
    COMPLAINT = "complaint"
    BAD_RATING = "bad_rating"


class CaseStatus:
    RECEIVED = "received"  # 待签收
    ACKNOWLEDGED = "acknowledged"  # 办理中
    REPLIED = "replied"  # 已答复，待评价
    WAITING = "waiting"  # 待群众补充材料 (clocks paused)
    RECHECKING = "rechecking"  # 复核中
    CLOSED = "closed"  # 已办结

    OPEN = (RECEIVED, ACKNOWLEDGED, WAITING, REPLIED, RECHECKING)
    ALL = (*OPEN, CLOSED)


class Case(Model):
    id = fields.IntField(primary_key=True)
    ticket_no = fields.CharField(max_length=20, unique=True)
    kind = fields.CharField(max_length=12)
    status = fields.CharField(max_length=12, db_index=True)
    urgency = fields.CharField(max_length=8, default="normal")  # normal | high | urgent
    sla_profile = fields.CharField(max_length=40)
    officer: fields.ForeignKeyRelation[Officer] = fields.ForeignKeyField(
        "models.Officer", related_name="cases"
    )
    card: fields.ForeignKeyNullableRelation[Card] = fields.ForeignKeyField(
        "models.Card", related_name="cases", null=True
    )
    origin_unit: fields.ForeignKeyRelation[Unit] = fields.ForeignKeyField(
        "models.Unit", related_name="origin_cases"
    )
    handling_unit: fields.ForeignKeyRelation[Unit] = fields.ForeignKeyField(
        "models.Unit", related_name="handling_cases"
    )
    handling_path = fields.CharField(max_length=100, db_index=True)
    citizen: fields.ForeignKeyRelation[Citizen] = fields.ForeignKeyField(
        "models.Citizen", related_name="cases"
    )
    # The staff member who acknowledged the case: the only one shown a named reporter's phone.
    handler: fields.ForeignKeyNullableRelation[StaffUser] = fields.ForeignKeyField(
        "models.StaffUser", related_name="handled_cases", null=True, on_delete=fields.SET_NULL
    )
    anonymous = fields.BooleanField(default=False)
    contact_phone = EncryptedCharField(column="case.contact_phone", null=True)  # encrypted at rest
    from_public_supervisor = fields.BooleanField(default=False)
    categories: fields.Field[list[str]] = fields.JSONField(default=list)
    # "|RUDE|NO_ID|": the categories as text, so any database can filter on one of them.
    category_index = fields.CharField(max_length=400, default="", db_index=True)
    description = fields.TextField(default="")
    # Content security of the citizen's texts (api/services/moderation.py): ok | held | released |
    # rejected — the state of the case's most recent held text, "held" while any is pending.
    content_status = fields.CharField(max_length=10, default="ok")
    location = fields.CharField(max_length=200, default="")
    occurred_at = fields.DatetimeField(null=True)
    discipline_flag = fields.BooleanField(default=False)  # 纪检 channel (BRIBERY)
    criticism_flag = fields.BooleanField(default=False)  # 通报 in the assessment
    received_at = fields.DatetimeField()
    acknowledged_at = fields.DatetimeField(null=True)
    replied_at = fields.DatetimeField(null=True)
    closed_at = fields.DatetimeField(null=True)
    close_reason = fields.CharField(max_length=30, null=True)
    reply_message = fields.TextField(null=True)
    recheck_reply_message = fields.TextField(null=True)
    satisfied = fields.BooleanField(null=True)
    feedback_comment = fields.TextField(null=True)
    recheck_count = fields.SmallIntField(default=0)
    transfer_count = fields.SmallIntField(default=0)
    extension_count = fields.SmallIntField(default=0)
    # The nearest deadline of a running clock: the inbox sorts on it ("most urgent first").
    next_due_at = fields.DatetimeField(null=True, db_index=True)
    version = fields.IntField(default=0)
    # The head of the case's audit chain (seq and hash of its last entry), written in the same
    # transaction as each entry: the chain alone cannot show that its last entries were removed.
    audit_seq = fields.IntField(default=0)
    audit_hash = fields.CharField(max_length=64, default="0" * 64)
    officer_id: int
    card_id: int | None
    origin_unit_id: int
    handling_unit_id: int
    citizen_id: int
    handler_id: int | None

    class Meta:
        table = "case"


class CaseEvent(Model):
    """The case's append-only audit log. Its ``public`` entries are the citizen's timeline.

    Each entry is chained to the one before it in the same case: ``hash`` is the SHA-256 of the
    entry's canonical JSON including ``prev_hash`` (``api.services.timeline.entry_hash``), so an
    edited, removed or reordered entry breaks the chain (``python -m api.audit verify``).
    Entries are only ever written through ``api.services.timeline.record_event``.
    """

    id = fields.IntField(primary_key=True)
    # RESTRICT, not CASCADE / SET NULL: deleting a case or a staff account must not silently
    # remove or rewrite audit entries (执法全过程可回溯); accounts are disabled, never deleted.
    case: fields.ForeignKeyRelation[Case] = fields.ForeignKeyField(
        "models.Case", related_name="events", on_delete=fields.RESTRICT
    )
    seq = fields.IntField()  # 1, 2, 3 … within the case
    kind = fields.CharField(max_length=40)
    actor = fields.CharField(max_length=10)  # citizen | staff | system
    staff: fields.ForeignKeyNullableRelation[StaffUser] = fields.ForeignKeyField(
        "models.StaffUser", related_name="case_events", null=True, on_delete=fields.RESTRICT
    )
    public = fields.BooleanField(default=True)
    text = fields.TextField()
    data: fields.Field[dict[str, Any]] = fields.JSONField(default=dict)
    created_at = fields.DatetimeField()
    prev_hash = fields.CharField(max_length=64)  # hex SHA-256; 64 zeros for seq 1
    hash = fields.CharField(max_length=64)  # hex SHA-256 of this entry
    case_id: int
    staff_id: int | None

    class Meta:
        table = "case_event"
        ordering = ("case_id", "seq")
        unique_together = (("case", "seq"),)
