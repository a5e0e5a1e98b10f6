"""Content security (内容安全) of what citizens write: WeChat msgSecCheck v2, then people.

Every free text a citizen submits is checked before anything is stored (outside the transaction:
no row lock waits on WeChat). The verdicts:

* ``pass``: stored and shown as usual.
* ``risky``: refused with 422 ``content_risky``; nothing is stored.
* ``review``, or any WeChat error or timeout: the submission is *accepted* — a complaint is never
  lost and its clocks start — but the text is *held* (fail closed): a ``ContentHold`` row names it,
  the record's ``content_status`` is ``held``, and until a reviewer (``content.review``) releases it
  only reviewers see it; everyone else sees a placeholder. It never goes into SMS or lists.

Decisions are appended to the case's audit log (``content_held`` / ``content_released`` /
``content_rejected``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from api import clock
from api.errors import ValidationFailed
from api.integrations.wechat import WeChatError
from api.models import Case, Citizen, ContentHold, Evaluation, Evidence
from api.models.moderation import ContentStatus
from api.services.clocks import Conn
from api.services.context import Services
from api.services.session_cache import CitizenIdentity
from api.services.timeline import record_event

log = logging.getLogger("pingyi.moderation")

# msgSecCheck v2 scenes: 1 资料, 2 评论, 3 论坛, 4 社交日志.
SCENE_PROFILE = 1
SCENE_COMMENT = 2
SCENE_POST = 3

HELD_TEXT = "【内容待人工审核】"
REJECTED_TEXT = "【内容未通过审核，已隐藏】"
FIELD_LABELS = {
    "description": "问题描述",
    "location": "地点",
    "comment": "评价意见",
    "feedback_comment": "评价意见",
    "feedback_reason": "复核理由",
    "supplement": "补充材料",
    "photo": "证据照片",
}


class ContentRisky(ValidationFailed):
    code = "content_risky"
    message = "提交的内容含有违法违规信息，未能提交，请修改后重试"


@dataclass(frozen=True)
class Verdict:
    """One text's outcome: ``ok`` or ``held`` (with why); risky ones never get this far."""

    field: str
    text: str
    status: str  # ok | held
    reason: str = ""  # review | check_failed
    detail: str = ""


@dataclass(frozen=True)
class Screening:
    verdicts: tuple[Verdict, ...] = ()

    @property
    def held(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == ContentStatus.HELD]

    @property
    def status(self) -> str:
        return ContentStatus.HELD if self.held else ContentStatus.OK

    def is_held(self, field: str) -> bool:
        return any(v.field == field for v in self.held)


async def screen_texts(
    services: Services, citizen: Citizen | CitizenIdentity, texts: dict[str, str], *, scene: int
) -> Screening:
    """Checks the non-empty texts at once; raises ``ContentRisky`` if any of them is risky."""
    fields = [(name, text) for name, text in texts.items() if text.strip()]
    if not fields:
        return Screening()  # nothing to ask WeChat (most ratings carry no comment)
    verdicts = await asyncio.gather(
        *(_check(services, citizen, name, text, scene) for name, text in fields)
    )
    risky = [v.field for v in verdicts if v.status == "risky"]
    if risky:
        raise ContentRisky(
            details={
                "fields": [
                    {"field": name, "reason": "内容违规", "type": "content_risky"} for name in risky
                ]
            }
        )
    return Screening(tuple(verdicts))


async def _check(
    services: Services, citizen: Citizen | CitizenIdentity, field: str, text: str, scene: int
) -> Verdict:
    # The gateway runs wechatpy in a thread with its own HTTP timeout; this bound is the one the
    # citizen waits for. Whatever goes wrong, the text is held, never passed unchecked.
    try:
        suggest = await asyncio.wait_for(
            services.wechat.msg_sec_check(openid=citizen.openid, content=text, scene=scene),
            timeout=services.settings.content_check_timeout,
        )
    except TimeoutError:
        log.warning("msgSecCheck timed out (%s): text held", field)
        return Verdict(field, text, ContentStatus.HELD, "check_failed", "timeout")
    except WeChatError as exc:
        log.warning("msgSecCheck failed (%s): errcode %s: text held", field, exc.errcode)
        return Verdict(field, text, ContentStatus.HELD, "check_failed", f"errcode {exc.errcode}")
    if suggest == "pass":
        return Verdict(field, text, ContentStatus.OK)
    if suggest == "risky":
        return Verdict(field, text, "risky")
    return Verdict(field, text, ContentStatus.HELD, "review", "suggest review")


async def hold_texts(
    screening: Screening,
    *,
    citizen_id: int,
    case: Case | None = None,
    evaluation_id: int | None = None,
    conn: Conn,
) -> list[ContentHold]:
    """Records the held texts of one submission (inside its transaction)."""
    holds = [
        await ContentHold.create(
            citizen_id=citizen_id,
            case_id=case.id if case else None,
            evaluation_id=evaluation_id,
            field=v.field,
            text=v.text,
            reason=v.reason,
            detail=v.detail[:200],
            created_at=clock.now(),
            using_db=conn,
        )
        for v in screening.held
    ]
    if holds and evaluation_id is not None and any(h.field == "comment" for h in holds):
        await (
            Evaluation.filter(id=evaluation_id)
            .using_db(conn)
            .update(content_status=ContentStatus.HELD)
        )
    if holds and case is not None:
        await _mark_case_held(case, holds, conn)
    return holds


async def hold_photos(photos: list[Evidence], case: Case, *, conn: Conn) -> None:
    """Photos held at upload (their check failed) join the case's holds once attached."""
    held = [p.id for p in photos if p.content_status == ContentStatus.HELD]
    if not held:
        return
    await (
        ContentHold.filter(evidence_id__in=held, case_id=None)
        .using_db(conn)
        .update(case_id=case.id)
    )
    holds = await ContentHold.filter(evidence_id__in=held, case_id=case.id).using_db(conn)
    await _mark_case_held(case, holds, conn)


async def attach_holds(holds: list[ContentHold], case: Case, *, conn: Conn) -> None:
    """Holds recorded before their case existed (a 差评's comment) join it once it is opened."""
    if not holds:
        return
    ids = [h.id for h in holds]
    await ContentHold.filter(id__in=ids).using_db(conn).update(case_id=case.id)
    await _mark_case_held(case, holds, conn)


async def _mark_case_held(case: Case, holds: list[ContentHold], conn: Conn) -> None:
    case.content_status = ContentStatus.HELD
    case.version += 1
    await case.save(using_db=conn, update_fields=["content_status", "version"])
    for hold in holds:
        await record_event(
            case,
            "content_held",
            public=False,
            conn=conn,
            field=FIELD_LABELS.get(hold.field, hold.field),
            data={"hold_id": hold.id, "field": hold.field, "reason": hold.reason},
        )


async def held_photo(
    *, citizen_id: int, evidence_id: object, detail: str, conn: Conn = None
) -> ContentHold:
    """A photo whose check could not be completed: held until a reviewer decides."""
    return await ContentHold.create(
        citizen_id=citizen_id,
        evidence_id=evidence_id,
        field="photo",
        reason="check_failed",
        detail=detail[:200],
        created_at=clock.now(),
        using_db=conn,
    )


# --- how held content looks (api/services/views.py) -------------------------------------------


def shown_text(text: str | None, status: str | None, *, may_review: bool) -> str | None:
    """A text as staff see it: held text only for reviewers, rejected text for no one."""
    if status == ContentStatus.HELD and not may_review:
        return HELD_TEXT
    if status == ContentStatus.REJECTED:
        return REJECTED_TEXT
    return text


def field_status(holds: list[ContentHold], field: str) -> str | None:
    """The state of a case field's latest hold (None: never held)."""
    states = [h.status for h in holds if h.field == field]
    return states[-1] if states else None


def holds_view(holds: list[ContentHold], *, may_review: bool) -> list[dict[str, object]]:
    return [
        {
            "id": h.id,
            "field": h.field,
            "field_label": FIELD_LABELS.get(h.field, h.field),
            "status": h.status,
            "reason": h.reason,
            "created_at": clock.iso(h.created_at),
            "decided_at": clock.iso(h.decided_at),
            # The text itself only to a reviewer deciding on it, never once rejected.
            "text": h.text if may_review and h.status == ContentStatus.HELD else None,
        }
        for h in holds
    ]
