"""Tortoise models, one module per aggregate."""

from api.models.auth import AuthSession
from api.models.calendar import CalendarGap, CalendarOverride
from api.models.case import Case, CaseEvent
from api.models.citizen import Citizen, PublicSupervisorChange
from api.models.clock import CaseClock, EscalationStep
from api.models.disclosure import UnitDisclosure
from api.models.evaluation import Evaluation
from api.models.evidence import Evidence
from api.models.extension import ExtensionRequest
from api.models.intake import CaseIntake
from api.models.integrity import EncounterCode, RatingReview
from api.models.moderation import ContentHold
from api.models.org import Card, Officer, Unit
from api.models.outbox import SmsOutbox
from api.models.staff import SecurityEvent, StaffUser
from api.models.subscribe import SubscribeConsent, WeChatOutbox

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
    "api.models.intake",
    "api.models.moderation",
    "api.models.integrity",
    "api.models.org",
    "api.models.outbox",
    "api.models.staff",
    "api.models.subscribe",
]

__all__ = [
    "MODEL_MODULES",
    "AuthSession",
    "CalendarGap",
    "CalendarOverride",
    "Card",
    "Case",
    "CaseClock",
    "CaseEvent",
    "CaseIntake",
    "Citizen",
    "ContentHold",
    "EncounterCode",
    "EscalationStep",
    "Evaluation",
    "Evidence",
    "ExtensionRequest",
    "Officer",
    "PublicSupervisorChange",
    "RatingReview",
    "SecurityEvent",
    "SmsOutbox",
    "StaffUser",
    "SubscribeConsent",
    "Unit",
    "UnitDisclosure",
    "WeChatOutbox",
]
