"""The production entry point (`sanic api.app:production_app --factory`) refuses to serve while a demo
account, whose password is published in the README, exists; without one it serves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from api.models import StaffUser, Unit
from tests import support
from tests.conftest import REDIS_PREFIX, REDIS_URL, ROOT, _free_port


def _serve(database_url: str, port: int) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PINGYI_ENVIRONMENT": "production",
        "PINGYI_DATABASE_URL": database_url,
        "PINGYI_REDIS_URL": REDIS_URL,
        "PINGYI_REDIS_PREFIX": REDIS_PREFIX,
        "PINGYI_URL_SIGNING_KEY": "a-production-signing-key-of-some-length",
        "PINGYI_FIELD_KEY": "a-production-field-key-of-thirty-two-characters-or-more",
    }
    command = [sys.executable, "-m", "sanic", "api.app:production_app", "--factory"]
    return subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), "--single-process"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _healthy(port: int, server: subprocess.Popen[str], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            time.sleep(0.2)
    return False


async def test_production_refuses_to_start_with_a_demo_account(clean_db: str) -> None:
    unit = await Unit.create(
        code="43", name="湖南省交通运输厅", division_name="湖南省", level="province", path="43/"
    )
    demo = await support.staff("demo-province", unit.code, "province_admin")
    demo.is_demo = True
    await demo.save()

    port = _free_port()
    server = _serve(clean_db, port)
    try:
        output, _ = server.communicate(timeout=90)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    assert server.returncode != 0
    assert "demo-province" in output
    assert not _healthy(port, server, 0.5)

    await StaffUser.filter(is_demo=True).delete()
    server = _serve(clean_db, port)
    healthy = _healthy(port, server, 60)
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
    output, _ = server.communicate(timeout=30)
    assert healthy, output
