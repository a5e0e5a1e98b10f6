"""Encounter codes: a one-time code per encounter, so a rating through it is a verified encounter.

An officer opens the staff page and shows a dynamic QR (``{PUBLIC_BASE_URL}/c/{card}?e={code}``)
or writes the code on the penalty notice. The code is bound to the officer's card, lives
``encounter_code_minutes`` (10) and is consumed by the one rating made with it. An officer without a
staff account of their own gets a code from a colleague of the same unit (capability
``encounter.issue``); the issuer is recorded on the code either way.

A code that is expired, used or belongs to another card is refused with 422 and the rating is not
stored: the citizen is told, and can rate again without the code (an unverified rating).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from api import clock
from api.errors import Conflict, Forbidden, NotFound, ValidationFailed
from api.models import Card, EncounterCode, Officer, StaffUser
from api.schemas import EncounterCreate
from api.services import permissions
from api.services.card_lookup import active_card
from api.services.cards import CODE_ALPHABET, card_url
from api.services.clocks import Conn
from api.services.context import Services
from api.validation import field_error

CODE_LENGTH = 8  # 31**8 ≈ 2**39 per card, for ten minutes: short enough to type from a notice
_ALPHABET_SET = frozenset(CODE_ALPHABET)
RATE_WITHOUT = "您也可以不填写评价码直接评价"
PROBLEMS = {
    "encounter_code_invalid": "现场评价码无效，请核对后重试",
    "encounter_code_expired": "现场评价码已过期",
    "encounter_code_used": "现场评价码已被使用",
}


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(raw: str) -> str | None:
    """The canonical form of a code typed from a notice (any case, spaces and dashes allowed)."""
    code = raw.strip().upper().replace("-", "").replace(" ", "")
    if len(code) != CODE_LENGTH or not _ALPHABET_SET.issuperset(code):
        return None
    return code


def code_hash(services: Services, card_id: int, code: str) -> str:
    key = services.settings.url_signing_key.encode()
    return hmac.new(key, f"encounter:{card_id}:{code}".encode(), hashlib.sha256).hexdigest()


def qr_payload(services: Services, card_code: str, code: str) -> str:
    return f"{card_url(services.settings.public_base_url, card_code)}?e={code}"


# --- issuing -----------------------------------------------------------------------------------


async def _officer_for(user: StaffUser, cert_no: str | None) -> Officer:
    if cert_no is None:
        if user.officer_id is None:
            raise field_error("cert_no", "您的账号未关联执法人员，请填写执法证号")
        return await Officer.get(id=user.officer_id)
    officer = await Officer.get_or_none(cert_no=cert_no)
    if officer is None:
        raise NotFound("未找到该执法人员", code="officer_not_found")
    if officer.id != user.officer_id:
        permissions.require(user, permissions.ENCOUNTER_ISSUE)
        if officer.unit_id != user.unit_id:
            raise Forbidden("只能为本单位的执法人员生成评价码", code="officer_out_of_scope")
    return officer


async def _card_of(officer: Officer) -> Card:
    if not officer.active:
        raise Conflict("该执法人员已停用，不能生成评价码", code="officer_inactive")
    card = await Card.filter(officer_id=officer.id, revoked_at__isnull=True).order_by("-id").first()
    if card is None:
        raise Conflict("该执法人员没有在用的评议卡", code="no_active_card")
    return card


async def issue(services: Services, user: StaffUser, body: EncounterCreate) -> dict[str, Any]:
    """A new code for the officer's card (their own, or a colleague's of the same unit)."""
    officer = await _officer_for(user, body.cert_no)
    card = await _card_of(officer)
    now = clock.now()
    expires_at = now + timedelta(minutes=services.settings.encounter_code_minutes)
    for _attempt in range(5):  # a clash with an earlier code of the same card is ~2**-39
        code = new_code()
        try:
            async with in_transaction() as conn:
                await EncounterCode.create(
                    card_id=card.id,
                    officer_id=officer.id,
                    code_hash=code_hash(services, card.id, code),
                    issued_by_id=user.id,
                    issued_at=now,
                    expires_at=expires_at,
                    using_db=conn,
                )
            break
        except IntegrityError:
            continue
    else:  # pragma: no cover - five clashes in a row do not happen
        raise Conflict("评价码生成失败，请重试", code="encounter_code_clash")
    return {
        "code": code,
        "qr_payload": qr_payload(services, card.code, code),
        "expires_at": clock.iso(expires_at),
        "card_code": card.code,
        "officer": {"name": officer.name, "cert_no": officer.cert_no},
    }


# --- checking and consuming ----------------------------------------------------------------------


def _problem(row: EncounterCode | None, now: datetime) -> str | None:
    if row is None:
        return "encounter_code_invalid"
    if row.used_at is not None:
        return "encounter_code_used"
    if row.expires_at <= now:
        return "encounter_code_expired"
    return None


def refused(problem: str) -> ValidationFailed:
    reason = PROBLEMS[problem]
    return ValidationFailed(
        f"{reason}；{RATE_WITHOUT}",
        code=problem,
        details={"fields": [{"field": "encounter_code", "reason": reason, "type": "value_error"}]},
    )


async def consume(services: Services, *, card: Card, raw: str, now: datetime, conn: Conn) -> int:
    """Marks the code used by a rating being stored in ``conn``'s transaction; its id, else 422.

    The row lock makes two ratings with one code take turns: the second finds it used.
    """
    code = normalize_code(raw)
    row = None
    if code is not None:
        row = (
            await EncounterCode.filter(
                card_id=card.id, code_hash=code_hash(services, card.id, code)
            )
            .select_for_update()
            .using_db(conn)
            .first()
        )
    problem = _problem(row, now)
    if problem is not None or row is None:
        raise refused(problem or "encounter_code_invalid")
    row.used_at = now
    await row.save(update_fields=["used_at"], using_db=conn)
    return row.id


async def link(encounter_id: int, evaluation_id: int, *, conn: Conn) -> None:
    await EncounterCode.filter(id=encounter_id).using_db(conn).update(evaluation_id=evaluation_id)


async def describe(services: Services, card_code: str, raw: str) -> dict[str, Any]:
    """What the card page says about an ``?e=`` code: valid (until when) or why not."""
    card = await active_card(card_code)
    code = normalize_code(raw)
    row = None
    if code is not None:
        row = await EncounterCode.get_or_none(
            card_id=card.id, code_hash=code_hash(services, card.id, code)
        )
    problem = _problem(row, clock.now())
    if problem is not None or row is None:
        problem = problem or "encounter_code_invalid"
        return {"valid": False, "code": problem, "message": f"{PROBLEMS[problem]}；{RATE_WITHOUT}"}
    return {"valid": True, "expires_at": clock.iso(row.expires_at), "message": "现场评价码有效"}
