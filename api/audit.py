"""Audit-log commands. ``python -m api.audit verify [--case TICKET]`` (``scripts/verify-audit``).

Exit status: 0 the chain is intact, 1 an entry is broken (each broken case's first broken entry is
listed), 2 the case asked for does not exist.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from api import db
from api.models import Case
from api.services.audit import check_chain
from api.settings import get_settings


async def verify(ticket_no: str | None) -> int:
    await db.init_db(get_settings().database_url)
    try:
        case_id = None
        if ticket_no is not None:
            case = await Case.get_or_none(ticket_no=ticket_no)
            if case is None:
                print(f"未找到案件 / no such case: {ticket_no}", file=sys.stderr)
                return 2
            case_id = case.id
        report = await check_chain(case_id)
    finally:
        await db.close_db()
    if not report.problems:
        print(f"审计链完整 / audit chain intact ({report.entries} entries, {report.cases} cases)")
        return 0
    print(
        f"审计链被破坏 / audit chain BROKEN in {len(report.problems)} case(s) "
        f"({report.entries} entries, {report.cases} cases checked):"
    )
    for problem in report.problems:
        print(f"  {problem.describe()}")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.audit", description="审计日志 / audit log")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="verify the hash chain of every case (or one)")
    check.add_argument("--case", metavar="TICKET", help="only this case (ticket number)")
    args = parser.parse_args(argv)
    return asyncio.run(verify(args.case))


if __name__ == "__main__":
    sys.exit(main())
