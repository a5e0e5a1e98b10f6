"""WeChat subscribe messages: the citizen's one-time consents and the outbox of messages."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from api.models.case import Case
    from api.models.citizen import Citizen


class ConsentStatus:
    AVAILABLE = "available"
    USED = "used"  # carried by one outbox row: one message per accept
    SPENT = "spent"  # WeChat answered 43101: it holds no consent for this template any more

    ALL = (AVAILABLE, USED, SPENT)


class SubscribeConsent(Model):
    """One accept of a template in wx.requestSubscribeMessage: WeChat allows one message for it."""

    id = fields.IntField(primary_key=True)
    citizen: fields.ForeignKeyRelation[Citizen] = fields.ForeignKeyField(
        "models.Citizen", related_name="subscribe_consents", on_delete=fields.CASCADE
    )
    # Given when the citizen subscribed on a case's page: used for that case first.
    case: fields.ForeignKeyNullableRelation[Case] = fields.ForeignKeyField(
        "models.Case", related_name="subscribe_consents", null=True, on_delete=fields.CASCADE
    )
    template_id = fields.CharField(max_length=64)
    status = fields.CharField(max_length=12, default=ConsentStatus.AVAILABLE)
    created_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)
    citizen_id: int
    case_id: int | None

    class Meta:
        table = "subscribe_consent"
        indexes = (("citizen_id", "template_id", "status"),)


class MessageStatus:
    PENDING = "pending"
    SENDING = "sending"  # claimed under a lease
    SENT = "sent"
    REFUSED = "refused"  # 43101: the user refused, or the consent was used up; never retried
    FAILED = "failed"  # permanent error, or transient errors beyond the last attempt

    ALL = (PENDING, SENDING, SENT, REFUSED, FAILED)
    FINAL = (SENT, REFUSED, FAILED)


class WeChatOutbox(Model):
    """A subscribe message written in the same transaction as the state change it tells of.

    Only the change is stored: the text is rendered when the worker sends it, from the case as it
    is then (anonymity, the current reply, the current handling unit).
    """

    id = fields.IntField(primary_key=True)
    case: fields.ForeignKeyRelation[Case] = fields.ForeignKeyField(
        "models.Case", related_name="wechat_messages", on_delete=fields.CASCADE
    )
    citizen: fields.ForeignKeyRelation[Citizen] = fields.ForeignKeyField(
        "models.Citizen", related_name="wechat_messages", on_delete=fields.CASCADE
    )
    # The consent this message uses up; unique, so one accept never carries two messages.
    consent: fields.OneToOneRelation[SubscribeConsent] = fields.OneToOneField(
        "models.SubscribeConsent", related_name="message", on_delete=fields.CASCADE
    )
    template_id = fields.CharField(max_length=64)
    event = fields.CharField(max_length=20)
    event_at = fields.DatetimeField()
    status = fields.CharField(max_length=12, default=MessageStatus.PENDING)
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField()
    lease_until = fields.DatetimeField(null=True)
    errcode = fields.IntField(null=True)
    last_error = fields.CharField(max_length=200, null=True)
    msgid = fields.CharField(max_length=40, null=True)
    created_at = fields.DatetimeField()
    sent_at = fields.DatetimeField(null=True)
    case_id: int
    citizen_id: int
    consent_id: int

    class Meta:
        table = "wechat_outbox"
        indexes = (("status", "next_attempt_at"),)
