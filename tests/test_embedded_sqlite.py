"""The embedded default: the API and the worker write one SQLite file from two processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MIGRATE = """
import asyncio, sys
from api import db

async def main(url):
    await db.migrate(url)
    await db.close_db()

asyncio.run(main(sys.argv[1]))
"""

# Each transaction reads, then writes: the shape of every use case (load, check, change).
WRITER = """
import asyncio, sys
from datetime import date, timedelta
from tortoise.transactions import in_transaction
from api import db

async def main(url, first):
    await db.init_db(url)
    for n in range(first, first + 150):
        async with in_transaction() as conn:
            await conn.execute_query("SELECT count(*) FROM calendar_override")
            await asyncio.sleep(0.002)
            day = (date(2030, 1, 1) + timedelta(days=n)).isoformat()
            await conn.execute_query(
                "INSERT INTO calendar_override (date, is_workday, note) VALUES (?, 1, 'w')", [day]
            )
    await db.close_db()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_two_processes_writing_one_file_take_turns(tmp_path: Path) -> None:
    path = tmp_path / "pingyi.sqlite3"
    url = f"sqlite://{path}"
    subprocess.run([sys.executable, "-c", MIGRATE, url], cwd=ROOT, check=True, timeout=120)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, str(first)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for first in (0, 150)
    ]
    try:
        errors = [writer.communicate(timeout=120)[1] for writer in writers]
    finally:
        for writer in writers:
            writer.kill()  # a writer stuck on the lock must not outlive the test
    assert [writer.returncode for writer in writers] == [0, 0], errors  # never "database is locked"
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM calendar_override").fetchone() == (300,)
