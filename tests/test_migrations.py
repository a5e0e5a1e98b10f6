"""The schema comes from the migrations in api/migrations, on PostgreSQL and on SQLite alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tortoise import connections

from api import db

ROOT = Path(__file__).resolve().parent.parent


async def test_models_and_migrations_agree(database: str) -> None:
    # A model change without its migration would reach no database: write one with
    # ``python -m api.migrations make NAME``.
    assert [writer.name for writer in await db.model_changes()] == []


async def test_the_test_database_was_built_by_the_migrations(database: str) -> None:
    rows = await connections.get("default").execute_query_dict(
        "SELECT app, name FROM tortoise_migrations ORDER BY id"
    )
    on_disk = sorted(p.stem for p in (ROOT / "api" / "migrations").glob("0*.py"))
    assert [row["name"] for row in rows] == on_disk
    assert {row["app"] for row in rows} == {"models"}


def test_migrations_build_an_embedded_sqlite_database_once(tmp_path: Path) -> None:
    """The embedded default applies the same migrations to its SQLite file; a second run
    finds nothing to do and keeps the data."""
    url = f"sqlite://{tmp_path / 'pingyi.sqlite3'}"
    script = (
        "import asyncio, sys\n"
        "from tortoise import connections\n"
        "from api import db\n"
        "async def main():\n"
        "    await db.migrate(sys.argv[1])\n"
        "    conn = connections.get('default')\n"
        "    if sys.argv[2] == 'first':\n"
        '        await conn.execute_query("INSERT INTO calendar_override (date, is_workday, note)'
        " VALUES ('2027-01-02', 1, 'kept')\")\n"
        "    rows = await conn.execute_query_dict('SELECT note FROM calendar_override')\n"
        "    applied = await conn.execute_query_dict('SELECT name FROM tortoise_migrations')\n"
        "    print(len(applied), [r['note'] for r in rows])\n"
        "    await db.close_db()\n"
        "asyncio.run(main())\n"
    )
    outputs = [
        subprocess.run(
            [sys.executable, "-c", script, url, run],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.split("\n")[0]
        for run in ("first", "second")
    ]
    migrations = len(list((ROOT / "api" / "migrations").glob("0*.py")))
    assert outputs == [f"{migrations} ['kept']"] * 2
