from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from api.models.case import Case
    from api.models.clock import EscalationStep


class OutboxStatus:
    PENDING = "pending"
    SENDING = "sending"  # claimed under a lease, or merged into a digest being sent
    SENT = "sent"
    FAILED = "failed"  # permanent error, or transient errors beyond the last attempt
    # Two attempts whose outcome is unknown (worker killed / answer lost): the provider may have
    # taken it; a third request is never made. Reconcile by ``out_id`` (QuerySendDetails).
    UNCONFIRMED = "unconfirmed"

    ALL = (PENDING, SENDING, SENT, FAILED, UNCONFIRMED)


class SmsOutbox(Model):
    """An SMS written in the same transaction as what caused it, sent later by the worker."""

    id = fields.IntField(primary_key=True)
    phone = fields.CharField(max_length=11)
    template = fields.CharField(max_length=40)  # a key of config/sms.toml [templates]
    params: fields.Field[dict[str, Any]] = fields.JSONField(default=dict)
    purpose = fields.CharField(max_length=40)
    urgent = fields.BooleanField(default=False)
    case: fields.ForeignKeyNullableRelation[Case] = fields.ForeignKeyField(
        "models.Case", related_name="sms", null=True, on_delete=fields.SET_NULL
    )
    step: fields.ForeignKeyNullableRelation[EscalationStep] = fields.ForeignKeyField(
        "models.EscalationStep", related_name="sms", null=True, on_delete=fields.SET_NULL
    )
    status = fields.CharField(max_length=12, default=OutboxStatus.PENDING)
    attempts = fields.IntField(default=0)
    # Attempts that may have reached Aliyun without us learning the answer: at most one resend.
    uncertain_attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField()
    lease_until = fields.DatetimeField(null=True)
    claimed_at = fields.DatetimeField(null=True)  # first claim: anchors the phone's digest window
    # The digest row that carried this reminder (several reminders for one phone, one SMS).
    merged_into: fields.ForeignKeyNullableRelation[SmsOutbox] = fields.ForeignKeyField(
        "models.SmsOutbox", related_name="merged", null=True, on_delete=fields.SET_NULL
    )
    # Our idempotency key towards Aliyun (SendSms ``OutId``): a resend reuses it.
    out_id = fields.CharField(max_length=40, unique=True)
    biz_id = fields.CharField(max_length=60, null=True)
    last_error = fields.CharField(max_length=200, null=True)
    created_at = fields.DatetimeField()
    sent_at = fields.DatetimeField(null=True)
    case_id: int | None
    step_id: int | None
    merged_into_id: int | None

    class Meta:
        table = "sms_outbox"
        indexes = (("status", "next_attempt_at"), ("phone", "claimed_at"))
