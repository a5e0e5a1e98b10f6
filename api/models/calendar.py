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
