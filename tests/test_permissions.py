"""The permission matrix: every staff route × every role × where the account sits relative to the case.

The expectation is written below from the rules (issue 5 "Roles and scope", DOMAIN.md "Routing and
independence"), never computed from ``api.services.permissions.ROLES``: this test is the second
opinion on that table. Only the list of routes is taken from the product, and it must match the
routes this file knows how to call, so a new staff route cannot slip past the matrix.

Every response is classified as
- hidden: 404 ``case_not_found``, the same body as for a ticket that does not exist (for the inbox:
  the case is absent from the list),
- denied: 403,
- allowed: 2xx, or 409/422 (past authorisation; the state or the body was the problem).
A cell expected hidden or denied that comes back allowed is an unexpected allow: there must be none.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from argon2.profiles import CHEAPEST

from api import clock
from api.handlers import admin as admin_handlers
from api.handlers import staff as staff_handlers
from api.models import Case, CaseClock, Citizen, ExtensionRequest, StaffUser
from api.schemas import ComplaintCreate, ExtensionCreate
from api.services import citizen_cases, passwords, staff_cases
from api.services.context import Services
from tests import support
from tests.support import make_world, staff, staff_token

HIDDEN, DENIED, ALLOWED = "hidden", "denied", "allowed"

# --- the rules --------------------------------------------------------------------------------

ROLES = ("handler", "supervisor", "unit_leader", "city_admin", "province_admin")
VIEW_ROLES = frozenset(ROLES)  # detail, inbox, internal notes
ACT_ROLES = frozenset({"handler", "supervisor", "province_admin"})
DECIDE_ROLES = frozenset({"supervisor", "unit_leader", "city_admin", "province_admin"})
SMS_ROLES = frozenset({"province_admin"})

# The part of the organisation tree the matrix uses (GB/T 2260 codes): 省厅 › 长沙支队 › 大队.
PARENT: dict[str, str | None] = {
    "43": None,
    "4301": "43",
    "4302": "43",
    "430102": "4301",
    "430103": "4301",
}


def ancestors(code: str) -> list[str]:
    """The units strictly above ``code``, nearest first."""
    found, parent = [], PARENT[code]
    while parent is not None:
        found.append(parent)
        parent = PARENT[parent]
    return found


@dataclass(frozen=True)
class CaseKind:
    category: str
    handling_unit: str  # where routing must put a case about the officer of 430102
    transfer_to: str  # a valid transfer target for the handling unit


CASES = {
    "county": CaseKind("RUDE", "430102", "430103"),
    # A serious category skips the officer's unit and goes to the unit above (DOMAIN.md).
    "city": CaseKind("BRIBERY", "4301", "4302"),
}


@dataclass(frozen=True)
class Placement:
    label: str
    case: str  # key of CASES
    unit: str  # the staff account's unit
    accused: bool = False  # the account is linked to the officer the case is about


PLACEMENTS = (
    Placement("a:county-case/same-unit-430102", "county", "430102"),
    Placement("b:county-case/sibling-430103", "county", "430103"),
    Placement("c:county-case/parent-4301", "county", "4301"),
    Placement("d:county-case/grandparent-43", "county", "43"),
    Placement("e:county-case/accused-officer-430102", "county", "430102", accused=True),
    Placement("f:city-case/child-430102", "city", "430102"),
    Placement("g:city-case/same-unit-4301", "city", "4301"),
    Placement("h:city-case/parent-43", "city", "43"),
    Placement("i:city-case/accused-officer-430102", "city", "430102", accused=True),
)


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str  # as registered on the blueprint
    need: str  # inbox | view | act | decide | sms
    state: str  # what the case is brought to first, so an allowed call can succeed
    body: dict[str, Any] | None = None


STAFF = "/api/v1/staff/complaints"
CASE = STAFF + "/<ticket_no:str>"
ROUTES = (
    Route("inbox", "GET", STAFF, "inbox", "received"),
    Route("detail", "GET", CASE, "view", "received"),
    Route("notes", "POST", CASE + "/notes", "view", "received", {"text": "调取执法记录仪视频"}),
    Route("acknowledge", "POST", CASE + "/acknowledge", "act", "received", {}),
    Route("reply", "POST", CASE + "/reply", "act", "acknowledged", {"message": "经核实，已处理"}),
    Route("contact", "POST", CASE + "/contact", "act", "acknowledged", {"outcome": "已电话联系"}),
    Route(
        "request-info",
        "POST",
        CASE + "/request-info",
        "act",
        "acknowledged",
        {"message": "请提供罚单照片"},
    ),
    Route("transfer", "POST", CASE + "/transfer", "act", "received", {"reason": "管辖错误"}),
    Route("escalate", "POST", CASE + "/escalate", "act", "received", {"reason": "涉及多个单位"}),
    Route(
        "extension",
        "POST",
        CASE + "/extension",
        "act",
        "acknowledged",
        {"days": 3, "reason": "需调取外地执法记录"},
    ),
    Route(
        "extension/decision",
        "POST",
        CASE + "/extension/decision",
        "decide",
        "extension_pending",
        {"approve": True, "note": "同意"},
    ),
    Route("close", "POST", CASE + "/close", "act", "feedback_window_over", {}),
    Route("admin/sms", "GET", "/api/v1/admin/sms", "sms", "received"),
)


def expected(route: Route, role: str, where: Placement) -> tuple[str, str | None]:
    """The rule for one cell: the outcome, and the error code where the rules name one."""
    if route.need == "sms":
        return (ALLOWED, None) if role in SMS_ROLES else (DENIED, None)
    handling = CASES[where.case].handling_unit
    in_scope = (handling == where.unit or where.unit in ancestors(handling)) and not where.accused
    if not in_scope:
        return HIDDEN, "case_not_found"  # never 403: existence must not leak
    if route.need in ("inbox", "view"):
        return (ALLOWED, None) if role in VIEW_ROLES else (DENIED, "capability_missing")
    if route.need == "act":
        if role not in ACT_ROLES:
            return DENIED, "capability_missing"
        if where.unit != handling:
            return DENIED, "not_handling_unit"
        return ALLOWED, None
    assert route.need == "decide"
    if role in DECIDE_ROLES and where.unit in ancestors(handling):
        return ALLOWED, None
    return DENIED, None


# --- running the matrix ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def cheap_hashing() -> Iterator[None]:
    # 25 accounts log in once each; Argon2's production cost is tested elsewhere, not the matrix.
    passwords.use_parameters(CHEAPEST)
    support.password_hash.cache_clear()
    yield
    passwords.use_parameters()
    support.password_hash.cache_clear()


def username(role: str, where: Placement) -> str:
    return f"pm-{role}-{where.unit}{'-accused' if where.accused else ''}"


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
        return (
            f"{self.route.method} {self.route.name} | {self.role} @ {self.where.label}: "
            f"expected {self.want}{f' ({self.want_code})' if self.want_code else ''}, "
            f"got {self.got} [{self.status} {self.code or ''}]{f' {self.note}' if self.note else ''}"
        )


class Matrix:
    def __init__(self, services: Services, client: httpx.AsyncClient) -> None:
        self.services, self.client = services, client
        self.tokens: dict[str, dict[str, str]] = {}
        self.setup_users: dict[str, StaffUser] = {}  # handling unit code → a plain handler there
        self.card_code = ""
        self.citizen: Citizen | None = None
        self.ghost: dict[str, Any] = {}  # the 404 body for a ticket that does not exist
        self.cases = 0

    async def prepare(self) -> None:
        world = await make_world()
        self.card_code = world.card.code
        users = {}
        for role, unit, accused in sorted(
            {(r, p.unit, p.accused) for r in ROLES for p in PLACEMENTS}
        ):
            name = username(role, Placement("", "", unit, accused))
            users[name] = await staff(name, unit, role, officer=world.officer if accused else None)
        self.setup_users = {
            kind.handling_unit: users[username("handler", Placement("", "", kind.handling_unit))]
            for kind in CASES.values()
        }
        names = sorted(users)  # each account logs in once; its token serves all its cells
        tokens = await asyncio.gather(*(staff_token(self.client, n) for n in names))
        self.tokens = dict(zip(names, tokens, strict=True))
        self.citizen = await Citizen.create(openid="o-permission-matrix")
        res = await self.client.get(f"{STAFF}/PY00000000000000", headers=tokens[0])
        assert res.status_code == 404, res.text
        self.ghost = res.json()

    async def new_case(self, kind: str, state: str) -> str:
        """A fresh case about the officer of 430102, brought to ``state`` through the services."""
        assert self.citizen is not None
        self.cases += 1
        body = ComplaintCreate(
            card_code=self.card_code,
            categories=[CASES[kind].category],
            description=f"权限矩阵测试案件 {self.cases}",
            phone="13800138000",
        )
        filed = await citizen_cases.file_complaint(self.services, self.citizen, body)
        ticket: str = filed["ticket_no"]
        assert filed["case"]["handling_unit"]["code"] == CASES[kind].handling_unit, filed
        user = self.setup_users[CASES[kind].handling_unit]
        if state == "received":
            return ticket
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
        return ticket

    @staticmethod
    async def fingerprint(ticket: str) -> tuple[Any, ...]:
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
            sorted(extensions),
        )

    async def call(self, cell: Cell, ticket: str) -> httpx.Response:
        route, headers = cell.route, self.tokens[username(cell.role, cell.where)]
        if route.need == "inbox":
            return await self.client.get(route.path, params={"limit": 200}, headers=headers)
        if route.need == "sms":
            return await self.client.get(route.path, headers=headers)
        url = route.path.replace("<ticket_no:str>", ticket)
        if route.method == "GET":
            return await self.client.get(url, headers=headers)
        body = dict(route.body or {})
        if route.name == "transfer":
            body["unit_code"] = CASES[cell.where.case].transfer_to
        return await self.client.post(url, json=body, headers=headers)

    def classify(self, cell: Cell, res: httpx.Response, ticket: str) -> None:
        cell.status = res.status_code
        payload = res.json()
        error = payload.get("error") if isinstance(payload, dict) else None
        cell.code = error.get("code") if isinstance(error, dict) else None
        if cell.route.need == "inbox" and res.status_code == 200:
            listed = {item["ticket_no"] for item in payload["items"]}
            cell.got = ALLOWED if ticket in listed else HIDDEN
        elif res.status_code == 404 and cell.code == "case_not_found":
            cell.got = HIDDEN
            if payload != self.ghost:  # the answer must not differ from a missing ticket's
                cell.got, cell.note = "leaky-404", f"body {payload} != {self.ghost}"
        elif res.status_code == 403:
            cell.got = DENIED
        elif 200 <= res.status_code < 300 or res.status_code in (409, 422):
            cell.got = ALLOWED
            if res.status_code != 200:
                cell.note = res.text[:200]
        else:
            cell.got, cell.note = f"error-{res.status_code}", res.text[:200]

    async def run_group(self, cells: list[Cell]) -> None:
        """The cells of one route on one kind of case, in turn, each on a case in the same state.

        A case is shared only while it provably keeps that state: after a call that may have
        changed it (an allowed action, or any change of its fingerprint) the next cell gets a
        fresh case, so an earlier answer never changes a later one.
        """
        ticket, before = "", None
        for cell in cells:
            cell.want, cell.want_code = expected(cell.route, cell.role, cell.where)
            if cell.route.need == "sms":  # not about a case
                self.classify(cell, await self.call(cell, ""), "")
                continue
            if not ticket:
                ticket = await self.new_case(cell.where.case, cell.route.state)
                before = await self.fingerprint(ticket)
            self.classify(cell, await self.call(cell, ticket), ticket)
            acted = cell.route.method == "POST" and cell.route.name != "notes"
            if (acted and cell.got == ALLOWED) or await self.fingerprint(ticket) != before:
                ticket = ""


async def _run(matrix: Matrix, cells: list[Cell], parallel: int = 16) -> None:
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.route.name, cell.where.case), []).append(cell)
    gate = asyncio.Semaphore(parallel)

    async def one(group: list[Cell]) -> None:
        async with gate:
            await matrix.run_group(group)

    await asyncio.gather(*(one(g) for g in groups.values()))


def _registered_routes() -> set[tuple[str, str]]:
    found = set()
    for bp in (staff_handlers.bp, admin_handlers.bp):
        for route in bp.routes:
            for method in route.methods:
                if method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                    found.add((method, "/" + route.uri.lstrip("/")))
    # Administration that is not about a case (accounts, calendar, units) has its own tests
    # (tests/test_staff_accounts.py, tests/test_admin_calendar.py).
    found = {
        (m, p) for m, p in found if not p.startswith("/api/v1/admin/") or p == "/api/v1/admin/sms"
    }
    # Read-only help for writing a reply: scoped like the case itself (tests/test_staff_actions.py).
    found.discard(("GET", "/api/v1/staff/complaints/<ticket_no:str>/reply-templates"))
    return found


async def test_permission_matrix_has_no_unexpected_allows(
    client: httpx.AsyncClient, services: Services
) -> None:
    started = time.monotonic()
    # Every route of the staff and admin blueprints is in the matrix, and nothing else.
    assert _registered_routes() == {(r.method, r.path) for r in ROUTES}

    matrix = Matrix(services, client)
    await matrix.prepare()
    cells = [Cell(route, role, where) for route in ROUTES for role in ROLES for where in PLACEMENTS]
    # The inbox runs first, while the few cases in the database all fit in one page of it.
    await _run(matrix, [c for c in cells if c.route.need == "inbox"])
    await _run(matrix, [c for c in cells if c.route.need != "inbox"])

    size = len(ROUTES) * len(ROLES) * len(PLACEMENTS)
    checked = [c for c in cells if c.got]
    unexpected_allows = [c for c in checked if c.got == ALLOWED and c.want != ALLOWED]
    unexpected_denies = [c for c in checked if c.got == DENIED and c.want != DENIED]
    other = [
        c
        for c in checked
        if c not in unexpected_allows and c not in unexpected_denies and c.got != c.want
    ]
    wrong_code = [
        c
        for c in checked
        if c.got == c.want and c.want_code and c.route.need != "inbox" and c.code != c.want_code
    ]
    not_ok = [c for c in checked if c.want == ALLOWED == c.got and c.status != 200]

    print(
        f"\npermission matrix: {len(ROUTES)} routes × {len(ROLES)} roles × {len(PLACEMENTS)} "
        f"placements = {size} cells; {len(checked)} checked, on {matrix.cases} fresh cases, "
        f"in {time.monotonic() - started:.1f}s"
    )
    print(
        "expected:",
        dict(Counter(c.want for c in cells)),
        "got:",
        dict(Counter(c.got for c in cells)),
    )
    for title, group in (
        ("UNEXPECTED ALLOWS", unexpected_allows),
        ("unexpected denies", unexpected_denies),
        ("other mismatches", other),
        ("right outcome, wrong error code", wrong_code),
        ("allowed, but not 200 (setup did not reach the happy path)", not_ok),
    ):
        print(f"{title}: {len(group)}")
        for cell in group:
            print("  ", cell)

    assert len(checked) == size == 585
    assert not unexpected_allows, "\n".join(map(str, unexpected_allows))
    mismatches = unexpected_denies + other + wrong_code
    assert not mismatches, "\n".join(map(str, mismatches))
