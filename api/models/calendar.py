from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class CalendarOverride(Model):
    """An admin's correction of the official calendar for one date."""

    id = fields.IntField(primary_key=True)
    date = fields.DateField(unique=True)
    is_workday = fields.BooleanField()
    note = fields.CharField(max_length=200, default="")

    class Meta:
        table = "calendar_override"


class CalendarGap(Model):
    """A year the official calendar (chinesecalendar) does not know, found by the daily check or
    by a deadline that reached into it: the durable record behind the admin alert (sent once,
    ``alerted_at``) and the ``/healthz`` flag, whichever process found it."""

    id = fields.IntField(primary_key=True)
    year = fields.IntField(unique=True)
    detected_at = fields.DatetimeField()
    alerted_at = fields.DatetimeField(null=True)

    class Meta:
        table = "calendar_gap"
