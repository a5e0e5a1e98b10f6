"""Burst flags on ratings: flagged for review, never hidden or dropped (DOMAIN.md).

Two rules, each a count within a sliding window (settings, 0 switches a rule off):
- ``officer_burst``: ``burst_officer_ratings`` (10) ratings of one officer within
  ``burst_officer_minutes`` (10);
- ``citizen_burst``: one citizen rating ``burst_citizen_officers`` (5) different officers within
  ``burst_citizen_minutes`` (60).
When a rule fires, every rating of the burst is flagged (the earlier ones too), each with the rule
as a reason (``rating_bursts``, when a rating is stored). Verified ratings are not exempt: the
officer hands out the codes.

A reviewer (capability ``rating.review``, in their unit's subtree) confirms or clears a flag with a
note; each decision is a ``RatingReview`` row. A confirmed rating is left out of the assessment
(``assessable``); a cleared one counts like any other and is not flagged again.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from tortoise.expressions import Q
from tortoise.functions import Count
from tortoise.transactions import in_transaction

from api import clock
from api.errors import Conflict, NotFound
from api.models import Evaluation, RatingReview, StaffUser, Unit
from api.schemas import RatingReviewCreate
from api.services import permissions
from api.services.context import Services
from api.services.moderation import shown_text
from api.services.redaction import written_safe
from api.texts import LEVELS


class FlagStatus:
    NONE = ""
    PENDING = "pending"
    CONFIRMED = "confirmed"
    CLEARED = "cleared"
    FLAGGED = ("pending", "confirmed", "cleared")


REASONS = {
    "officer_burst": "{minutes:g}分钟内该执法人员收到{count}条评价（阈值{threshold}条）",
    "citizen_burst": "同一用户{minutes:g}分钟内评价了{count}名执法人员（阈值{threshold}名）",
}
DECISIONS = {"confirm": FlagStatus.CONFIRMED, "clear": FlagStatus.CLEARED}


def assessable() -> Q:
    """Ratings that count in the assessment: all but those whose flag a reviewer confirmed."""
    return ~Q(flag_status=FlagStatus.CONFIRMED)


# --- the reviewer's queue --------------------------------------------------------------------------


def citizen_ref(services: Services, citizen_id: int | None) -> str | None:
    """A pseudonym: the reviewer sees that ratings share a user, never who the user is."""
    if citizen_id is None:
        return None
    key = services.settings.url_signing_key.encode()
    return hmac.new(key, f"citizen:{citizen_id}".encode(), hashlib.sha256).hexdigest()[:12]


async def _scope(user: StaffUser) -> Q:
    unit = await Unit.get(id=user.unit_id)
    return permissions.rating_scope(user, unit.path)


async def _view(services: Services, ev: Evaluation) -> dict[str, Any]:
    await ev.fetch_related("officer__unit", "case")
    reasons = [{**r, "text": REASONS[r["code"]].format(**r)} for r in ev.flag_reasons]
    return {
        "id": ev.id,
        "level": ev.level,
        "level_label": LEVELS.get(ev.level),
        # Held text never goes into lists, rejected text to no one; an anonymous 差评's comment
        # without its reporter.
        "comment": await written_safe(
            ev.case, shown_text(ev.comment, ev.content_status, may_review=False) or ""
        ),
        "verified": ev.verified,
        "created_at": clock.iso(ev.created_at),
        "flagged": ev.flagged,
        "flag_status": ev.flag_status,
        "flagged_at": clock.iso(ev.flagged_at),
        "reasons": reasons,
        "officer": {"name": ev.officer.name, "cert_no": ev.officer.cert_no},
        "unit": {"code": ev.officer.unit.code, "name": ev.officer.unit.name},
        "citizen_ref": citizen_ref(services, ev.citizen_id),
        "ticket_no": ev.case.ticket_no if ev.case else None,
    }


async def flagged(
    services: Services, user: StaffUser, *, status: str | None, limit: int
) -> dict[str, Any]:
    """Flagged ratings of the user's subtree (pending unless ``status`` says), newest first."""
    permissions.require(user, permissions.RATING_REVIEW)
    scope = await _scope(user)
    rows = (
        await Evaluation.filter(scope, flag_status=status or FlagStatus.PENDING)
        .order_by("-flagged_at", "-id")
        .limit(limit)
    )
    counts = (
        await Evaluation.filter(scope, flag_status__in=FlagStatus.FLAGGED)
        .annotate(n=Count("id"))
        .group_by("flag_status")
        .values("flag_status", "n")
    )
    return {
        "items": [await _view(services, ev) for ev in rows],
        "counts": {s: 0 for s in FlagStatus.FLAGGED} | {r["flag_status"]: r["n"] for r in counts},
    }


def _evaluation_id(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and 0 < int(raw) < 2**31 else None


async def review(
    services: Services, user: StaffUser, raw_id: str, body: RatingReviewCreate
) -> dict[str, Any]:
    """Confirms or clears a flag; every decision (also a reversal) is a ``RatingReview`` row."""
    permissions.require(user, permissions.RATING_REVIEW)
    ident = _evaluation_id(raw_id)
    found = ident is not None and (
        await Evaluation.filter(
            await _scope(user), id=ident, flag_status__in=FlagStatus.FLAGGED
        ).exists()
    )
    if not found:
        raise NotFound("未找到该被标记的评价", code="flagged_rating_not_found")
    decision = DECISIONS[body.decision]
    async with in_transaction() as conn:
        ev = await Evaluation.filter(id=ident).select_for_update().using_db(conn).get()
        if ev.flag_status == decision:
            raise Conflict("该评价已是此审核结果", code="flag_already_reviewed")
        await RatingReview.create(
            evaluation_id=ev.id,
            staff_id=user.id,
            decision=decision,
            previous_status=ev.flag_status,
            note=body.note,
            created_at=clock.now(),
            using_db=conn,
        )
        ev.flag_status = decision
        ev.flagged = decision == FlagStatus.CONFIRMED
        await ev.save(update_fields=["flag_status", "flagged"], using_db=conn)
    view = await _view(services, ev)
    view["reviews"] = await _reviews(ev.id)
    return view


async def _reviews(evaluation_id: int) -> list[dict[str, Any]]:
    rows = (
        await RatingReview.filter(evaluation_id=evaluation_id)
        .order_by("id")
        .prefetch_related("staff")
    )
    return [
        {
            "decision": r.decision,
            "previous_status": r.previous_status,
            "note": r.note,
            "by": r.staff.name,
            "at": clock.iso(r.created_at),
        }
        for r in rows
    ]


async def summary(user: StaffUser) -> dict[str, Any]:
    """Ratings of the subtree: what counts in the assessment, and what is flagged, separately."""
    permissions.require(user, permissions.CASE_VIEW)
    scope = await _scope(user)
    by_status = {
        r["flag_status"]: r["n"]
        for r in await Evaluation.filter(scope)
        .annotate(n=Count("id"))
        .group_by("flag_status")
        .values("flag_status", "n")
    }
    levels = {
        r["level"]: r["n"]
        for r in await Evaluation.filter(scope & assessable())
        .annotate(n=Count("id"))
        .group_by("level")
        .values("level", "n")
    }
    counted = sum(levels.values())
    bad = sum(n for level, n in levels.items() if level <= 2)
    return {
        "total": sum(by_status.values()),
        "counted": counted,
        "verified": await Evaluation.filter(scope & assessable(), verified=True).count(),
        "flagged": {s: by_status.get(s, 0) for s in FlagStatus.FLAGGED},
        "levels": {str(level): levels.get(level, 0) for level in range(5, 0, -1)},
        "bad_rate": round(bad / counted, 4) if counted else None,
    }
