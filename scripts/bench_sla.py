"""SLA engine benchmark: N open cases with running clocks, then a burst of steps due at once.

    scripts/bench-sla [--cases 1000000] [--due 10000] [--poll 0.5] [--keep]

Builds a throw-away PostgreSQL database (``pingyi_bench_<pid>_<time>``, this run's own) with set-based SQL, then measures on
the real thing — ``python -m api.workers`` subprocesses against PostgreSQL, Redis and the local
Dysmsapi fake:

* the idle cost with every clock pending: the worker's own claim query (``escalation_store.CLAIM_SQL``) under
  EXPLAIN (ANALYZE, BUFFERS), custom and generic plan, and one idle ``run_once`` pass;
* the naive alternative (a full scan of open cases and their clocks on every poll) in the same
  database, its plan and the ratio;
* a burst of ``--due`` steps coming due at the same instant, fired by 1 worker, then (reset) by
  2 workers: time to fire all, firing lag (fired_at - due_at) p50/p99, SMS delivery, worker RSS;
* a steady trickle of steps (spread over ``--steady-window`` seconds): the lag in normal running;
* database, table and Redis sizes.

Prints a table, writes ``var/bench-sla.json`` and drops the database (``--keep`` keeps it).
This is a measurement, not a test: it changes no product file and leaves no process running.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from redis.asyncio import Redis
from tortoise import Tortoise
from tortoise.models import Model

from api import clock, db
from api.fakes.sms import TIMESTAMP_WINDOW, AliyunError, FakeSmsServer
from api.models import Case, CaseClock, EscalationStep
from api.models.case import CaseStatus
from api.redis import open_redis
from api.seed import load_units
from api.services.context import build_context
from api.services.escalation import fire_due_steps, upcoming_steps
from api.services.escalation_store import CLAIM_SQL
from api.settings import ROOT, Settings
from api.workers.runner import run_once

# Unique per run: two runs at once (other worktrees, CI) never drop each other's database or keys.
RUN_ID = f"{os.getpid()}_{int(time.time())}"
BENCH_DB = f"pingyi_bench_{RUN_ID}"
REDIS_PREFIX = f"pingyi-bench-{RUN_ID}:"
SMS_KEY, SMS_SECRET = "pingyi-bench-key", "pingyi-bench-secret"
CHUNK = 100_000  # cases per INSERT … SELECT (progress is printed per chunk)
CITIZENS = 1_000
BULK_TABLES = ("case", "case_clock", "escalation_step")
# The default ladder (config/sla.toml): warnings at 50 % / 80 %, the deadline, the province one
# working day later, 通报 five working days after that (approximated here in natural days).
LADDER = ("warn_50", "warn_80", "due", "province", "criticism")
KEEP_FIRST = ("due", "province", "warn_80", "criticism", "warn_50")  # with fewer steps per clock
STEP_DUE_SQL = {
    "warn_50": "k.started_at + (k.due_at - k.started_at) * 0.5",
    "warn_80": "k.started_at + (k.due_at - k.started_at) * 0.8",
    "due": "k.due_at",
    "province": "k.due_at + interval '1 day'",
    "criticism": "k.due_at + interval '8 days'",
}
TARGETS = {"p99_lag_s": 2.0, "fire_all_s": 10.0, "rss_mb": 150.0}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    cases: int
    due: int
    steps_per_clock: int
    poll: float
    batch: int
    steady: int
    steady_window: float
    timeout: float
    keep: bool
    base_url: str
    redis_url: str
    json_path: Path

    @property
    def ladder(self) -> list[str]:
        keep = set(KEEP_FIRST[: self.steps_per_clock])
        return [name for name in LADDER if name in keep]


def parse_options(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="scripts/bench-sla", description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=1_000_000, help="open cases (2 clocks each)")
    p.add_argument("--due", type=int, default=10_000, help="steps that come due at once")
    p.add_argument("--steps-per-clock", type=int, default=5, choices=range(1, 6))
    p.add_argument("--poll", type=float, default=0.5, help="PINGYI_WORKER_POLL_SECONDS")
    p.add_argument(
        "--batch",
        type=int,
        default=Settings.model_fields["worker_batch"].default,
        help="PINGYI_WORKER_BATCH (default: the product's)",
    )
    p.add_argument("--steady", type=int, default=600, help="steps of the steady-lag phase")
    p.add_argument("--steady-window", type=float, default=30.0, help="seconds they spread over")
    p.add_argument("--timeout", type=float, default=900.0, help="per worker run, seconds")
    p.add_argument("--keep", action="store_true", help=f"keep the {BENCH_DB} database")
    p.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--json", type=Path, default=ROOT / "var" / "bench-sla.json")
    a = p.parse_args(argv)
    if a.cases < 2 * a.due or a.steady > a.due:
        p.error("need --cases >= 2 * --due and --steady <= --due")
    return Options(
        cases=a.cases,
        due=a.due,
        steps_per_clock=a.steps_per_clock,
        poll=a.poll,
        batch=a.batch,
        steady=a.steady,
        steady_window=a.steady_window,
        timeout=a.timeout,
        keep=a.keep,
        base_url=a.database_url,
        redis_url=a.redis_url,
        json_path=a.json,
    )


def dsn(base_url: str, name: str) -> str:
    head = base_url.replace("postgres://", "postgresql://", 1).rsplit("/", 1)[0]
    return f"{head}/{name}"


# --- the SMS fake ------------------------------------------------------------------------------


class BenchSmsServer(FakeSmsServer):
    """The shipped fake, with nonce expiry in O(1).

    ``FakeSmsServer._use_nonce`` walks every nonce of the last 15 minutes on each request; at
    20,000 requests that is ~2·10^8 dict steps under the GIL of this process — a cost of the fake,
    not of Pingyi, which would otherwise be charged to the worker being measured.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._order: deque[tuple[str, float]] = deque()

    def _use_nonce(self, nonce: str) -> None:
        now = time.monotonic()
        with self._lock:
            while self._order and now - self._order[0][1] > TIMESTAMP_WINDOW:
                self._nonces.pop(self._order.popleft()[0], None)
            if nonce in self._nonces:
                raise AliyunError(
                    "SignatureNonceUsed", "Specified signature nonce was used already."
                )
            self._nonces[nonce] = now
            self._order.append((nonce, now))


# --- building the data -------------------------------------------------------------------------

FUNCTIONS_SQL = """
CREATE FUNCTION bench_u(i bigint, salt int) RETURNS float8 LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (hashint8(i * 8 + salt)::bigint + 2147483648) / 4294967296.0 $$;
CREATE FUNCTION bench_span(i bigint, n int) RETURNS interval LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE n WHEN 1 THEN interval '2 days' + bench_u(i, 1) * interval '3 days'
                   ELSE interval '5 days' + bench_u(i, 2) * interval '4 days' END $$;
"""

REFERENCE_SQL = """
INSERT INTO officer (name, cert_no, active, unit_id)
  SELECT '执法员' || u.code, rpad(u.code, 6, '0') || '29001', true, u.id
  FROM unit u WHERE u.level = 'county';
INSERT INTO card (code, created_at, officer_id)
  SELECT md5('bench-card-' || o.id), now(), o.id FROM officer o;
INSERT INTO citizen (openid, is_public_supervisor, public_supervisor_note, created_at)
  SELECT 'o-bench-' || g, false, '', now() FROM generate_series(1, {citizens}) g;
CREATE TEMP TABLE bench_officer AS
  SELECT row_number() OVER (ORDER BY o.id) AS n, o.id AS officer_id, c.id AS card_id,
         u.id AS unit_id, u.path
  FROM officer o JOIN card c ON c.officer_id = o.id JOIN unit u ON u.id = o.unit_id;
"""

# Acknowledged (办理中) cases received in the last day; 1 in 7 a bad-rating follow-up.
CASES_SQL = """
INSERT INTO "case" (id, ticket_no, kind, status, urgency, sla_profile, handling_path, anonymous,
  contact_phone, from_public_supervisor, categories, description, location, discipline_flag,
  criticism_flag, received_at, acknowledged_at, recheck_count, transfer_count, next_due_at,
  version, card_id, citizen_id, handling_unit_id, officer_id, origin_unit_id{extra_cols})
SELECT g, 'PY' || to_char($3::timestamptz AT TIME ZONE 'Asia/Shanghai', 'YYMMDD')
          || lpad(g::text, 8, '0'),
  CASE WHEN g % 7 = 0 THEN 'bad_rating' ELSE 'complaint' END, 'acknowledged', 'normal',
  'default', o.path, false, '138' || lpad((g % 100000000)::text, 8, '0'), false,
  '["RUDE"]'::jsonb, '执法人员态度恶劣，拒不出示执法证件。', '长沙市芙蓉区五一大道', false, false,
  r.received_at, r.received_at + interval '20 minutes', 0, 0, r.received_at + bench_span(g, 1),
  0, o.card_id, $4::int + g % $5::int, o.unit_id, o.officer_id, o.unit_id{extra_vals}
FROM generate_series($1::int, $2::int) g
CROSS JOIN LATERAL (SELECT $3::timestamptz - interval '1 hour'
                           - bench_u(g, 0) * interval '20 hours' AS received_at) r
JOIN bench_officer o ON o.n = 1 + g % $6::int
"""

# Two running clocks per case: 首次联系 + 核查答复 (complaint) or 差评回访核实 + 差评整改反馈.
CLOCKS_SQL = """
INSERT INTO case_clock (id, kind, status, limit_amount, limit_unit, started_at, due_at,
  generation, case_id{extra_cols})
SELECT 2 * (c.id - 1) + n,
  CASE WHEN c.kind = 'complaint' THEN (ARRAY['first_contact', 'reply'])[n]
       ELSE (ARRAY['bad_rating_followup', 'bad_rating_rectify'])[n] END,
  'running',
  CASE WHEN c.kind = 'complaint' THEN (ARRAY[2, 5])[n] ELSE (ARRAY[1, 5])[n] END,
  'working_days', c.received_at, c.received_at + bench_span(c.id, n), 0, c.id{extra_vals}
FROM "case" c CROSS JOIN generate_series(1, 2) n
WHERE c.id BETWEEN $1 AND $2
"""

STEPS_SQL = """
INSERT INTO escalation_step (id, step, generation, due_at, status, case_id, clock_id{extra_cols})
SELECT (k.id - 1) * {per_clock} + s.n, s.name, 0, CASE s.name {due_cases} END, 'pending',
  k.case_id, k.id{extra_vals}
FROM case_clock k CROSS JOIN (VALUES {values}) s(n, name)
WHERE k.id BETWEEN $1 AND $2
"""


def steps_sql(ladder: list[str], extra: dict[str, str]) -> str:
    values = ", ".join(f"({n}, '{name}')" for n, name in enumerate(ladder, start=1))
    due_cases = " ".join(f"WHEN '{name}' THEN {STEP_DUE_SQL[name]}" for name in ladder)
    return STEPS_SQL.format(per_clock=len(ladder), values=values, due_cases=due_cases, **extra)


def sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'::timestamptz"
    if isinstance(value, dict | list):
        return "'" + json.dumps(value).replace("'", "''") + "'::jsonb"
    return "'" + str(value).replace("'", "''") + "'"


async def model_defaults(conn: asyncpg.Connection, model: type[Model], sql: str) -> dict[str, str]:
    """Columns the INSERT does not name that are NOT NULL without a database default.

    Tortoise keeps defaults in Python, and other engineers add fields while this script lives:
    such columns get the model's default, so the bulk rows look like rows the ORM would write.
    """
    table = model._meta.db_table
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
        "AND is_nullable = 'NO' AND column_default IS NULL",
        table,
    )
    by_column = {f.source_field or name: f for name, f in model._meta.fields_map.items()}
    cols, vals = [], []
    for (column,) in rows:
        if re.search(rf"\b{column}\b", sql.split("SELECT", 1)[0]):
            continue
        field = by_column.get(column)
        default = field.default if field is not None else None
        if default is None:
            raise RuntimeError(
                f"{table}.{column}: NOT NULL without a default, unknown to the bench"
            )
        value = default() if callable(default) else default
        cols.append(f", {column}")
        assert field is not None
        vals.append(f", {sql_literal(field.to_db_value(value, model))}")
    return {"extra_cols": "".join(cols), "extra_vals": "".join(vals)}


@dataclass
class SecondaryIndex:
    table: str
    name: str
    create: str  # the statement that recreates it exactly
    drop: str


async def secondary_indexes(conn: asyncpg.Connection) -> list[SecondaryIndex]:
    """The non-primary indexes and unique constraints of the bulk tables, as Tortoise made them."""
    rows = await conn.fetch(
        """
        SELECT t.relname AS tbl, i.relname AS name, pg_get_indexdef(x.indexrelid) AS indexdef,
               con.conname, pg_get_constraintdef(con.oid) AS condef
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        LEFT JOIN pg_constraint con ON con.conindid = x.indexrelid AND con.contype = 'u'
        WHERE t.relname = ANY($1::text[]) AND NOT x.indisprimary
        """,
        list(BULK_TABLES),
    )
    found = []
    for r in rows:
        table = f'"{r["tbl"]}"'
        if r["conname"]:
            create = f'ALTER TABLE {table} ADD CONSTRAINT "{r["conname"]}" {r["condef"]}'
            drop = f'ALTER TABLE {table} DROP CONSTRAINT "{r["conname"]}"'
        else:
            create, drop = r["indexdef"], f'DROP INDEX "{r["name"]}"'
        found.append(SecondaryIndex(r["tbl"], r["name"], create, drop))
    return found


async def create_database(opts: Options) -> None:
    admin = await asyncpg.connect(dsn(opts.base_url, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{BENCH_DB}"')  # a name of this run only
    finally:
        await admin.close()


async def drop_database(opts: Options) -> None:
    admin = await asyncpg.connect(dsn(opts.base_url, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    finally:
        await admin.close()


async def build(opts: Options, conn: asyncpg.Connection, t0: datetime) -> dict[str, Any]:
    """Schema by Tortoise, units by the seed, then the bulk rows by INSERT … SELECT."""
    started = time.perf_counter()
    await Tortoise.generate_schemas()
    units = await load_units(ROOT / "data" / "hunan_divisions.csv")
    await conn.execute(FUNCTIONS_SQL + REFERENCE_SQL.format(citizens=CITIZENS))
    officers = await conn.fetchval("SELECT count(*) FROM bench_officer")
    citizen_min = await conn.fetchval("SELECT min(id) FROM citizen")
    log(f"schema + {units} units + {officers} officers/cards + {CITIZENS} citizens")

    indexes = await secondary_indexes(conn)
    # Bulk-load practice: FK triggers off for this session, secondary indexes built afterwards
    # (the same definitions, recreated from pg_catalog). The rows are consistent by construction.
    await conn.execute(
        "SET session_replication_role = replica; SET synchronous_commit = off;"
        "SET maintenance_work_mem = '1GB'; SET max_parallel_maintenance_workers = 2;"
    )
    for index in indexes:
        await conn.execute(index.drop)
    case_sql = CASES_SQL.format(**await model_defaults(conn, Case, CASES_SQL))
    clock_sql = CLOCKS_SQL.format(**await model_defaults(conn, CaseClock, CLOCKS_SQL))
    step_sql = steps_sql(opts.ladder, await model_defaults(conn, EscalationStep, STEPS_SQL))
    load_started = time.perf_counter()
    for lo in range(1, opts.cases + 1, CHUNK):
        hi = min(lo + CHUNK - 1, opts.cases)
        async with conn.transaction():
            await conn.execute(case_sql, lo, hi, t0, citizen_min, CITIZENS, officers)
            await conn.execute(clock_sql, lo, hi)
            await conn.execute(step_sql, 2 * lo - 1, 2 * hi)
        log(f"  cases {hi:>9,}  ({time.perf_counter() - load_started:6.1f} s)")
    load_s = time.perf_counter() - load_started

    index_started = time.perf_counter()
    for index in indexes:
        await conn.execute(index.create)
    index_s = time.perf_counter() - index_started
    log(f"  {len(indexes)} secondary indexes rebuilt in {index_s:.1f} s")
    await conn.execute(
        "RESET session_replication_role; RESET synchronous_commit;"
        "DROP FUNCTION bench_span(bigint, int); DROP FUNCTION bench_u(bigint, int);"
    )
    for table in BULK_TABLES:
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), "
            f'(SELECT max(id) FROM "{table}"))'
        )
    vacuum_started = time.perf_counter()
    await conn.execute('VACUUM (ANALYZE) "case", case_clock, escalation_step')
    await conn.execute("CHECKPOINT")
    vacuum_s = time.perf_counter() - vacuum_started
    return {
        "units": units,
        "officers": officers,
        "citizens": CITIZENS,
        "load_s": round(load_s, 1),
        "index_build_s": round(index_s, 1),
        "vacuum_analyze_checkpoint_s": round(vacuum_s, 1),
        "build_s": round(time.perf_counter() - started, 1),
    }


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    row = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM "case" WHERE status = ANY($1::varchar[])) AS open_cases,
                  (SELECT count(*) FROM case_clock WHERE status = 'running') AS running_clocks,
                  (SELECT count(*) FROM escalation_step WHERE status = 'pending') AS pending_steps
        """,
        list(CaseStatus.OPEN),
    )
    return dict(row)


async def sizes(conn: asyncpg.Connection) -> dict[str, Any]:
    tables = {}
    for table in BULK_TABLES:
        row = await conn.fetchrow(
            """SELECT pg_total_relation_size($1::regclass) AS total,
                      pg_relation_size($1::regclass) AS heap,
                      pg_indexes_size($1::regclass) AS indexes""",
            f'"{table}"',
        )
        tables[table] = {k: int(v) for k, v in row.items()}
    index_rows = await conn.fetch(
        """SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS def,
                  pg_relation_size(indexrelid) AS bytes
           FROM pg_index WHERE indrelid = 'escalation_step'::regclass ORDER BY 3 DESC"""
    )
    return {
        "database_bytes": int(await conn.fetchval(f"SELECT pg_database_size('{BENCH_DB}')")),
        "tables": tables,
        "escalation_step_indexes": [dict(r) for r in index_rows],
    }


# --- query plans and the idle cost -------------------------------------------------------------


def plan_nodes(plan: dict[str, Any]) -> list[str]:
    """'Node Type [on relation using index]' for every node of a JSON plan, depth first."""
    label = plan["Node Type"]
    if "Index Name" in plan:
        label += f" using {plan['Index Name']}"
    elif "Relation Name" in plan:
        label += f" on {plan['Relation Name']}"
    found = [label]
    for child in plan.get("Plans", []):
        found.extend(plan_nodes(child))
    return found


async def explain(
    conn: asyncpg.Connection, sql: str, *args: Any, runs: int = 1, setup: Sequence[str] = ()
) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) in a rolled-back transaction (the claim takes row locks)."""
    times, doc, text = [], None, ""
    for i in range(runs + 1):
        tx = conn.transaction()
        await tx.start()
        try:
            for statement in setup:
                await conn.execute(statement)
            if i == runs:
                rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
                text = "\n".join(r[0] for r in rows)
            else:
                raw = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args)
                doc = json.loads(raw)[0]
                times.append(float(doc["Execution Time"]))
        finally:
            await tx.rollback()
    assert doc is not None
    nodes = plan_nodes(doc["Plan"])
    return {
        "execution_ms_median": round(statistics.median(times), 3),
        "execution_ms_max": round(max(times), 3),
        "planning_ms": round(float(doc["Planning Time"]), 3),
        "nodes": nodes,
        "uses_index": any("Index" in n for n in nodes) and not any("Seq Scan" in n for n in nodes),
        "plan": text,
    }


def claim_sql(batch: int) -> tuple[str, list[Any]]:
    """The worker's own claim statement (``escalation_store.CLAIM_SQL``) with the parameters it
    binds."""
    return " ".join(CLAIM_SQL.split()), ["pending", clock.now(), batch]


async def explain_claim(conn: asyncpg.Connection, batch: int, runs: int) -> dict[str, Any]:
    sql, args = claim_sql(batch)
    custom = await explain(conn, sql, *args, runs=runs)
    # asyncpg prepares the worker's statements: after five executions PostgreSQL may switch to
    # the generic plan, where due_at <= $2 has no known value. Show that plan too.
    await conn.execute(f"PREPARE bench_claim(varchar, timestamptz, int) AS {sql}")
    try:
        generic = await explain(
            conn,
            f"EXECUTE bench_claim('pending', now(), {int(batch)})",
            runs=runs,
            setup=("SET LOCAL plan_cache_mode = force_generic_plan",),
        )
    finally:
        await conn.execute("DEALLOCATE bench_claim")
    return {"sql": sql, "custom": custom, "generic": generic}


NAIVE_SQL = """SELECT c.id, c.ticket_no, c.handling_unit_id, k.id, k.kind, k.started_at, k.due_at
FROM "case" c JOIN case_clock k ON k.case_id = c.id
WHERE c.status = ANY($1::varchar[]) AND k.status = 'running'"""

NAIVE_SQL_ONLY = """SELECT c.id, k.id, k.kind FROM "case" c JOIN case_clock k ON k.case_id = c.id
WHERE c.status = ANY($1::varchar[]) AND k.status = 'running'
  AND (k.started_at + (k.due_at - k.started_at) * 0.5 <= $2
       OR k.started_at + (k.due_at - k.started_at) * 0.8 <= $2 OR k.due_at <= $2)"""


async def naive_poll(conn: asyncpg.Connection, now: datetime) -> tuple[int, int]:
    """One poll of the naive design: read every open case's clocks, work out crossed thresholds.

    It has no memory of what it already sent (that is the helpdesk bug this design invites);
    here it only counts. Rows are streamed through a cursor to keep memory bounded.
    """
    scanned = crossed = 0
    day = timedelta(days=1)
    async with conn.transaction():
        async for r in conn.cursor(NAIVE_SQL, list(CaseStatus.OPEN), prefetch=10_000):
            started, due = r[5], r[6]
            span = due - started
            scanned += 1
            for at in (started + span * 0.5, started + span * 0.8, due, due + day, due + 8 * day):
                crossed += at <= now
    return scanned, crossed


async def measure_naive(conn: asyncpg.Connection, polls: int = 3) -> dict[str, Any]:
    times, sql_times = [], []
    start = time.perf_counter()  # one Python poll: at 1,000,000 cases it takes a minute or more
    scanned, crossed = await naive_poll(conn, clock.now())
    times.append(time.perf_counter() - start)
    for _ in range(polls):
        start = time.perf_counter()
        await conn.fetch(NAIVE_SQL_ONLY, list(CaseStatus.OPEN), clock.now())
        sql_times.append(time.perf_counter() - start)
    plan = await explain(conn, NAIVE_SQL, list(CaseStatus.OPEN))
    plan_sql = await explain(conn, NAIVE_SQL_ONLY, list(CaseStatus.OPEN), clock.now())
    return {
        "rows_scanned_per_poll": scanned,
        "crossed_thresholds": crossed,
        "python_poll_ms": round(times[0] * 1000, 1),
        "sql_only_poll_ms_median": round(statistics.median(sql_times) * 1000, 1),
        "plan_python": plan,
        "plan_sql_only": plan_sql,
    }


async def measure_run_once(settings: Settings, passes: int = 20) -> dict[str, Any]:
    redis = open_redis(settings.redis_url)
    services = build_context(settings, redis)
    times = []
    try:
        for _ in range(passes):
            start = time.perf_counter()
            done = await run_once(services)
            times.append((time.perf_counter() - start) * 1000)
            assert done == 0, "something was due during the idle measurement"
    finally:
        await redis.aclose()
    return {
        "passes": passes,
        "ms_median": round(statistics.median(times), 2),
        "ms_max": round(max(times), 2),
    }


# --- the worker runs ---------------------------------------------------------------------------


@dataclass
class DueSet:
    step_ids: list[int]
    clock_ids: list[int]
    case_ids: list[int]
    expected_sms: int = 0


def due_set(opts: Options, *, offset: int, size: int, clock_no: int = 2) -> DueSet:
    """The 'due' step of one clock of evenly spread cases (ids follow the build)."""
    stride = opts.cases // opts.due
    cases = [stride * j - offset for j in range(1, size + 1)]
    clocks = [2 * (c - 1) + clock_no for c in cases]
    position = opts.ladder.index("due") + 1
    steps = [(k - 1) * len(opts.ladder) + position for k in clocks]
    return DueSet(steps, clocks, cases)


async def prepare_due_set(conn: asyncpg.Connection, due: DueSet, ladder: list[str]) -> None:
    """Checks the ids and makes the set realistic: its warnings fired earlier, as they would."""
    ok = await conn.fetchval(
        "SELECT count(*) FROM escalation_step WHERE id = ANY($1::int[]) AND step = 'due' "
        "AND status = 'pending' AND clock_id = ANY($2::int[])",
        due.step_ids,
        due.clock_ids,
    )
    assert ok == len(due.step_ids), f"due set: {ok} of {len(due.step_ids)} steps found"
    warnings = [w for w in ("warn_50", "warn_80") if w in ladder]
    await conn.execute(
        "UPDATE escalation_step SET status = 'fired', due_at = now() - interval '2 hours', "
        "fired_at = now() - interval '2 hours' "
        "WHERE clock_id = ANY($1::int[]) AND step = ANY($2::varchar[])",
        due.clock_ids,
        warnings,
    )
    due.expected_sms = await conn.fetchval(
        """SELECT coalesce(sum((u.leader_phone IS NOT NULL)::int
                   + (p.leader_phone IS NOT NULL AND p.leader_phone <> u.leader_phone)::int), 0)
           FROM "case" c JOIN unit u ON u.id = c.handling_unit_id
           LEFT JOIN unit p ON p.id = coalesce(u.supervising_unit_id, u.parent_id)
           WHERE c.id = ANY($1::int[])""",
        due.case_ids,
    )


async def park(conn: asyncpg.Connection, due: DueSet) -> None:
    """Back to pending, far in the future, with what the firing produced removed.

    The whole outbox goes (the bench database holds only bench rows): a digest row of a previous
    run would otherwise keep its phone's digest window open into the next one.
    """
    async with conn.transaction():
        await conn.execute("DELETE FROM sms_outbox")
        await conn.execute(
            "DELETE FROM case_event WHERE case_id = ANY($1::int[]) AND kind = 'sla_overdue'",
            due.case_ids,
        )
        await conn.execute(
            "UPDATE escalation_step SET status = 'pending', fired_at = NULL, "
            "due_at = now() + interval '30 days' WHERE id = ANY($1::int[])",
            due.step_ids,
        )
        await conn.execute(
            "UPDATE case_clock SET breached_at = NULL, due_at = now() + interval '30 days' "
            "WHERE id = ANY($1::int[])",
            due.clock_ids,
        )
    await conn.execute("VACUUM (ANALYZE) escalation_step, case_clock, sms_outbox, case_event")


async def make_due(conn: asyncpg.Connection, due: DueSet, offsets: list[float]) -> datetime:
    """Sets each step (and its clock's deadline) to now() + offset; returns now() of the update."""
    async with conn.transaction():
        now: datetime = await conn.fetchval("SELECT now()")
        await conn.execute(
            "UPDATE escalation_step s SET due_at = $3::timestamptz + make_interval(secs => v.off) "
            "FROM unnest($1::int[], $2::float8[]) v(id, off) WHERE s.id = v.id",
            due.step_ids,
            offsets,
            now,
        )
        await conn.execute(
            "UPDATE case_clock k SET due_at = s.due_at FROM escalation_step s "
            "WHERE s.id = ANY($1::int[]) AND k.id = s.clock_id",
            due.step_ids,
        )
    return now


@dataclass
class Workers:
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]
    rss_max: dict[int, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        while not self.stop.wait(0.1):
            for proc in self.procs:
                try:
                    rss = psutil.Process(proc.pid).memory_info().rss
                except psutil.Error:
                    continue
                self.rss_max[proc.pid] = max(self.rss_max.get(proc.pid, 0), rss)

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.procs:
            with suppress(psutil.Error):
                t = psutil.Process(proc.pid).cpu_times()
                total += t.user + t.system
        return total

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)


def worker_env(opts: Options, sms: FakeSmsServer, policy: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PINGYI_")},
        "PINGYI_ENVIRONMENT": "bench",
        "PINGYI_DATABASE_URL": dsn(opts.base_url, BENCH_DB).replace("postgresql", "postgres", 1),
        "PINGYI_REDIS_URL": opts.redis_url,
        "PINGYI_REDIS_PREFIX": REDIS_PREFIX,
        "PINGYI_SMS_ENDPOINT": sms.endpoint,
        "PINGYI_SMS_PROTOCOL": "http",
        "PINGYI_SMS_ACCESS_KEY_ID": SMS_KEY,
        "PINGYI_SMS_ACCESS_KEY_SECRET": SMS_SECRET,
        "PINGYI_SLA_POLICY": str(policy),
        "PINGYI_WORKER_POLL_SECONDS": str(opts.poll),
        "PINGYI_WORKER_BATCH": str(opts.batch),
    }


def start_workers(n: int, env: dict[str, str], logdir: Path, label: str, cwd: Path) -> Workers:
    procs, logs = [], []
    for i in range(n):
        path = logdir / f"worker-{label}-{i}.log"
        with path.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "api.workers"],
                    env=env,
                    cwd=cwd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        logs.append(path)
    workers = Workers(procs, logs)
    threading.Thread(target=workers.sample, name="rss-sampler", daemon=True).start()
    return workers


async def wait_started(workers: Workers, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if not workers.alive():
            raise RuntimeError("a worker exited:\n" + tail(workers.logs))
        if all("worker started" in p.read_text(errors="replace") for p in workers.logs):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("workers did not start:\n" + tail(workers.logs))


def tail(paths: list[Path], lines: int = 15) -> str:
    return "\n".join(
        "\n".join(p.read_text(errors="replace").splitlines()[-lines:]) for p in paths if p.exists()
    )


def stop_workers(workers: Workers) -> list[int | None]:
    for proc in workers.procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes: list[int | None] = []
    for proc in workers.procs:
        try:
            codes.append(proc.wait(timeout=30))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait(timeout=10))
    workers.stop.set()
    return codes


# Drained: every step settled and no SMS row due now or in flight. Reminders held back by the
# digest window (one reminder SMS per phone per sms_digest_seconds) are not waited for.
PROGRESS_SQL = """
SELECT (SELECT count(*) FROM escalation_step
        WHERE id = ANY($1::int[]) AND status <> 'pending') AS settled,
       (SELECT count(*) FROM sms_outbox
        WHERE status = 'sending' OR (status = 'pending' AND next_attempt_at <= now())) AS sms_due
"""

LAG_SQL = """
SELECT count(*) FILTER (WHERE status = 'fired') AS fired,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM fired_at - due_at)::float8) AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM fired_at - due_at)::float8) AS p99,
       max(extract(epoch FROM fired_at - due_at)::float8) AS max_lag,
       extract(epoch FROM max(fired_at) - min(due_at))::float8 AS all_fired_after
FROM escalation_step WHERE id = ANY($1::int[])
"""

SMS_SQL = """
SELECT count(*) AS rows, count(*) FILTER (WHERE o.status = 'sent') AS sent,
       count(*) FILTER (WHERE o.status = 'pending' AND o.next_attempt_at > now()) AS held,
       count(*) FILTER (WHERE o.status NOT IN ('sent', 'pending')) AS other,
       count(DISTINCT (o.step_id, o.phone)) AS distinct_step_phone,
       max(o.attempts) AS max_attempts,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM o.sent_at - s.due_at)::float8) AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM o.sent_at - s.due_at)::float8) AS p99,
       extract(epoch FROM max(o.sent_at) - min(s.due_at))::float8 AS all_sent_after
FROM sms_outbox o JOIN escalation_step s ON s.id = o.step_id
WHERE o.step_id = ANY($1::int[])
"""

OTHER_SMS_SQL = """
SELECT count(*) AS rows, count(*) FILTER (WHERE status = 'sent') AS sent,
       array_agg(DISTINCT template) AS templates
FROM sms_outbox WHERE step_id IS NULL
"""


def _round(row: asyncpg.Record) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


async def wait_settled(
    conn: asyncpg.Connection, workers: Workers, due: DueSet, limit_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while True:
        row = await conn.fetchrow(PROGRESS_SQL, due.step_ids)
        if row["settled"] == len(due.step_ids) and row["sms_due"] == 0:
            return {"complete": True, **dict(row)}
        if not workers.alive():
            raise RuntimeError("a worker died:\n" + tail(workers.logs))
        if time.monotonic() > deadline:
            return {"complete": False, **dict(row)}
        await asyncio.sleep(0.25)


async def worker_run(
    ctx: BenchContext,
    *,
    n: int,
    due: DueSet,
    offsets: list[float],
    label: str,
    poll: float | None = None,
) -> dict[str, Any]:
    ctx.sms.reset()
    poll = ctx.opts.poll if poll is None else poll
    env = {**ctx.env, "PINGYI_WORKER_POLL_SECONDS": str(poll)}
    workers = start_workers(n, env, ctx.tmp, label, ctx.src)
    try:
        await wait_started(workers)
        await asyncio.sleep(poll * 2)  # a couple of idle polls
        cpu0, t_idle = workers.cpu_seconds(), time.perf_counter()
        await asyncio.sleep(3.0)
        idle_cpu_pct = (workers.cpu_seconds() - cpu0) / (time.perf_counter() - t_idle) * 100 / n
        idle_rss = max(workers.rss_max.values(), default=0)
        due_at = await make_due(ctx.conn, due, offsets)
        log(f"  {label}: {len(due.step_ids):,} steps due from {due_at:%H:%M:%S.%f} ({n} worker(s))")
        wall0, cpu1 = time.perf_counter(), workers.cpu_seconds()
        psutil.cpu_percent()  # starts the machine-wide measurement
        progress = await wait_settled(ctx.conn, workers, due, ctx.opts.timeout)
        wall = time.perf_counter() - wall0
        busy = {
            "machine_cpu_pct": psutil.cpu_percent(),
            "workers_cpu_s": round(workers.cpu_seconds() - cpu1, 1),
            "loadavg_1m_end": round(os.getloadavg()[0], 2),
        }
    finally:
        codes = stop_workers(workers)
    lag = _round(await ctx.conn.fetchrow(LAG_SQL, due.step_ids))
    sms = _round(await ctx.conn.fetchrow(SMS_SQL, due.step_ids))
    other_sms = dict(await ctx.conn.fetchrow(OTHER_SMS_SQL))
    received = list(ctx.sms.received)
    result = {
        "workers": n,
        "poll_s": poll,
        "steps": len(due.step_ids),
        "progress": progress,
        "wall_s_until_drained": round(wall, 2),
        "load": busy,
        "lag": lag,
        "sms": sms,
        "sms_expected": due.expected_sms,
        "sms_other_rows": other_sms,
        "fake_received": len(received),
        "fake_distinct_out_id": len({m["out_id"] for m in received}),
        "worker_rss_max_mb": round(max(workers.rss_max.values(), default=0) / 2**20, 1),
        "worker_rss_idle_mb": round(idle_rss / 2**20, 1),
        "worker_idle_cpu_pct": round(idle_cpu_pct, 2),
        "exit_codes": codes,
    }
    log(
        f"  {label}: fired in {lag['all_fired_after']} s, lag p50 {lag['p50']} s p99 "
        f"{lag['p99']} s; reminders {sms['rows']}/{due.expected_sms} ({sms['sent']} sent, "
        f"{sms['held']} held for the digest window), {len(received)} provider requests; "
        f"RSS max {result['worker_rss_max_mb']} MB; {busy}"
    )
    return result


# --- Redis -------------------------------------------------------------------------------------


async def redis_usage(url: str) -> dict[str, Any]:
    client = Redis.from_url(url, decode_responses=True)
    try:
        keys = [k async for k in client.scan_iter(match=f"{REDIS_PREFIX}*", count=1000)]
        used = 0
        for key in keys:
            used += int(await client.memory_usage(key) or 0)
        info = await client.info("memory")
        return {"keys": len(keys), "bytes": used, "used_memory": int(info["used_memory"])}
    finally:
        await client.aclose()


async def redis_cleanup(url: str) -> None:
    client = Redis.from_url(url, decode_responses=True)
    try:
        keys = [k async for k in client.scan_iter(match=f"{REDIS_PREFIX}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


# --- the whole run -----------------------------------------------------------------------------


@dataclass
class BenchContext:
    opts: Options
    conn: asyncpg.Connection
    sms: FakeSmsServer
    env: dict[str, str]
    tmp: Path
    src: Path  # the snapshot of the code the workers run
    settings: Settings


def snapshot_code(dest: Path) -> str:
    """Copies api/, config/ and data/ for the workers: other engineers edit the tree while the
    bench runs, and the 1- and 2-worker runs must measure the same code."""
    digest = hashlib.sha256()
    for name in ("api", "config", "data"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for path in sorted((dest / "api").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def code_version() -> dict[str, Any]:
    """What was measured: the commit and how many files differ from it (other work in flight)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    return {
        "head": git("rev-parse", "HEAD"),
        "changed_files": len(git("status", "--short").splitlines()),
    }


def policy_without_quiet_hours(tmp: Path) -> Path:
    # The workers run on the real clock: at night quiet hours would hold routine SMS back.
    text = (ROOT / "config" / "sla.toml").read_text().replace("enabled = true", "enabled = false")
    path = tmp / "sla.toml"
    path.write_text(text)
    return path


def bench_settings(opts: Options, sms: FakeSmsServer, policy: Path) -> Settings:
    return Settings(
        environment="bench",
        database_url=dsn(opts.base_url, BENCH_DB).replace("postgresql", "postgres", 1),
        redis_url=opts.redis_url,
        redis_prefix=REDIS_PREFIX,
        sla_policy=policy,
        sms_endpoint=sms.endpoint,
        sms_protocol="http",
        sms_access_key_id=SMS_KEY,
        sms_access_key_secret=SMS_SECRET,
        worker_poll_seconds=opts.poll,
        worker_batch=opts.batch,
    )


async def phase_idle(ctx: BenchContext, results: dict[str, Any]) -> None:
    log("idle cost: claim query plans, idle run_once, naive full scan")
    results["claim_idle"] = await explain_claim(ctx.conn, ctx.opts.batch, runs=20)
    # The worker's other idle statement: when the next step falls due (it sleeps until then).
    probe = upcoming_steps().values_list("due_at", flat=True)
    results["next_due_idle"] = await explain(
        ctx.conn, probe.sql(), "pending", clock.now(), 1, runs=20
    )
    results["run_once_idle"] = await measure_run_once(ctx.settings)
    results["naive"] = await measure_naive(ctx.conn)
    claim_ms = results["claim_idle"]["custom"]["execution_ms_median"]
    naive_ms = results["naive"]["python_poll_ms"]
    results["ratio"] = {
        "naive_python_poll_over_claim_query": round(naive_ms / max(claim_ms, 0.001)),
        "naive_sql_only_over_claim_query": round(
            results["naive"]["sql_only_poll_ms_median"] / max(claim_ms, 0.001)
        ),
        "naive_python_poll_over_idle_run_once": round(
            naive_ms / max(results["run_once_idle"]["ms_median"], 0.001), 1
        ),
    }


class _Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


async def phase_profile(ctx: BenchContext, results: dict[str, Any]) -> None:
    """One batch fired in this process, counting the statements Tortoise sends per step."""
    size = min(ctx.opts.batch, ctx.opts.due)
    prof = due_set(ctx.opts, offset=0, size=size, clock_no=1)
    await prepare_due_set(ctx.conn, prof, ctx.opts.ladder)
    await make_due(ctx.conn, prof, [-1.0] * size)
    redis = open_redis(ctx.settings.redis_url)
    services = build_context(ctx.settings, redis)
    logger, counter = logging.getLogger("tortoise.db_client"), _Counter()
    level = logger.level
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    try:
        start = time.perf_counter()
        fired = await fire_due_steps(services, limit=size)
        elapsed = time.perf_counter() - start
    finally:
        logger.removeHandler(counter)
        logger.setLevel(level)
        await redis.aclose()
    results["fire_profile"] = {
        "steps": size,
        "fired": fired,
        "ms_per_step": round(elapsed * 1000 / max(fired, 1), 2),
        # A whole batch takes about ten statements: per step that is a few hundredths, which
        # one decimal place printed as 0.0. Both figures, unrounded enough to read.
        "statements": counter.count,
        "statements_per_step": round(counter.count / max(fired, 1), 4),
        "note": "in-process, one batch, no other worker; savepoint/commit statements not counted",
    }
    log(f"  profile: {results['fire_profile']}")
    await park(ctx.conn, prof)


async def phase_burst(ctx: BenchContext, results: dict[str, Any]) -> None:
    burst = due_set(ctx.opts, offset=0, size=ctx.opts.due)
    await prepare_due_set(ctx.conn, burst, ctx.opts.ladder)
    # The claim with the whole burst due (all on one due_at, as 17:30 working-day deadlines are).
    await make_due(ctx.conn, burst, [-1.0] * len(burst.step_ids))
    results["claim_loaded"] = await explain_claim(ctx.conn, ctx.opts.batch, runs=5)
    lead = [max(1.0, ctx.opts.poll)] * len(burst.step_ids)  # due a moment after the update
    for n in (1, 2):
        await park(ctx.conn, burst)
        results[f"burst_{n}w"] = await worker_run(
            ctx, n=n, due=burst, offsets=lead, label=f"burst-{n}w"
        )
    results["burst_sms_expected"] = burst.expected_sms


async def phase_steady(ctx: BenchContext, results: dict[str, Any]) -> None:
    steady = due_set(
        ctx.opts, offset=max(1, ctx.opts.cases // ctx.opts.due // 2), size=ctx.opts.steady
    )
    await prepare_due_set(ctx.conn, steady, ctx.opts.ladder)
    await park(ctx.conn, steady)
    n = len(steady.step_ids)
    offsets = [1.0 + ctx.opts.steady_window * i / n for i in range(n)]
    results["steady_1w"] = await worker_run(ctx, n=1, due=steady, offsets=offsets, label="steady")
    # The same at the product's default poll interval, which is what ships.
    default_poll = float(Settings.model_fields["worker_poll_seconds"].default)
    if default_poll != ctx.opts.poll:
        await park(ctx.conn, steady)
        results["steady_default_poll"] = await worker_run(
            ctx, n=1, due=steady, offsets=offsets, label="steady-default-poll", poll=default_poll
        )


async def run(opts: Options) -> dict[str, Any]:
    results: dict[str, Any] = {
        "options": {**opts.__dict__, "json_path": str(opts.json_path), "ladder": opts.ladder}
    }
    results["code"] = code_version()
    results["redis_before"] = await redis_usage(opts.redis_url)
    tmp = Path(tempfile.mkdtemp(prefix="pingyi-bench-"))
    results["code"]["snapshot_sha256"] = snapshot_code(tmp / "src")
    sms = BenchSmsServer(access_keys={SMS_KEY: SMS_SECRET}).start()
    conn: asyncpg.Connection | None = None
    try:
        await create_database(opts)
        policy = policy_without_quiet_hours(tmp)
        settings = bench_settings(opts, sms, policy)
        await db.init_db(settings.database_url)
        conn = await asyncpg.connect(dsn(opts.base_url, BENCH_DB))
        log(f"building {opts.cases:,} cases × 2 clocks × {len(opts.ladder)} steps in {BENCH_DB}")
        results["build"] = await build(opts, conn, clock.now())
        results["counts"] = await counts(conn)
        results["sizes"] = await sizes(conn)
        log(f"built in {results['build']['build_s']} s: {results['counts']}")
        env = worker_env(opts, sms, policy)
        ctx = BenchContext(opts, conn, sms, env, tmp, tmp / "src", settings)
        await phase_idle(ctx, results)
        await phase_profile(ctx, results)
        await phase_burst(ctx, results)
        await phase_steady(ctx, results)
        results["sizes_after"] = await sizes(conn)
        results["redis_after"] = await redis_usage(opts.redis_url)
    finally:
        if conn is not None:
            await conn.close()
        await db.close_db()
        sms.stop()
        await redis_cleanup(opts.redis_url)
        if not opts.keep:
            await drop_database(opts)
        shutil.rmtree(tmp, ignore_errors=True)
    return results


# --- the report --------------------------------------------------------------------------------


def mb(n: float) -> str:
    return f"{n / 2**20:,.1f} MB"


def verdicts(r: dict[str, Any]) -> list[tuple[str, bool, str]]:
    steady, b1, b2 = r["steady_1w"], r["burst_1w"], r["burst_2w"]
    runs = [b1, b2, steady, *([r["steady_default_poll"]] if "steady_default_poll" in r else [])]
    rss = max(x["worker_rss_max_mb"] for x in runs)
    fire_best = min(b1["lag"]["all_fired_after"], b2["lag"]["all_fired_after"])
    claim = r["claim_idle"]
    return [
        (
            f"p99 lag ≤ {TARGETS['p99_lag_s']:g} s, steady (poll {r['options']['poll']} s)",
            steady["lag"]["p99"] <= TARGETS["p99_lag_s"],
            f"{steady['lag']['p99']} s",
        ),
        (
            f"p99 lag ≤ {TARGETS['p99_lag_s']:g} s, burst of {b1['steps']:,}, 2 workers",
            b2["lag"]["p99"] <= TARGETS["p99_lag_s"],
            f"{b2['lag']['p99']} s",
        ),
        (
            f"{b1['steps']:,} due steps fired ≤ {TARGETS['fire_all_s']:g} s (best of 1/2 workers)",
            fire_best <= TARGETS["fire_all_s"],
            f"{fire_best} s",
        ),
        (f"worker RSS ≤ {TARGETS['rss_mb']:g} MB", rss <= TARGETS["rss_mb"], f"{rss} MB"),
        (
            "idle claim uses an index (custom and generic plan)",
            claim["custom"]["uses_index"] and claim["generic"]["uses_index"],
            claim["custom"]["nodes"][-1],
        ),
        (
            "exactly once: each step fired once, one reminder per (step, phone), no OutId sent twice",
            all(_exactly_once(x) for x in runs),
            "checked in SQL and at the fake",
        ),
        *(
            [
                (
                    f"p99 lag ≤ {TARGETS['p99_lag_s']:g} s, steady at the default poll "
                    f"({r['steady_default_poll']['poll_s']} s)",
                    r["steady_default_poll"]["lag"]["p99"] <= TARGETS["p99_lag_s"],
                    f"{r['steady_default_poll']['lag']['p99']} s",
                )
            ]
            if "steady_default_poll" in r
            else []
        ),
    ]


def _exactly_once(run: dict[str, Any]) -> bool:
    sms = run["sms"]
    return bool(
        run["progress"]["complete"]
        and run["lag"]["fired"] == run["steps"]
        and sms["rows"] == run["sms_expected"] == sms["distinct_step_phone"]
        and sms["sent"] + sms["held"] == sms["rows"]
        and sms["other"] == 0
        and run["fake_received"] == run["fake_distinct_out_id"]
    )


def load_line(run: dict[str, Any]) -> str:
    load = run["load"]
    return (
        f"CPU {load['machine_cpu_pct']} % (2 cores), workers {load['workers_cpu_s']} CPU-s, "
        f"load average {load['loadavg_1m_end']}"
    )


def sms_line(run: dict[str, Any]) -> str:
    sms = run["sms"]
    return (
        f"{sms['rows']:,} reminders: {sms['sent']:,} sent (p50 {sms['p50']} s, p99 {sms['p99']} s "
        f"after due), {sms['held']:,} held by the digest window; "
        f"{run['fake_received']:,} SMS requests"
    )


def report_lines(r: dict[str, Any]) -> list[str]:
    o, b, c, s = r["options"], r["build"], r["counts"], r["sizes"]
    b1, b2, st = r["burst_1w"], r["burst_2w"], r["steady_1w"]
    ci, cl, nv = r["claim_idle"], r["claim_loaded"], r["naive"]
    t = s["tables"]
    rows: list[tuple[str, str]] = [
        ("open cases / running clocks", f"{c['open_cases']:,} / {c['running_clocks']:,}"),
        ("pending escalation steps", f"{c['pending_steps']:,} ({len(o['ladder'])} per clock)"),
        (
            "build (schema+load+indexes+vacuum)",
            f"{b['build_s']} s (load {b['load_s']} s, indexes {b['index_build_s']} s, "
            f"vacuum+checkpoint {b['vacuum_analyze_checkpoint_s']} s)",
        ),
        ("worker poll / batch", f"{o['poll']} s / {o['batch']}"),
        ("burst, 1 worker: all fired after", f"{b1['lag']['all_fired_after']} s"),
        ("burst, 1 worker: lag p50 / p99", f"{b1['lag']['p50']} s / {b1['lag']['p99']} s"),
        ("burst, 1 worker: SMS", sms_line(b1)),
        ("burst, 1 worker: machine during the run", load_line(b1)),
        ("burst, 2 workers: all fired after", f"{b2['lag']['all_fired_after']} s"),
        ("burst, 2 workers: lag p50 / p99", f"{b2['lag']['p50']} s / {b2['lag']['p99']} s"),
        ("burst, 2 workers: SMS", sms_line(b2)),
        ("burst, 2 workers: machine during the run", load_line(b2)),
        (
            f"steady ({st['steps']} over {o['steady_window']:g} s, 1 w): lag p50/p99",
            f"{st['lag']['p50']} s / {st['lag']['p99']} s",
        ),
        ("steady: SMS", sms_line(st)),
        *(
            [
                (
                    f"steady at the default poll ({r['steady_default_poll']['poll_s']} s): "
                    "lag p50/p99",
                    f"{r['steady_default_poll']['lag']['p50']} s / "
                    f"{r['steady_default_poll']['lag']['p99']} s",
                )
            ]
            if "steady_default_poll" in r
            else []
        ),
        (
            "fire cost per step (in-process batch)",
            f"{r['fire_profile']['ms_per_step']} ms, "
            f"{r['fire_profile']['statements_per_step']} SQL statements "
            f"({r['fire_profile']['statements']} for a batch of {r['fire_profile']['steps']})",
        ),
        ("database size", mb(s["database_bytes"])),
        (
            "escalation_step heap + indexes",
            f"{mb(t['escalation_step']['heap'])} + {mb(t['escalation_step']['indexes'])}",
        ),
        (
            "case_clock heap + indexes",
            f"{mb(t['case_clock']['heap'])} + {mb(t['case_clock']['indexes'])}",
        ),
        ("case heap + indexes", f"{mb(t['case']['heap'])} + {mb(t['case']['indexes'])}"),
        *[(f"  index {i['name']}", mb(i["bytes"])) for i in s["escalation_step_indexes"]],
        (
            "Redis: project keys / bytes",
            f"{r['redis_after']['keys']} keys / {r['redis_after']['bytes']} B "
            f"(used_memory {r['redis_before']['used_memory']:,} → "
            f"{r['redis_after']['used_memory']:,} B)",
        ),
        (
            "worker RSS max (1w / 2w / steady)",
            f"{b1['worker_rss_max_mb']} / {b2['worker_rss_max_mb']} / {st['worker_rss_max_mb']} MB "
            f"(idle {b1['worker_rss_idle_mb']} MB)",
        ),
        ("worker CPU while idle", f"{b1['worker_idle_cpu_pct']} % of a core"),
        (
            "idle claim query (custom plan)",
            f"{ci['custom']['execution_ms_median']} ms median, {ci['custom']['nodes'][-1]}",
        ),
        (
            "idle claim query (generic plan)",
            f"{ci['generic']['execution_ms_median']} ms median, {ci['generic']['nodes'][-1]}",
        ),
        (
            f"claim with {b1['steps']:,} due (ties)",
            f"{cl['custom']['execution_ms_median']} ms, {' → '.join(cl['custom']['nodes'])}",
        ),
        (
            "idle next-due probe",
            f"{r['next_due_idle']['execution_ms_median']} ms median, "
            f"{' → '.join(r['next_due_idle']['nodes'])}",
        ),
        ("idle run_once pass", f"{r['run_once_idle']['ms_median']} ms median"),
        (
            "naive poll: scan + Python",
            f"{nv['python_poll_ms']:,} ms ({nv['rows_scanned_per_poll']:,} rows)",
        ),
        (
            "naive poll: thresholds in SQL",
            f"{nv['sql_only_poll_ms_median']:,} ms, {' → '.join(nv['plan_sql_only']['nodes'])}",
        ),
        (
            "ratio naive / indexed claim query",
            f"{r['ratio']['naive_python_poll_over_claim_query']:,}× (Python), "
            f"{r['ratio']['naive_sql_only_over_claim_query']:,}× (SQL only)",
        ),
        ("ratio naive / idle run_once", f"{r['ratio']['naive_python_poll_over_idle_run_once']}×"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = ["", "Pingyi SLA engine benchmark", "=" * (width + 40)]
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines += ["", "targets"]
    lines += [f"  {'PASS' if ok else 'FAIL'}  {name}: {value}" for name, ok, value in verdicts(r)]
    lines += [
        "",
        "idle claim plan (custom):",
        ci["custom"]["plan"],
        "",
        "idle claim plan (generic):",
        ci["generic"]["plan"],
        "",
        f"claim plan with {b1['steps']:,} due:",
        cl["custom"]["plan"],
        "",
        "naive scan plan:",
        nv["plan_python"]["plan"],
        "",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    opts = parse_options(argv)
    # SIGTERM ends the run like Ctrl-C: workers stopped, database dropped, temp files removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.perf_counter()
    results = asyncio.run(run(opts))
    results["total_s"] = round(time.perf_counter() - started, 1)
    results["verdicts"] = [
        {"target": name, "pass": ok, "value": value} for name, ok, value in verdicts(results)
    ]
    opts.json_path.parent.mkdir(parents=True, exist_ok=True)
    opts.json_path.write_text(json.dumps(results, ensure_ascii=False, indent=2, default=str))
    print("\n".join(report_lines(results)), flush=True)
    print(f"total {results['total_s']} s; JSON: {opts.json_path}", flush=True)


if __name__ == "__main__":
    main()
