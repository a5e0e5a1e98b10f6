from __future__ import annotations

from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from api.models.evaluation import Evaluation


class CaseIntake(Model):
    """A 差评 whose follow-up case is still to be opened (written in the rating's transaction).

    Opened by the worker, or at once when its citizen asks for it, as of the rating: the ticket
    number the citizen was given, the rating's time as the time of receipt, the SLA profile then in
    force and whether the citizen was a 群众监督员 then.
    """

    id = fields.IntField(primary_key=True)
    evaluation: fields.ForeignKeyRelation[Evaluation] = fields.OneToOneField(
        "models.Evaluation", related_name="intake", on_delete=fields.CASCADE
    )
    ticket_no = fields.CharField(max_length=20, unique=True)
    received_at = fields.DatetimeField()
    sla_profile = fields.CharField(max_length=40)
    from_public_supervisor = fields.BooleanField(default=False)

    evaluation_id: int

    class Meta:
        table = "case_intake"
