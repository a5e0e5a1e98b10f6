"""Tortoise models, one module per aggregate."""

from api.models.auth import AuthSession
from api.models.calendar import CalendarOverride
from api.models.case import Case, CaseEvent
from api.models.citizen import Citizen
from api.models.clock import CaseClock, EscalationStep
from api.models.disclosure import UnitDisclosure
from api.models.evaluation import Evaluation
from api.models.evidence import Evidence
from api.models.extension import ExtensionRequest
from api.models.org import Card, Officer, Unit
from api.models.outbox import SmsOutbox
from api.models.staff import SecurityEvent, StaffUser

MODEL_MODULES = [
    "api.models.auth",
    "api.models.calendar",
    "api.models.case",
    "api.models.citizen",
    "api.models.clock",
    "api.models.disclosure",
    "api.models.evaluation",
    "api.models.evidence",
    "api.models.extension",
    "api.models.org",
    "api.models.outbox",
    "api.models.staff",
]

__all__ = [
    "MODEL_MODULES",
    "AuthSession",
    "CalendarOverride",
    "Card",
    "Case",
    "CaseClock",
    "CaseEvent",
    "Citizen",
    "EscalationStep",
    "Evaluation",
    "Evidence",
    "ExtensionRequest",
    "Officer",
    "SecurityEvent",
    "SmsOutbox",
    "StaffUser",
    "Unit",
    "UnitDisclosure",
]
