"""The permission matrix: every staff and admin route × every role × where the account sits.

The expectation is written below from the rules (issue 5 "Roles and scope", DOMAIN.md "Routing and
independence"), never computed from ``api.services.permissions.ROLES``: this test is the second
opinion on that table. Only the list of routes is taken from the product: every route the app
serves must be in the matrix, in ``EXEMPT`` (staff routes outside it, each with its reason) or in
``NOT_STAFF`` (citizen and public routes), so a new route fails here until it is classified.

Placements put the account relative to what the route acts on: a case (routed to a county
大队 430102, or — a serious category — to the city 支队 4301), or for administration a staff
account, unit, officer, card or public supervisor of that same unit. Every answer is
- hidden: 404 with the route's not-found code and the very body a missing target gets (lists:
  the target is absent; the ratings summary: it is not counted),
- denied: 403,
- allowed: 2xx — an allowed cell must succeed; a 409/422 there is counted as allowed (past
  authorisation, so never an unexpected deny) and fails the test as a setup gap.
A cell expected hidden or denied that comes back allowed is an unexpected allow: there must be none.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest
from argon2.profiles import CHEAPEST
from sanic import Sanic

from api.models import Citizen
from api.services import passwords
from api.services.context import Services
from tests import support
from tests.matrix import (
    ALLOWED,
    COUNT,
    DENIED,
    GHOSTS,
    HIDDEN,
    ITEM,
    LIST,
    Cell,
    Placement,
    Route,
    Target,
    Targets,
    call,
    classify_count,
    classify_item,
    classify_list,
    gather_limited,
)
from tests.support import make_world, officer_with_card, staff, staff_token

# --- the rules --------------------------------------------------------------------------------

ROLES = ("handler", "supervisor", "unit_leader", "city_admin", "province_admin")
ALL = frozenset(ROLES)  # see cases and ratings of their subtree, leave internal notes
ACT = frozenset({"handler", "supervisor", "province_admin"})  # work a case of their own unit
DECIDE = frozenset({"supervisor", "unit_leader", "city_admin", "province_admin"})  # extensions
REVIEW = frozenset({"supervisor", "city_admin", "province_admin"})  # held content, rating flags
ENCOUNTER = frozenset({"handler", "supervisor", "unit_leader"})  # codes for a colleague
ADMIN = frozenset({"city_admin", "province_admin"})  # accounts, units, cards, public supervisors
PROVINCE = frozenset({"province_admin"})  # the SMS outbox, the working-day calendar

# The part of the organisation tree the matrix uses (GB/T 2260 codes): 省厅 › 支队 › 大队.
PARENT: dict[str, str | None] = {
    "43": None,
    "4301": "43",
    "4302": "43",
    "430102": "4301",
    "430103": "4301",
}
TARGET_UNIT = {"county": "430102", "city": "4301"}  # where a case is handled / a target sits
CATEGORY = {"county": "RUDE", "city": "BRIBERY"}  # a serious category goes one level up
TRANSFER_TO = {"county": "430103", "city": "4302"}  # a sibling of the handling unit


def ancestors(code: str) -> list[str]:
    """The units strictly above ``code``, nearest first."""
    found, parent = [], PARENT[code]
    while parent is not None:
        found.append(parent)
        parent = PARENT[parent]
    return found


PLACEMENTS = (
    Placement("a:county/same-430102", "county", "430102"),
    Placement("b:county/sibling-430103", "county", "430103"),
    Placement("c:county/parent-4301", "county", "4301"),
    Placement("d:county/grandparent-43", "county", "43"),
    Placement("e:county/accused-officer-430102", "county", "430102", accused=True),
    Placement("f:city/child-430102", "city", "430102"),
    Placement("g:city/same-4301", "city", "4301"),
    Placement("h:city/parent-43", "city", "43"),
    Placement("i:city/accused-officer-child-430102", "city", "430102", accused=True),
    Placement("j:city/sibling-4302", "city", "4302"),
    # The accused officer holding a staff role in the very unit that handles the case.
    Placement("k:city/accused-officer-same-4301", "city", "4301", accused=True),
)

Rule = Callable[[str, Placement], tuple[str, str | None]]


def in_subtree(where: Placement) -> bool:
    target = TARGET_UNIT[where.kind]
    return where.unit == target or where.unit in ancestors(target)


def sees_case(where: Placement) -> bool:
    # Cases are about the accused officer: never visible to their account, wherever it sits.
    return in_subtree(where) and not where.accused


def sees_rating(where: Placement) -> bool:
    # The county target is a rating of the accused officer; the city one of a 支队 officer.
    return in_subtree(where) and not (where.accused and where.kind == "county")


def case_view(role: str, where: Placement) -> tuple[str, str | None]:
    if not sees_case(where):
        return HIDDEN, "case_not_found"  # never 403: existence must not leak
    return (ALLOWED, None) if role in ALL else (DENIED, "capability_missing")


def case_act(role: str, where: Placement) -> tuple[str, str | None]:
    if not sees_case(where):
        return HIDDEN, "case_not_found"
    if role not in ACT:
        return DENIED, "capability_missing"
    if where.unit != TARGET_UNIT[where.kind]:
        return DENIED, "not_handling_unit"
    return ALLOWED, None


def case_decide(role: str, where: Placement) -> tuple[str, str | None]:
    if not sees_case(where):
        return HIDDEN, "case_not_found"
    if role not in DECIDE:
        return DENIED, "capability_missing"
    if where.unit not in ancestors(TARGET_UNIT[where.kind]):
        return DENIED, "not_approving_unit"  # decided one level up, never by the handling unit
    return ALLOWED, None


def case_review(role: str, where: Placement) -> tuple[str, str | None]:
    if not sees_case(where):
        return HIDDEN, "case_not_found"
    return (ALLOWED, None) if role in REVIEW else (DENIED, "capability_missing")


def listing(roles: frozenset[str], sees: Callable[[Placement], bool]) -> Rule:
    """A queue: the capability first (403), then the target listed only within scope."""

    def rule(role: str, where: Placement) -> tuple[str, str | None]:
        if role not in roles:
            return DENIED, "capability_missing"
        return (ALLOWED, None) if sees(where) else (HIDDEN, None)

    return rule


def administered(roles: frozenset[str], not_found: str, sees: Callable[[Placement], bool]) -> Rule:
    """Administration: the capability first (403), then the target only within the subtree —
    outside it, the answer of a target that does not exist."""

    def rule(role: str, where: Placement) -> tuple[str, str | None]:
        if role not in roles:
            return DENIED, "capability_missing"
        return (ALLOWED, None) if sees(where) else (HIDDEN, not_found)

    return rule


def province_only(role: str, where: Placement) -> tuple[str, str | None]:
    return (ALLOWED, None) if role in PROVINCE else (DENIED, "capability_missing")


def encounter(role: str, where: Placement) -> tuple[str, str | None]:
    if where.accused and where.kind == "county":
        return ALLOWED, None  # the officer's own code, whatever the role
    if role not in ENCOUNTER:
        return DENIED, "capability_missing"
    if where.unit != TARGET_UNIT[where.kind]:
        return DENIED, "officer_out_of_scope"  # only for an officer of one's own unit
    return ALLOWED, None


STAFF = "/api/v1/staff"
CASE = STAFF + "/complaints/<ticket_no:str>"
ADM = "/api/v1/admin"


def _case(name: str, method: str, suffix: str, rule: Rule, state: str, **extra: object) -> Route:
    return Route(
        name, method, CASE + suffix, "case", rule, state=state, not_found="case_not_found", **extra
    )  # type: ignore[arg-type]


# fmt: off
ROUTES = (
    Route("inbox", "GET", STAFF + "/complaints", "case", case_view, shape=LIST,
          query={"limit": 200}, mutates=False),
    _case("detail", "GET", "", case_view, "received", mutates=False),
    _case("notes", "POST", "/notes", case_view, "received", body={"text": "调取执法记录仪视频"},
          mutates=False),
    _case("reply-templates", "GET", "/reply-templates", case_view, "received", mutates=False),
    _case("acknowledge", "POST", "/acknowledge", case_act, "received", body={}),
    _case("reply", "POST", "/reply", case_act, "acknowledged", body={"message": "经核实，已处理"}),
    _case("contact", "POST", "/contact", case_act, "acknowledged", body={"outcome": "已电话联系"}),
    _case("request-info", "POST", "/request-info", case_act, "acknowledged",
          body={"message": "请提供罚单照片"}),
    _case("transfer", "POST", "/transfer", case_act, "received", body={"reason": "管辖错误"}),
    _case("escalate", "POST", "/escalate", case_act, "received", body={"reason": "涉及多个单位"}),
    _case("extension", "POST", "/extension", case_act, "acknowledged",
          body={"days": 3, "reason": "需调取外地执法记录"}),
    _case("extension/decision", "POST", "/extension/decision", case_decide, "extension_pending",
          body={"approve": True, "note": "同意"}),
    _case("close", "POST", "/close", case_act, "feedback_window_over", body={}),
    Route("content-holds", "GET", STAFF + "/content-holds", "hold",
          listing(REVIEW, sees_case), shape=LIST, mutates=False),
    Route("content/decide", "POST", CASE + "/content/<hold_id:int>", "hold", case_review,
          body={"decision": "release", "note": "经核实无违规内容"}, not_found="case_not_found"),
    Route("encounters", "POST", STAFF + "/encounters", "officer", encounter, mutates=False),
    Route("ratings/flagged", "GET", STAFF + "/ratings/flagged", "rating",
          listing(REVIEW, sees_rating), shape=LIST, query={"limit": 200}, mutates=False),
    Route("ratings/review", "POST", STAFF + "/ratings/<evaluation_id:str>/review", "rating",
          administered(REVIEW, "flagged_rating_not_found", sees_rating),
          body={"decision": "confirm", "note": "同一时段集中评价"},
          not_found="flagged_rating_not_found"),
    Route("ratings/summary", "GET", STAFF + "/ratings/summary", "rating",
          listing(ALL, sees_rating), shape=COUNT),
    Route("admin/sms", "GET", ADM + "/sms", "nothing", province_only, mutates=False),
    Route("admin/staff/disable", "POST", ADM + "/staff/<username:str>/disable", "account",
          administered(ADMIN, "staff_not_found", in_subtree), not_found="staff_not_found"),
    Route("admin/calendar", "GET", ADM + "/calendar", "nothing", province_only, mutates=False),
    Route("admin/calendar/set", "PUT", ADM + "/calendar/<day:str>", "day", province_only,
          body={"is_workday": True, "note": "权限矩阵"}),
    Route("admin/calendar/delete", "DELETE", ADM + "/calendar/<day:str>", "override",
          province_only),
    Route("admin/units/contacts", "PUT", ADM + "/units/<code:str>", "unit",
          administered(ADMIN, "unit_not_found", in_subtree), body={"hotline": "0731-88880000"},
          not_found="unit_not_found"),
    Route("admin/units/disclosure", "PUT", ADM + "/units/<code:str>/disclosure", "unit",
          administered(ADMIN, "unit_not_found", in_subtree), body={"address": "示范路1号"},
          not_found="unit_not_found"),
    Route("admin/cards/revoke", "POST", ADM + "/cards/<code:str>/revoke", "new_officer",
          administered(ADMIN, "card_not_found", in_subtree), not_found="card_not_found"),
    Route("admin/officers/cards", "POST", ADM + "/officers/<cert_no:str>/cards", "new_officer",
          administered(ADMIN, "officer_not_found", in_subtree), not_found="officer_not_found"),
    Route("admin/citizens/public-supervisor", "PUT",
          ADM + "/citizens/<code:str>/public-supervisor", "supervisor",
          administered(ADMIN, "citizen_not_found", in_subtree),
          body={"appointed": True, "note": "续聘群众监督员"}, not_found="citizen_not_found"),
)
# fmt: on

# Staff routes outside the matrix, each with the reason and where it is tested instead.
EXEMPT = {
    ("POST", "/api/v1/staff/auth/login"): "the sign-in door itself: no session to judge "
    "(tests/test_staff_accounts.py: lockout, password rules)",
    ("POST", "/api/v1/staff/auth/wechat"): "sign-in from the mini-program: no session yet "
    "(tests/test_staff_accounts.py)",
    ("POST", "/api/v1/staff/auth/logout"): "ends the caller's own session, any role "
    "(tests/test_api_edges.py, tests/test_staff_accounts.py)",
    ("POST", "/api/v1/staff/auth/password"): "the caller's own password, any role "
    "(tests/test_staff_accounts.py)",
    ("POST", "/api/v1/staff/auth/wechat/bind"): "binds the caller's own WeChat, any role "
    "(tests/test_staff_accounts.py)",
}
# Citizen and public routes: no staff capability applies (citizens' own scope is tested in
# tests/test_flow.py, tests/test_tracking.py and tests/test_anonymity_leaks.py).
NOT_STAFF = {
    ("GET", "/healthz"),
    ("POST", "/api/v1/auth/wechat"),
    ("POST", "/api/v1/auth/refresh"),
    ("POST", "/api/v1/auth/logout"),
    ("GET", "/api/v1/misconduct-categories"),
    ("GET", "/api/v1/cards/<code:str>"),
    ("POST", "/api/v1/cards/<code:str>/evaluations"),
    ("GET", "/api/v1/complaints"),
    ("POST", "/api/v1/complaints"),
    ("GET", "/api/v1/complaints/<ticket_no:str>"),
    ("POST", "/api/v1/complaints/<ticket_no:str>/feedback"),
    ("POST", "/api/v1/complaints/<ticket_no:str>/supplements"),
    ("POST", "/api/v1/complaints/<ticket_no:str>/anonymity"),
    ("POST", "/api/v1/uploads"),
    (
        "GET",
        "/api/v1/evidence/<evidence_id:str>",
    ),  # a signed, expiring link (tests/test_uploads.py)
    ("GET", "/api/v1/me"),
    ("POST", "/api/v1/me/phone"),
    ("GET", "/api/v1/subscriptions/templates"),
    ("POST", "/api/v1/subscriptions"),
    ("GET", "/api/v1/units/<code:str>"),  # 执法公示, no login
}


def served_routes() -> set[tuple[str, str]]:
    """Every (method, path) the running app serves, across all its blueprints."""
    app = Sanic.get_app("pingyi_test")
    found = set()
    for route in app.router.routes:
        path = "/" + route.path.lstrip("/")
        if path == "/docs" or path.startswith("/docs/"):
            continue  # sanic-ext's OpenAPI pages
        found |= {(m, path) for m in route.methods if m not in ("HEAD", "OPTIONS")}
    return found


async def test_every_route_is_classified(app_server: object) -> None:
    served = served_routes()
    in_matrix = {(r.method, r.path) for r in ROUTES}
    assert len(in_matrix) == len(ROUTES)
    unclassified = served - in_matrix - set(EXEMPT) - NOT_STAFF
    assert not unclassified, f"classify these routes in tests/test_permissions.py: {unclassified}"
    assert not (in_matrix | set(EXEMPT) | NOT_STAFF) - served, "routes no longer served"
    staff_or_admin = {
        (m, p) for m, p in served if p.startswith(("/api/v1/staff/", "/api/v1/admin/"))
    }
    assert staff_or_admin == in_matrix | set(EXEMPT)


# --- running the matrix ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def cheap_hashing() -> Iterator[None]:
    # 35 accounts log in once each; Argon2's production cost is tested elsewhere, not the matrix.
    passwords.use_parameters(CHEAPEST)
    support.password_hash.cache_clear()
    yield
    passwords.use_parameters()
    support.password_hash.cache_clear()


def username(role: str, where: Placement) -> str:
    return f"pm-{role}-{where.unit}{'-accused' if where.accused else ''}"


class Matrix:
    def __init__(self, services: Services, client: httpx.AsyncClient) -> None:
        self.client = client
        self.targets = Targets(services, TARGET_UNIT)
        self.tokens: dict[str, dict[str, str]] = {}
        self.ghosts: dict[str, object] = {}  # route name → the 404 body of a missing target

    async def prepare(self) -> None:
        world = await make_world()
        self.targets.card_code = world.card.code
        city_officer, _ = await officer_with_card("4301", "王执法", "43010099001")
        self.targets.officers = {"county": world.officer, "city": city_officer}
        self.targets.citizen = await Citizen.create(openid="o-permission-matrix")
        accounts = {(r, p.unit, p.accused) for r in ROLES for p in PLACEMENTS}
        for role, unit, accused in sorted(accounts):
            name = username(role, Placement("", "", unit, accused))
            await staff(name, unit, role, officer=world.officer if accused else None)
        for kind, unit in TARGET_UNIT.items():
            self.targets.handlers[kind] = await staff(f"pm-setup-{unit}", unit, "handler")
        for role, unit, accused in sorted(accounts):
            name = username(role, Placement("", "", unit, accused))
            self.tokens[name] = await staff_token(self.client, name)

    async def target(self, route: Route, kind: str) -> Target:
        make = getattr(self.targets, route.target)
        if route.target == "case":
            found: Target = await make(kind, route.state, CATEGORY)
        elif route.target == "hold":
            found = await make(kind, CATEGORY)
        else:
            found = await make(kind)
        if route.name == "transfer":
            found.body["unit_code"] = TRANSFER_TO[kind]
        return found

    async def ghost(self, route: Route) -> object:
        """The answer for a target that does not exist, asked by the province admin."""
        if route.name not in self.ghosts:
            missing = Target({name: GHOSTS[name] for name in GHOSTS})
            if route.name == "transfer":
                missing.body["unit_code"] = "430103"
            province = self.tokens[username("province_admin", PLACEMENTS[3])]
            res = await call(self.client, route, missing, province)
            assert res.status_code == 404, (route.name, res.text)
            self.ghosts[route.name] = res.json()
        return self.ghosts[route.name]

    async def run_group(self, cells: list[Cell]) -> None:
        """The cells of one route on one kind of target, in turn.

        A target is shared only while it provably stays as it was: after a call that may have
        changed it (an allowed call of a mutating route, or any change of its fingerprint) the
        next cell gets a fresh one, so an earlier answer never changes a later one.
        """
        target, before = None, None
        for cell in cells:
            cell.want, cell.want_code = cell.route.rule(cell.role, cell.where)
            headers = self.tokens[username(cell.role, cell.where)]
            if cell.route.shape == COUNT:
                await self._count(cell, headers)
                continue
            if target is None:
                target = await self.target(cell.route, cell.where.kind)
                assert target.fingerprint is not None
                before = await target.fingerprint()
            res = await call(self.client, cell.route, target, headers)
            if cell.route.shape == LIST:
                classify_list(cell, res, target.listed)
            else:
                ghost = await self.ghost(cell.route) if res.status_code == 404 else None
                classify_item(cell, res, ghost)
            assert target.fingerprint is not None
            changed = await target.fingerprint() != before
            if changed or (cell.route.mutates and cell.got == ALLOWED):
                target = None

    async def _count(self, cell: Cell, headers: dict[str, str]) -> None:
        """Counted or not: the summary before and after a new target (these cells run alone)."""
        before = await call(self.client, cell.route, Target({}), headers)
        await self.target(cell.route, cell.where.kind)
        after = await call(self.client, cell.route, Target({}), headers)
        classify_count(cell, before, after)


async def _run(matrix: Matrix, cells: list[Cell], *, parallel: int = 16) -> None:
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.route.name, cell.where.kind), []).append(cell)
    await gather_limited([lambda g=g: matrix.run_group(g) for g in groups.values()], parallel)


def _report(cells: list[Cell], cases: int, seconds: float) -> tuple[str, dict[str, list[Cell]]]:
    checked = [c for c in cells if c.got]
    groups = {
        "UNEXPECTED ALLOWS": [c for c in checked if c.got == ALLOWED and c.want != ALLOWED],
        "unexpected denies": [c for c in checked if c.got == DENIED and c.want != DENIED],
        "other mismatches": [
            c for c in checked if c.got != c.want and c.got not in (ALLOWED, DENIED)
        ],
        "right outcome, wrong error code": [
            c
            for c in checked
            if c.got == c.want and c.want_code and c.status >= 400 and c.code != c.want_code
        ],
        "allowed, but not 2xx (setup did not reach the happy path)": [
            c for c in checked if c.want == ALLOWED == c.got and not 200 <= c.status < 300
        ],
    }
    size = len(ROUTES) * len(ROLES) * len(PLACEMENTS)
    lines = [
        f"permission matrix: {len(ROUTES)} routes × {len(ROLES)} roles × {len(PLACEMENTS)} "
        f"placements = {size} cells; {len(checked)} checked, on {cases} fresh cases, "
        f"in {seconds:.1f}s",
        f"  expected {dict(Counter(c.want for c in cells))}, "
        f"got {dict(Counter(c.got for c in cells))}",
    ]
    for title, group in groups.items():
        lines.append(f"  {title}: {len(group)}")
        lines += [f"    {cell}" for cell in group]
    return "\n".join(lines), groups


async def test_permission_matrix_has_no_unexpected_allows(
    client: httpx.AsyncClient, services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    matrix = Matrix(services, client)
    await matrix.prepare()
    cells = [Cell(route, role, where) for route in ROUTES for role in ROLES for where in PLACEMENTS]
    # Queues first, while the few targets in the database all fit in one page of them; then the
    # summary alone (it counts); then everything else, side by side.
    await _run(matrix, [c for c in cells if c.route.shape == LIST])
    await _run(matrix, [c for c in cells if c.route.shape == COUNT], parallel=1)
    await _run(matrix, [c for c in cells if c.route.shape == ITEM])

    text, groups = _report(cells, matrix.targets.cases, time.monotonic() - started)
    with capsys.disabled():
        print("\n" + text)
    assert sum(1 for c in cells if c.got) == len(cells) == 1595
    assert not groups["UNEXPECTED ALLOWS"], text
    assert not any(groups.values()), text
