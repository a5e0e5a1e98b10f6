"""The machinery of the permission matrix (tests/test_permissions.py): the things a route acts on,
made fresh in the database; calling a route as one account; classifying the answer.

Nothing here knows who may do what: the expectations live in tests/test_permissions.py.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import httpx

from api import clock
from api.models import (
    CalendarOverride,
    Card,
    Case,
    CaseClock,
    Citizen,
    ContentHold,
    Evaluation,
    ExtensionRequest,
    Officer,
    StaffUser,
    Unit,
    UnitDisclosure,
)
from api.schemas import ComplaintCreate, ExtensionCreate
from api.services import citizen_cases, staff_cases
from api.services.context import Services
from tests.support import officer_with_card, staff

HIDDEN, DENIED, ALLOWED = "hidden", "denied", "allowed"
ITEM, LIST, COUNT = "item", "list", "count"  # how a route's answer shows its target
_serial = itertools.count(1)


@dataclass(frozen=True)
class Placement:
    """Where the calling account sits relative to what the route acts on (a case, a unit …)."""

    label: str
    kind: str  # "county": the target is at 430102; "city": at 4301 (a serious case goes there)
    unit: str  # the calling account's unit
    accused: bool = False  # the account is linked to the officer the cases are about


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str  # as registered
    target: str  # a Targets method: what the route acts on
    rule: Callable[[str, Placement], tuple[str, str | None]]  # (role, where) → expectation
    shape: str = ITEM
    state: str = "received"  # for case targets: what the case is brought to first
    body: dict[str, Any] | None = None
    query: dict[str, Any] | None = None
    mutates: bool = True  # an allowed call changes the target: the next cell gets a fresh one
    not_found: str | None = None  # the error code of a hidden target (ITEM shape)


@dataclass
class Target:
    params: dict[str, str]  # the path parameters that name it
    listed: Any = None  # how it appears in a list (LIST shape)
    body: dict[str, Any] = field(default_factory=dict)  # what the body needs to name it
    fingerprint: Callable[[], Awaitable[Any]] | None = None


@dataclass
class Cell:
    route: Route
    role: str
    where: Placement
    want: str = ""
    want_code: str | None = None
    got: str = ""
    status: int = 0
    code: str | None = None
    note: str = ""

    def __str__(self) -> str:
        want_code = f" ({self.want_code})" if self.want_code else ""
        return (
            f"{self.route.method} {self.route.name} | {self.role} @ {self.where.label}: "
            f"expected {self.want}{want_code}, got {self.got} [{self.status} {self.code or ''}]"
            f"{f' {self.note}' if self.note else ''}"
        )


async def _rows(model: Any, **where: Any) -> list[dict[str, Any]]:
    return list(await model.filter(**where).order_by("id").values())


class Targets:
    """Fresh things for a route to act on, placed at the unit of the placement's kind."""

    def __init__(self, services: Services, units: dict[str, str]) -> None:
        self.services, self.units = services, units  # kind → unit code
        self.card_code = ""  # the accused officer's card: complaints are filed through it
        self.citizen: Citizen | None = None
        self.officers: dict[str, Officer] = {}  # kind → the officer a rating or code is about
        self.handlers: dict[str, StaffUser] = {}  # kind → a plain handler of that unit
        self.cases = 0

    # --- cases ---------------------------------------------------------------------------------

    async def case(self, kind: str, state: str, categories: dict[str, str]) -> Target:
        """A case about the accused officer, routed to the kind's unit, brought to ``state``."""
        assert self.citizen is not None
        self.cases += 1
        body = ComplaintCreate(
            card_code=self.card_code,
            categories=[categories[kind]],
            description=f"权限矩阵测试案件 {self.cases}",
            phone="13800138000",
        )
        filed = await citizen_cases.file_complaint(self.services, self.citizen, body)
        ticket: str = filed["ticket_no"]
        assert filed["case"]["handling_unit"]["code"] == self.units[kind], filed
        await self._bring(ticket, self.handlers[kind], state)
        return Target({"ticket_no": ticket}, listed=ticket, fingerprint=lambda: _case_print(ticket))

    async def _bring(self, ticket: str, user: StaffUser, state: str) -> None:
        if state == "received":
            return
        await staff_cases.acknowledge(user, ticket)
        if state == "extension_pending":
            extension = ExtensionCreate(days=3, reason="需调取外地执法记录")
            await staff_cases.request_extension(self.services, user, ticket, extension)
        elif state == "feedback_window_over":
            await staff_cases.reply(self.services, user, ticket, "经核实，已处理")
            # The citizen's 7-day window ends now (the tokens would not survive moving the clock).
            await CaseClock.filter(case__ticket_no=ticket, kind="feedback_window").update(
                due_at=clock.now() - timedelta(minutes=1)
            )
        else:
            assert state == "acknowledged", state

    async def hold(self, kind: str, categories: dict[str, str]) -> Target:
        """A case whose description WeChat did not clear: held for a reviewer."""
        case = await self.case(kind, "received", categories)
        ticket = case.params["ticket_no"]
        row = await Case.get(ticket_no=ticket)
        hold = await ContentHold.create(
            case_id=row.id,
            citizen_id=row.citizen_id,
            field="description",
            text=row.description,
            reason="review",
            created_at=clock.now(),
        )
        await Case.filter(id=row.id).update(content_status="held")

        async def fingerprint() -> Any:
            return (await _case_print(ticket), await _rows(ContentHold, id=hold.id))

        return Target(
            {"ticket_no": ticket, "hold_id": str(hold.id)}, listed=hold.id, fingerprint=fingerprint
        )

    # --- ratings, officers, cards ---------------------------------------------------------------

    async def rating(self, kind: str) -> Target:
        """A flagged rating of the kind's officer, waiting for a reviewer."""
        officer = self.officers[kind]
        card = await Card.filter(officer_id=officer.id, revoked_at__isnull=True).first()
        assert card is not None
        now = clock.now()
        ev = await Evaluation.create(
            card_id=card.id,
            officer_id=officer.id,
            level=1,
            created_at=now,
            flagged=True,
            flag_status="pending",
            flagged_at=now,
            flag_reasons=[{"code": "officer_burst", "count": 10, "minutes": 10, "threshold": 10}],
        )
        return Target(
            {"evaluation_id": str(ev.id)},
            listed=ev.id,
            fingerprint=lambda: _rows(Evaluation, id=ev.id),
        )

    async def officer(self, kind: str) -> Target:
        """The kind's officer, named by certificate number in the body (encounter codes)."""
        officer = self.officers[kind]
        return Target({}, body={"cert_no": officer.cert_no}, fingerprint=_constant)

    async def new_officer(self, kind: str) -> Target:
        """An officer of its own with a card, in the kind's unit (a card reissued, revoked)."""
        n = next(_serial)
        officer, card = await officer_with_card(
            self.units[kind], f"矩阵执法{n}", f"4399{n:07d}{len(kind)}"
        )

        async def fingerprint() -> Any:
            return await _rows(Card, officer_id=officer.id)

        return Target({"cert_no": officer.cert_no, "code": card.code}, fingerprint=fingerprint)

    # --- accounts, units, citizens, the calendar ------------------------------------------------

    async def account(self, kind: str) -> Target:
        """A plain handler account of the kind's unit (to be disabled)."""
        name = f"pm-target-{kind}-{next(_serial)}"
        user = await staff(name, self.units[kind], "handler")
        return Target({"username": name}, fingerprint=lambda: _rows(StaffUser, id=user.id))

    async def unit(self, kind: str) -> Target:
        code = self.units[kind]

        async def fingerprint() -> Any:
            return await _rows(Unit, code=code), await _rows(UnitDisclosure, unit__code=code)

        return Target({"code": code}, fingerprint=fingerprint)

    async def supervisor(self, kind: str) -> Target:
        """A citizen appointed public supervisor by an administrator of the kind's unit."""
        unit = await Unit.get(code=self.units[kind])
        code = f"{next(_serial):010d}".translate(str.maketrans("01", "XY"))
        citizen = await Citizen.create(
            openid=f"o-matrix-supervisor-{code}",
            supervisor_code=code,
            is_public_supervisor=True,
            public_supervisor_unit_id=unit.id,
            public_supervisor_note="第一批群众监督员",
            public_supervisor_since=clock.now(),
        )
        return Target({"code": code}, fingerprint=lambda: _rows(Citizen, id=citizen.id))

    async def override(self, kind: str) -> Target:
        """A working-day override to delete (a day far away: no deadline of the suite moves)."""
        day = date(2099, 1, 5 if kind == "county" else 6)  # the groups run side by side
        await CalendarOverride.update_or_create(date=day, defaults={"is_workday": True})
        return Target({"day": day.isoformat()}, fingerprint=lambda: _rows(CalendarOverride))

    async def day(self, kind: str) -> Target:
        return Target({"day": "2099-01-04"}, fingerprint=_constant)

    async def nothing(self, kind: str) -> Target:
        return Target({}, fingerprint=_constant)


async def _constant() -> None:
    return None


async def _case_print(ticket: str) -> tuple[Any, ...]:
    """Everything an action could change that decides the next answer."""
    case = await Case.get(ticket_no=ticket)
    extensions = await ExtensionRequest.filter(case_id=case.id).values_list("status", flat=True)
    return (
        case.status,
        case.version,
        case.handling_unit_id,
        case.handling_path,
        case.officer_id,
        case.transfer_count,
        case.extension_count,
        case.content_status,
        sorted(extensions),
    )


# Path parameters no target has: the answer for something that does not exist.
GHOSTS = {
    "ticket_no": "PY00000000000000",
    "hold_id": "2147483000",
    "evaluation_id": "2147483000",
    "username": "pm-no-such-account",
    "code": "2222222222222222",
    "cert_no": "00000000000",
    "day": "2099-01-07",
}


def url_of(route: Route, params: dict[str, str]) -> str:
    url = route.path
    for name, value in params.items():
        for kind in ("str", "int"):
            url = url.replace(f"<{name}:{kind}>", value)
    assert "<" not in url, (route.path, params)
    return url


async def call(
    client: httpx.AsyncClient, route: Route, target: Target, headers: dict[str, str]
) -> httpx.Response:
    body = {**(route.body or {}), **target.body} if route.method != "GET" else None
    return await client.request(
        route.method,
        url_of(route, target.params),
        params=route.query,
        json=body,
        headers=headers,
    )


def error_code(res: httpx.Response) -> str | None:
    payload = res.json()
    error = payload.get("error") if isinstance(payload, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def classify_item(cell: Cell, res: httpx.Response, ghost: dict[str, Any] | None) -> None:
    cell.status, cell.code = res.status_code, error_code(res)
    if res.status_code == 404 and cell.code == cell.route.not_found:
        cell.got = HIDDEN
        if res.json() != ghost:  # the answer must not differ from a missing target's
            cell.got, cell.note = "leaky-404", f"body {res.json()} != {ghost}"
    elif res.status_code == 403:
        cell.got = DENIED
    elif 200 <= res.status_code < 300 or res.status_code in (409, 422):
        cell.got = ALLOWED  # past authorisation; the state or the body was the problem
        if res.status_code >= 300:
            cell.note = res.text[:200]
    else:
        cell.got, cell.note = f"error-{res.status_code}", res.text[:200]


def classify_list(cell: Cell, res: httpx.Response, listed: Any) -> None:
    cell.status, cell.code = res.status_code, error_code(res)
    if res.status_code == 200:
        items = res.json()["items"]
        key = "ticket_no" if isinstance(listed, str) else "id"
        cell.got = ALLOWED if listed in {item[key] for item in items} else HIDDEN
    elif res.status_code == 403:
        cell.got = DENIED
    else:
        cell.got, cell.note = f"error-{res.status_code}", res.text[:200]


def classify_count(cell: Cell, before: httpx.Response, after: httpx.Response) -> None:
    """COUNT routes (a summary): the target counted (allowed) or not (hidden)."""
    cell.status, cell.code = after.status_code, error_code(after)
    if before.status_code == after.status_code == 200:
        delta = after.json()["total"] - before.json()["total"]
        cell.got = {1: ALLOWED, 0: HIDDEN}.get(delta, f"delta-{delta}")
    elif after.status_code == 403:
        cell.got = DENIED
    else:
        cell.got, cell.note = f"error-{after.status_code}", after.text[:200]


async def gather_limited(jobs: list[Callable[[], Awaitable[None]]], parallel: int = 16) -> None:
    gate = asyncio.Semaphore(parallel)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await job()

    await asyncio.gather(*(one(job) for job in jobs))
