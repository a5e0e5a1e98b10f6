"""Schema migrations: ``python -m api.migrations make NAME`` writes the next one from the models,
``python -m api.migrations apply`` applies those not yet applied to ``PINGYI_DATABASE_URL``.

Migrations are written against a scratch SQLite file (the operations they hold are portable);
PostgreSQL in production and tests applies them the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from tortoise.migrations.writer import format_migration_name

from api import db
from api.settings import get_settings


async def make(name: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite://{Path(scratch) / 'schema.sqlite3'}"
        await db.init_db(url)
        try:
            writers = await db.model_changes()
        finally:
            await db.close_db()
    if not writers:
        print("models and migrations agree: nothing to write")
    for writer in writers:
        writer.name = format_migration_name(int(writer.name.split("_", 1)[0]), name)
        print(f"wrote {writer.write()}")


async def apply() -> None:
    try:
        await db.migrate(get_settings().database_url)
    finally:
        await db.close_db()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m api.migrations", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("make", help="write the next migration from the models").add_argument("name")
    sub.add_parser("apply", help="apply the migrations not yet applied")
    args = parser.parse_args()
    asyncio.run(make(args.name) if args.command == "make" else apply())


if __name__ == "__main__":
    main()
