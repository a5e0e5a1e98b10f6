"""Building blocks for tests: a small organisation, people in it, and logged-in clients."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import httpx
from tortoise import connections

from api import clock
from api.models import Card, Citizen, Officer, StaffUser, Unit
from api.schemas import ComplaintCreate
from api.seed import load_units
from api.services import citizen_cases, intake
from api.services.cards import new_card_code
from api.services.context import Services
from api.services.passwords import hash_password
from api.settings import ROOT
from tests.conftest import REDIS_PREFIX, REDIS_URL, SMS_KEY, SMS_SECRET

PASSWORD = "pingyi-test-pass"
_nonce = itertools.count()


@lru_cache(maxsize=1)
def password_hash() -> str:
    return hash_password(PASSWORD)


@dataclass
class World:
    officer: Officer  # 芙蓉区大队 (430102)
    card: Card
    other_officer: Officer  # 天心区大队 (430103)
    other_card: Card
    officer_account: StaffUser  # the officer's own staff account


async def staff(
    username: str,
    unit_code: str,
    role: str,
    *,
    officer: Officer | None = None,
    phone: str | None = None,
) -> StaffUser:
    unit = await Unit.get(code=unit_code)
    return await StaffUser.create(
        username=username,
        password_hash=password_hash(),
        name=username,
        role=role,
        unit=unit,
        officer=officer,
        phone=phone,
    )


async def officer_with_card(unit_code: str, name: str, cert_no: str) -> tuple[Officer, Card]:
    unit = await Unit.get(code=unit_code)
    officer = await Officer.create(unit=unit, name=name, cert_no=cert_no)
    card = await Card.create(code=new_card_code(), officer=officer)
    return officer, card


async def make_world() -> World:
    await load_units(ROOT / "data" / "hunan_divisions.csv")
    officer, card = await officer_with_card("430102", "张执法", "43010299001")
    other, other_card = await officer_with_card("430103", "李执法", "43010399001")
    await staff("province", "43", "province_admin")
    await staff("city-4301", "4301", "supervisor", phone="13900004301")
    await staff("county-430102", "430102", "handler", phone="13900430102")
    await staff("county-430103", "430103", "handler", phone="13900430103")
    account = await staff(
        "officer-430102", "430102", "handler", officer=officer, phone="13700430102"
    )
    return World(officer, card, other, other_card, account)


def dev_code(user: str) -> str:
    return f"dev-{user}-{next(_nonce)}x{clock.now().timestamp():.0f}"


async def citizen_token(client: httpx.AsyncClient, user: str = "citizen1") -> dict[str, str]:
    res = await client.post("/api/v1/auth/wechat", json={"code": dev_code(user)})
    assert res.status_code == 200, res.text
    return {"Authorization": f"Bearer {res.json()['token']}"}


async def staff_token(client: httpx.AsyncClient, username: str) -> dict[str, str]:
    res = await client.post(
        "/api/v1/staff/auth/login", json={"username": username, "password": PASSWORD}
    )
    assert res.status_code == 200, res.text
    return {"Authorization": f"Bearer {res.json()['token']}"}


def at(text: str) -> datetime:
    """A moment in China time, e.g. at("2025-03-03 10:00")."""
    return datetime.fromisoformat(text).replace(tzinfo=clock.CHINA)


async def open_intake(services: Services) -> int:
    """What the worker's intake loop does: opens the 差评 cases still waiting; how many."""
    opened = 0
    while done := await intake.open_pending(services, limit=50):
        opened += done
    return opened


# --- escalation cases and worker processes (tests/test_outbox.py, tests/test_faults.py) ----------


async def file_cases(services: Services, world: World, count: int) -> list[str]:
    """``count`` routine complaints about the world's officer, filed now; their ticket numbers."""
    citizen = await Citizen.create(openid=f"o-cases-{next(_nonce)}")
    body = ComplaintCreate(
        card_code=world.card.code, categories=["RUDE"], description="态度恶劣，拒不出示证件。"
    )
    return [
        (await citizen_cases.file_complaint(services, citizen, body))["ticket_no"]
        for _ in range(count)
    ]


def policy_without_quiet_hours(tmp_path: Path) -> Path:
    # Worker processes run on the real clock: at night quiet hours would hold routine SMS back.
    text = (ROOT / "config" / "sla.toml").read_text().replace("enabled = true", "enabled = false")
    path = tmp_path / "sla.toml"
    path.write_text(text)
    return path


def worker_env(
    database_url: str, sms_endpoint: str, policy: Path, **settings: object
) -> dict[str, str]:
    """The environment of a worker process; ``settings`` adds PINGYI_* values (lease_seconds=1)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PINGYI_")},
        "PINGYI_ENVIRONMENT": "test",
        "PINGYI_DATABASE_URL": database_url,
        "PINGYI_REDIS_URL": REDIS_URL,
        "PINGYI_REDIS_PREFIX": REDIS_PREFIX,
        "PINGYI_SMS_ENDPOINT": sms_endpoint,
        "PINGYI_SMS_PROTOCOL": "http",
        "PINGYI_SMS_ACCESS_KEY_ID": SMS_KEY,
        "PINGYI_SMS_ACCESS_KEY_SECRET": SMS_SECRET,
        "PINGYI_SLA_POLICY": str(policy),
        "PINGYI_WORKER_POLL_SECONDS": "0.2",
        "PINGYI_WORKER_BATCH": "20",
    }
    env.update({f"PINGYI_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def start_worker(env: dict[str, str], log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """``python -m api.workers``; its log goes to ``log_path`` (else inherited)."""
    if log_path is None:
        return subprocess.Popen([sys.executable, "-m", "api.workers"], env=env, cwd=ROOT)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "api.workers"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """Terminates the workers still running, killing any that do not stop in time."""
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=5)


# A worker "zygote": one interpreter pays the imports once and forks real worker processes on
# demand (milliseconds instead of seconds), so a test can kill and restart workers many times.
# It is their parent: it kills and reaps them itself, so a pid is never reused while known, and
# its children die with it (PR_SET_PDEATHSIG).
_ZYGOTE = r"""
import asyncio, ctypes, logging, os, signal, sys
from api.workers import runner

children = set()
for line in sys.stdin:
    command, _, arg = line.strip().partition(" ")
    if command == "spawn":
        pid = os.fork()
        if pid == 0:
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            fd = os.open(arg, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(fd, 1), os.dup2(fd, 2), os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
            asyncio.run(runner.main())
            os._exit(0)
        children.add(pid)
        print(pid, flush=True)
    elif command == "kill" and int(arg) in children:
        children.discard(int(arg))
        os.kill(int(arg), signal.SIGKILL)
        print(os.waitpid(int(arg), 0)[1], flush=True)
    elif command == "quit":
        break
for pid in children:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"""


class WorkerZygote:
    """Forks worker processes (``api.workers.runner.main``) and SIGKILLs them on request."""

    def __init__(self, env: dict[str, str]) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def _ask(self, line: str) -> str:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(f"{line}\n".encode())
        self._proc.stdin.flush()
        return self._proc.stdout.readline().decode().strip()

    def spawn(self, log_path: Path) -> int:
        log_path.touch()
        return int(self._ask(f"spawn {log_path}"))

    def kill(self, pid: int) -> None:
        """SIGKILL, then reaped by the zygote."""
        self._ask(f"kill {pid}")

    def close(self) -> None:
        """Kills every worker still running and ends the zygote."""
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(b"quit\n")
                self._proc.stdin.close()
                self._proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()  # its workers die with it (PR_SET_PDEATHSIG)
                self._proc.wait(timeout=5)


# --- many cases at once, set-based (tests/test_workers.py) ---------------------------------------


async def _columns(table: str) -> list[str]:
    conn = connections.get("default")
    rows = await conn.execute_query_dict(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = $1 AND column_name <> 'id' ORDER BY ordinal_position",
        [table],
    )
    return [str(r["column_name"]) for r in rows]


async def clone_case(ticket_no: str, count: int) -> list[int]:
    """``count`` copies of a filed case with its clocks and steps, in three INSERT … SELECT
    statements (a thousand cases in well under a second); the ids of the copies."""
    conn = connections.get("default")
    case_cols = [c for c in await _columns("case") if c != "ticket_no"]
    clock_cols = [c for c in await _columns("case_clock") if c != "case_id"]
    step_cols = [c for c in await _columns("escalation_step") if c not in ("case_id", "clock_id")]
    quoted = ", ".join(f'"{c}"' for c in case_cols)
    rows = await conn.execute_query_dict(
        f'INSERT INTO "case" (ticket_no, {quoted}) '
        f"SELECT left(ticket_no, 8) || lpad(g::text, 8, '0'), {quoted} "
        f'FROM "case", generate_series(1, $2) g WHERE ticket_no = $1 RETURNING id',
        [ticket_no, count],
    )
    ids = [int(r["id"]) for r in rows]
    k_cols = ", ".join(f'k."{c}"' for c in clock_cols)
    await conn.execute_query(
        f"INSERT INTO case_clock (case_id, {', '.join(clock_cols)}) "
        f'SELECT c.id, {k_cols} FROM "case" c, case_clock k '
        f'JOIN "case" t ON t.id = k.case_id AND t.ticket_no = $1 WHERE c.id = ANY($2::int[])',
        [ticket_no, ids],
    )
    s_cols = ", ".join(f's."{c}"' for c in step_cols)
    await conn.execute_query(
        f"INSERT INTO escalation_step (case_id, clock_id, {', '.join(step_cols)}) "
        f"SELECT n.case_id, n.id, {s_cols} FROM case_clock n "
        f"JOIN case_clock k ON k.kind = n.kind "
        f'JOIN "case" t ON t.id = k.case_id AND t.ticket_no = $1 '
        f"JOIN escalation_step s ON s.clock_id = k.id WHERE n.case_id = ANY($2::int[])",
        [ticket_no, ids],
    )
    return ids
