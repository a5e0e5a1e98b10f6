"""群众监督员: administrators appoint citizens as public supervisors (DOMAIN.md, who uses it).

A citizen is named by the supervisor code their own profile shows (``GET /me``), never by an
openid: the citizen shows it to the administrator, who enters it. An appointment belongs to the
unit whose administrator made it and is managed from that unit's subtree; an appointment held
elsewhere answers exactly like an unknown code. Every change is an append-only
``PublicSupervisorChange`` row (who, which unit, when, why).

A public supervisor's reports and 差评 are marked and handled by the supervising unit, one level
above the officer's own (api/services/routing.py) — unless filed anonymously: then nothing about
the reporter reaches staff, that they are a supervisor included.
"""

from __future__ import annotations

import secrets
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from api import clock
from api.errors import NotFound
from api.models import Citizen, PublicSupervisorChange, StaffUser, Unit
from api.schemas import PublicSupervisorSet
from api.services import permissions
from api.services.cards import CODE_ALPHABET

CODE_LENGTH = 10  # 31**10 ≈ 2**50: typed by an administrator, not guessable in bulk
_ALPHABET = frozenset(CODE_ALPHABET)


def normalize_code(raw: str) -> str | None:
    code = raw.strip().upper().replace("-", "").replace(" ", "")
    return code if len(code) == CODE_LENGTH and _ALPHABET.issuperset(code) else None


async def supervisor_code(citizen: Citizen) -> str:
    """The citizen's code, made on first use (two first uses at once agree on one)."""
    while citizen.supervisor_code is None:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        try:
            await Citizen.filter(id=citizen.id, supervisor_code__isnull=True).update(
                supervisor_code=code
            )
        except IntegrityError:  # another citizen holds it (~2**-50): draw again
            continue
        await citizen.refresh_from_db(fields=["supervisor_code"])
    return citizen.supervisor_code


async def set_appointment(
    user: StaffUser, raw_code: str, body: PublicSupervisorSet
) -> dict[str, Any]:
    permissions.require(user, permissions.CITIZEN_APPOINT)
    own = await Unit.get(id=user.unit_id)
    code = normalize_code(raw_code)
    now = clock.now()
    async with in_transaction() as conn:
        citizen = (
            await Citizen.filter(supervisor_code=code).select_for_update().using_db(conn).first()
            if code
            else None
        )
        holder = (
            await Unit.get(id=citizen.public_supervisor_unit_id, using_db=conn)
            if citizen is not None and citizen.public_supervisor_unit_id is not None
            else None
        )
        if citizen is None or (holder is not None and not holder.path.startswith(own.path)):
            raise NotFound("未找到该监督员登记码", code="citizen_not_found")
        unit = holder if body.appointed and holder is not None else own
        citizen.is_public_supervisor = body.appointed
        citizen.public_supervisor_unit_id = unit.id if body.appointed else None
        citizen.public_supervisor_note = body.note
        if body.appointed and citizen.public_supervisor_since is None:
            citizen.public_supervisor_since = now
        elif not body.appointed:
            citizen.public_supervisor_since = None
        await citizen.save(
            using_db=conn,
            update_fields=[
                "is_public_supervisor",
                "public_supervisor_unit_id",
                "public_supervisor_note",
                "public_supervisor_since",
            ],
        )
        await PublicSupervisorChange.create(
            citizen_id=citizen.id,
            appointed=body.appointed,
            note=body.note,
            staff_id=user.id,
            unit_id=own.id,
            created_at=now,
            using_db=conn,
        )
    return {
        "supervisor_code": citizen.supervisor_code,
        "appointed": citizen.is_public_supervisor,
        "unit": {"code": unit.code, "name": unit.name} if body.appointed else None,
        "since": clock.iso(citizen.public_supervisor_since),
        "note": citizen.public_supervisor_note,
    }
