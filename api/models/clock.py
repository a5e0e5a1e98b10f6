"""Timers are data: each SLA clock of a case and each escalation step of a clock is a row."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from api.models.case import Case


class ClockStatus:
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class StepStatus:
    PENDING = "pending"
    FIRED = "fired"
    CANCELLED = "cancelled"


class CaseClock(Model):
    id = fields.IntField(primary_key=True)
    case: fields.ForeignKeyRelation[Case] = fields.ForeignKeyField(
        "models.Case", related_name="clocks", on_delete=fields.CASCADE
    )
    kind = fields.CharField(max_length=30)
    status = fields.CharField(max_length=10, default=ClockStatus.RUNNING)
    limit_amount = fields.FloatField()
    limit_unit = fields.CharField(max_length=20)
    started_at = fields.DatetimeField()
    due_at = fields.DatetimeField()
    # Where the ladder's fractions are measured from; moves with pauses so warnings move too.
    ladder_start = fields.DatetimeField(null=True)
    paused_at = fields.DatetimeField(null=True)
    stopped_at = fields.DatetimeField(null=True)
    breached_at = fields.DatetimeField(null=True)
    # Bumped whenever the deadline moves; steps belong to one generation.
    generation = fields.IntField(default=0)
    case_id: int

    class Meta:
        table = "case_clock"
        unique_together = (("case", "kind"),)


class EscalationStep(Model):
    id = fields.IntField(primary_key=True)
    clock: fields.ForeignKeyRelation[CaseClock] = fields.ForeignKeyField(
        "models.CaseClock", related_name="steps", on_delete=fields.CASCADE
    )
    case: fields.ForeignKeyRelation[Case] = fields.ForeignKeyField(
        "models.Case", related_name="steps", on_delete=fields.CASCADE
    )
    step = fields.CharField(max_length=20)
    generation = fields.IntField(default=0)
    due_at = fields.DatetimeField()
    status = fields.CharField(max_length=10, default=StepStatus.PENDING)
    fired_at = fields.DatetimeField(null=True)
    clock_id: int
    case_id: int

    class Meta:
        table = "escalation_step"
        unique_together = (("clock", "step", "generation"),)
        # The claim (due_steps) reads pending steps in (due_at, id) order: this index serves it.
        indexes = (("status", "due_at", "id"),)
