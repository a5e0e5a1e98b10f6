"""Roles are named sets of capabilities, checked here and nowhere else."""

from __future__ import annotations

from tortoise.expressions import Q

from api.errors import Forbidden
from api.models import StaffUser

CASE_VIEW = "case.view"
CASE_ACT = "case.act"
SMS_VIEW = "sms.view"
EXTENSION_APPROVE = "extension.approve"
STAFF_MANAGE = "staff.manage"
CALENDAR_MANAGE = "calendar.manage"  # the working-day override table (province only)
UNIT_MANAGE = "unit.manage"  # a unit's leader phone and hotline (own subtree)
CONTENT_REVIEW = "content.review"  # release or reject citizen content WeChat did not clear

ROLES: dict[str, frozenset[str]] = {
    "handler": frozenset({CASE_VIEW, CASE_ACT}),
    "supervisor": frozenset({CASE_VIEW, CASE_ACT, EXTENSION_APPROVE, CONTENT_REVIEW}),
    "unit_leader": frozenset({CASE_VIEW, EXTENSION_APPROVE}),
    "city_admin": frozenset(
        {CASE_VIEW, EXTENSION_APPROVE, STAFF_MANAGE, UNIT_MANAGE, CONTENT_REVIEW}
    ),
    "province_admin": frozenset(
        {
            CASE_VIEW,
            CASE_ACT,
            SMS_VIEW,
            EXTENSION_APPROVE,
            STAFF_MANAGE,
            CALENDAR_MANAGE,
            UNIT_MANAGE,
            CONTENT_REVIEW,
        }
    ),
}

ROLE_NAMES = {
    "handler": "办理人员",
    "supervisor": "督察/法制科室",
    "unit_leader": "单位负责人",
    "city_admin": "市级管理员",
    "province_admin": "省级管理员",
}


def can(user: StaffUser, capability: str) -> bool:
    return capability in ROLES.get(user.role, frozenset())


def require(user: StaffUser, capability: str) -> None:
    if not can(user, capability):
        raise Forbidden(
            "您的角色无权进行此操作", code="capability_missing", details={"capability": capability}
        )


def case_scope(user: StaffUser, unit_path: str) -> Q:
    """Cases a staff member may see: their unit's subtree, never a case about themself."""
    scope = Q(handling_path__startswith=unit_path)
    if user.officer_id is not None:
        scope &= ~Q(officer_id=user.officer_id)
    return scope


# --- integrity of ratings (api/services/encounters.py, api/services/rating_flags.py) ---------------
RATING_REVIEW = "rating.review"  # the flagged-ratings queue: 督察/法制 and admins
ENCOUNTER_ISSUE = "encounter.issue"  # an encounter code on behalf of an officer of one's own unit

for _role, _extra in {
    "handler": {ENCOUNTER_ISSUE},
    "supervisor": {ENCOUNTER_ISSUE, RATING_REVIEW},
    "unit_leader": {ENCOUNTER_ISSUE},
    "city_admin": {RATING_REVIEW},
    "province_admin": {RATING_REVIEW},
}.items():
    ROLES[_role] = ROLES[_role] | _extra

# --- 群众监督员 (api/services/public_supervisors.py) ---------------------------------------------
CITIZEN_APPOINT = "citizen.appoint"  # appoint or end a citizen's appointment as public supervisor
for _role in ("city_admin", "province_admin"):
    ROLES[_role] = ROLES[_role] | {CITIZEN_APPOINT}


def rating_scope(user: StaffUser, unit_path: str) -> Q:
    """Ratings a staff member may see: officers of their unit's subtree, never themself."""
    scope = Q(officer__unit__path__startswith=unit_path)
    if user.officer_id is not None:
        scope &= ~Q(officer_id=user.officer_id)
    return scope
