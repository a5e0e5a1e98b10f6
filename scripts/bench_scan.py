"""Scan-path benchmark: the card view and the evaluation POST against a bare Sanic JSON endpoint.

    scripts/bench-scan [--cards 5000] [--citizens 4001] [--duration 8] [--rounds 3] [--keep]

On this machine, in one run: a throw-away PostgreSQL database and Redis prefix, the Hunan unit
tree, ``--cards`` officers with a card each, ``--citizens`` citizens with a session token each.
Two servers, each a single Sanic worker process with the access log off: the real app
(PostgreSQL + Redis, rate limits on) and a bare Sanic app with one JSON endpoint; next to them
the SLA worker, as deployed, which opens the 差评 cases of the level-2 ratings from their intake
rows while the load runs (its CPU is taken from the same two cores). Load comes from
``wrk`` (Debian package, pinned in scripts/bench-scan) for maximum throughput, and from an
open-loop generator here (several processes, fixed send schedule, latency measured from the
scheduled send time so a stalled server cannot hide its queue) for latency at a fixed rate.

Phases: maximum req/s of the bare endpoint, of ``GET /api/v1/cards/{code}`` (cards cycled, cache
warm) and of ``POST /api/v1/cards/{code}/evaluations`` (each request a distinct citizen × card
pair, so the once-per-24 h rule never refuses; non-2xx counted), repeated ``--rounds`` times
interleaved (the machine is shared: the median of the rounds is reported); then GET card at half
the bare endpoint's rate and at half the GET's own rate, p50/p99; the app worker's RSS; how long
each 差评 waited for its case (rating → opened by the worker). The
report gives the ratios and pass/fail against issue 4's targets; the exit status is 0 whatever
they say.
Everything it made (database, Redis keys, processes, temp files) is removed at the end, also on
Ctrl-C. ``--keep`` keeps the database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_DB = f"pingyi_bench_scan_{os.getpid()}"
REDIS_PREFIX = f"pingyi-bench-scan-{os.getpid()}:"
TARGET_GET_RATIO, TARGET_POST_RATIO, TARGET_P99_MS = 0.50, 0.20, 20.0
BARE_PATH = "/json"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass(frozen=True)
class Options:
    cards: int
    citizens: int
    duration: float
    rounds: int
    connections: int
    threads: int
    latency_seconds: float
    latency_procs: int
    bad_share: float
    keep: bool
    base_url: str
    redis_url: str
    json_path: Path


def parse_options(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="scripts/bench-scan", description=__doc__.split("\n")[0])
    p.add_argument("--cards", type=int, default=5000, help="officers, one card each")
    p.add_argument("--citizens", type=int, default=4001, help="citizens with a token each")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per throughput run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds")
    p.add_argument("--connections", type=int, default=64, help="wrk keep-alive connections")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--latency-seconds", type=float, default=15.0, help="fixed-rate phase length")
    p.add_argument("--latency-procs", type=int, default=2, help="open-loop generator processes")
    p.add_argument("--bad-share", type=float, default=0.1, help="share of level-2 ratings")
    p.add_argument("--keep", action="store_true", help=f"keep the {BENCH_DB} database")
    p.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--json", type=Path, default=ROOT / "var" / "bench-scan.json")
    a = p.parse_args(argv)
    if math.gcd(a.cards, a.citizens) != 1:
        p.error("--cards and --citizens must be coprime (every request a new citizen × card)")
    return Options(
        cards=a.cards,
        citizens=a.citizens,
        duration=a.duration,
        rounds=a.rounds,
        connections=a.connections,
        threads=a.threads,
        latency_seconds=a.latency_seconds,
        latency_procs=a.latency_procs,
        bad_share=a.bad_share,
        keep=a.keep,
        base_url=a.database_url,
        redis_url=a.redis_url,
        json_path=a.json,
    )


def dsn(base_url: str, name: str) -> str:
    head = base_url.replace("postgres://", "postgresql://", 1).rsplit("/", 1)[0]
    return f"{head}/{name}"


def app_url(opts: Options) -> str:
    return dsn(opts.base_url, BENCH_DB).replace("postgresql://", "postgres://", 1)


# --- the two servers (run as ``python scripts/bench_scan.py serve-app|serve-bare PORT``) --------


def serve(kind: str, port: int) -> None:
    from sanic import Sanic
    from sanic.response import json as json_response

    if kind == "bare":
        app = Sanic("bare")

        @app.get(BARE_PATH)
        async def bare(request: Any) -> Any:
            return json_response({"ok": True, "message": "hello"})

    else:
        from api.app import create_app

        app = create_app()
    # The same settings for both: one process, one worker, no access log, no debug.
    app.run(host="127.0.0.1", port=port, single_process=True, access_log=False, motd=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    rss_peak: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> int:
        rss = int(psutil.Process(self.proc.pid).memory_info().rss)
        self.rss_peak = max(self.rss_peak, rss)
        return rss


def start_server(kind: str, env: dict[str, str], tmp: Path) -> Server:
    port = free_port()
    log_path = tmp / f"{kind}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, __file__, f"serve-{kind}", str(port)],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Server(kind, port, proc, log_path)


def wait_ready(server: Server, path: str, limit_s: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited:\n{server.log_path.read_text()[-3000:]}")
        try:
            if httpx.get(server.url + path, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} did not start:\n{server.log_path.read_text()[-3000:]}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


# --- data ---------------------------------------------------------------------------------------


async def create_database(opts: Options) -> None:
    admin = await asyncpg.connect(dsn(opts.base_url, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{BENCH_DB}"')
    finally:
        await admin.close()


async def drop_database(opts: Options) -> None:
    admin = await asyncpg.connect(dsn(opts.base_url, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    finally:
        await admin.close()


async def seed(opts: Options) -> tuple[list[str], list[str]]:
    """Units, officers with a card each (spread over the county units), citizens with tokens."""
    from api import clock, db
    from api.models import AuthSession, Card, Citizen, Officer, Unit
    from api.seed import DIVISIONS_CSV, load_units
    from api.services.auth import token_hash
    from api.services.cards import new_card_code

    await db.migrate(app_url(opts))
    try:
        await load_units(DIVISIONS_CSV)
        counties = await Unit.filter(level="county").order_by("code")
        officers = [
            Officer(
                unit_id=counties[i % len(counties)].id, name=f"执法员{i:05d}", cert_no=f"B{i:09d}"
            )
            for i in range(opts.cards)
        ]
        await Officer.bulk_create(officers, batch_size=1000)
        ids = [o.id for o in await Officer.all().order_by("id")]
        codes = [new_card_code() for _ in ids]
        cards = [Card(code=c, officer_id=i) for c, i in zip(codes, ids, strict=True)]
        await Card.bulk_create(cards, batch_size=1000)
        await Citizen.bulk_create(
            [Citizen(openid=f"bench-{i:06d}") for i in range(opts.citizens)], batch_size=1000
        )
        citizen_ids = [c.id for c in await Citizen.all().order_by("id")]
        tokens = [f"bench-token-{i:06d}-{os.urandom(8).hex()}" for i in citizen_ids]
        expires = clock.now() + timedelta(days=1)
        sessions = [
            AuthSession(token_hash=token_hash(t), kind="citizen", citizen_id=i, expires_at=expires)
            for t, i in zip(tokens, citizen_ids, strict=True)
        ]
        await AuthSession.bulk_create(sessions, batch_size=1000)
        # Statistics as autovacuum keeps them on a live database, not those of empty tables.
        await db.default_connection().execute_script("ANALYZE")
    finally:
        await db.close_db()
    return codes, tokens


async def redis_cleanup(url: str) -> int:
    client = Redis.from_url(url, decode_responses=True)
    try:
        keys = [k async for k in client.scan_iter(match=f"{REDIS_PREFIX}*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
        return len(keys)
    finally:
        await client.aclose()


def app_env(opts: Options, tmp: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PINGYI_")},
        "PINGYI_ENVIRONMENT": "bench",
        "PINGYI_DATABASE_URL": app_url(opts),
        "PINGYI_REDIS_URL": opts.redis_url,
        "PINGYI_REDIS_PREFIX": REDIS_PREFIX,
        "PINGYI_CARDS_DIR": str(tmp / "cards"),
        "PINGYI_UPLOADS_DIR": str(tmp / "uploads"),
        # Rate limits stay on (their Redis round trips are part of the cost); the per-IP limit is
        # raised because all the load comes from one address, 127.0.0.1.
        "PINGYI_RATE_IP_PER_MINUTE": str(10**9),
    }


# --- wrk: maximum throughput --------------------------------------------------------------------

WRK_COMMON = """
local threads = {}
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
"""

GET_LUA = """
local codes = {%(codes)s}
local n = #codes
local i = 0
function init(args) i = tonumber(tid) * 7919 end
function request()
  i = i + 1
  return wrk.format("GET", "/api/v1/cards/" .. codes[(i %% n) + 1])
end
"""

POST_LUA = """
local codes = {%(codes)s}
local tokens = {%(tokens)s}
local nc, nt = #codes, #tokens
local j = 0
local step = %(threads)d
local bad_every = %(bad_every)d
function init(args) j = %(base)d + tonumber(tid) end
function request()
  j = j + step
  local level = 5 - (j %% 3)
  if bad_every > 0 and j %% bad_every == 0 then level = 2 end
  local body = '{"level":' .. level .. ',"dimensions":{"civility":' .. level .. '},"answers":{"showed_id":true}}'
  local headers = {["Content-Type"] = "application/json",
                   ["Authorization"] = "Bearer " .. tokens[(j %% nt) + 1]}
  return wrk.format("POST", "/api/v1/cards/" .. codes[(j %% nc) + 1] .. "/evaluations", headers, body)
end
"""


def wrk_version() -> str:
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    return out.split("\n")[0].split(" Copyright")[0]


def lua_list(items: Sequence[str]) -> str:
    return ",".join(f'"{x}"' for x in items)


@dataclass
class WrkResult:
    rps: float
    requests: int
    non_2xx: int
    socket_errors: int
    latency_avg_ms: float
    server_cpu: float  # share of one core over the run
    wrk_cpu: float
    postgres_cpu: float  # every PostgreSQL process of the machine, share of one core
    redis_cpu: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def service_cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by the machine's PostgreSQL and Redis processes (ended backends
    are not counted: wrk keeps the app's pool connections open for the whole run)."""
    totals = {"postgres": 0.0, "redis": 0.0}
    for proc in psutil.process_iter(["name"]):
        name = proc.info["name"] or ""
        kind = "postgres" if name.startswith("postgres") else "redis" if "redis" in name else None
        if kind is None:
            continue
        with suppress(psutil.Error):
            totals[kind] += sum(proc.cpu_times()[:2])
    return totals


def run_wrk(opts: Options, server: Server, url: str, script: Path | None) -> WrkResult:
    cmd = [
        "wrk",
        f"-t{opts.threads}",
        f"-c{opts.connections}",
        f"-d{max(1, round(opts.duration))}s",
    ]
    if script is not None:
        cmd += ["-s", str(script)]
    cmd.append(url)
    target = psutil.Process(server.proc.pid)
    before = sum(target.cpu_times()[:2])
    services_before = service_cpu_seconds()
    started = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wrk_cpu = 0.0
    while proc.poll() is None:
        with_children = proc.cpu_times()
        wrk_cpu = with_children.user + with_children.system
        server.rss()
        time.sleep(0.2)
    out = proc.stdout.read().decode() if proc.stdout else ""
    elapsed = time.perf_counter() - started
    server_cpu = (sum(target.cpu_times()[:2]) - before) / elapsed
    services_after = service_cpu_seconds()
    services = {k: (services_after[k] - services_before[k]) / elapsed for k in services_after}
    if proc.returncode != 0 or "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed: {out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        requests=int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
        latency_avg_ms=_ms(re.search(r"Latency\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        server_cpu=round(server_cpu, 2),
        wrk_cpu=round(wrk_cpu / elapsed, 2),
        postgres_cpu=round(max(0.0, services["postgres"]), 2),
        redis_cpu=round(max(0.0, services["redis"]), 2),
    )


# --- the open-loop generator: latency at a fixed rate -------------------------------------------


def _open_loop_worker(
    host: str, port: int, paths: list[str], rate: float, seconds: float, conns: int, out: Any
) -> None:
    import uvloop  # Sanic's own event loop, installed with it

    out.send(uvloop.run(_open_loop(host, port, paths, rate, seconds, conns)))


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    match = re.search(rb"(?i)content-length:\s*(\d+)", head)
    if match:
        await reader.readexactly(int(match.group(1)))
    return status


async def _open_loop(
    host: str, port: int, paths: list[str], rate: float, seconds: float, conns: int
) -> dict[str, Any]:
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(conns):
        pool.put_nowait(await asyncio.open_connection(host, port))
    requests = [f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode() for p in paths]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    late_sends = 0
    loop = asyncio.get_running_loop()

    async def one(index: int, due: float) -> None:
        reader, writer = await pool.get()
        writer.write(requests[index % len(requests)])
        status = await _read_response(reader)
        latencies.append(loop.time() - due)  # from the scheduled time: queueing counts
        statuses[status] = statuses.get(status, 0) + 1
        pool.put_nowait((reader, writer))

    total = int(rate * seconds)
    tasks: set[asyncio.Task[None]] = set()
    start = loop.time() + 0.05
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.005:
            late_sends += 1
        task = asyncio.create_task(one(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    # A server that cannot keep up builds a queue: wait for it a bounded time, then count what
    # is still unanswered as unfinished (its latency is infinite for the percentiles).
    if tasks:
        _done, pending = await asyncio.wait(set(tasks), timeout=30)
        for task in pending:
            task.cancel()
        latencies.extend([math.inf] * len(pending))
    elapsed = loop.time() - start
    while not pool.empty():
        pool.get_nowait()[1].close()
    return {
        "latencies": latencies,
        "statuses": statuses,
        "late_sends": late_sends,
        "elapsed": elapsed,
    }


def open_loop(opts: Options, server: Server, paths: list[str], rate: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    procs, pipes = [], []
    per_proc = rate / opts.latency_procs
    conns = max(8, opts.connections // opts.latency_procs)
    target = psutil.Process(server.proc.pid)
    before = sum(target.cpu_times()[:2])
    started = time.perf_counter()
    for k in range(opts.latency_procs):
        mine = paths[k :: opts.latency_procs]
        parent, child = ctx.Pipe(duplex=False)
        args = ("127.0.0.1", server.port, mine, per_proc, opts.latency_seconds, conns, child)
        proc = ctx.Process(target=_open_loop_worker, args=args, daemon=True)
        proc.start()
        procs.append(proc)
        pipes.append(parent)
    parts = [pipe.recv() for pipe in pipes]
    elapsed = time.perf_counter() - started
    server_cpu = (sum(target.cpu_times()[:2]) - before) / elapsed
    server.rss()
    for proc in procs:
        proc.join(timeout=10)
    latencies = sorted(x for part in parts for x in part["latencies"])
    statuses: dict[int, int] = {}
    for part in parts:
        for status, count in part["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    sent = len(latencies)
    unfinished = sum(1 for x in latencies if x == math.inf)
    return {
        "unfinished": unfinished,
        "target_rps": round(rate, 1),
        "achieved_rps": round((sent - unfinished) / max(p["elapsed"] for p in parts), 1),
        "requests": sent,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "late_sends": sum(p["late_sends"] for p in parts),
        "p50_ms": round(1000 * latencies[int(0.50 * (sent - 1))], 2),
        "p90_ms": round(1000 * latencies[int(0.90 * (sent - 1))], 2),
        "p99_ms": round(1000 * latencies[int(0.99 * (sent - 1))], 2),
        "max_ms": round(1000 * latencies[-1], 2),
        "server_cpu": round(server_cpu, 2),
    }


# --- the whole run ------------------------------------------------------------------------------


def write_scripts(opts: Options, tmp: Path, codes: list[str]) -> Path:
    path = tmp / "get.lua"
    path.write_text(WRK_COMMON + GET_LUA % {"codes": lua_list(codes)})
    return path


def post_script(
    opts: Options, tmp: Path, codes: list[str], tokens: list[str], base: int, name: str
) -> Path:
    bad_every = round(1 / opts.bad_share) if opts.bad_share > 0 else 0
    path = tmp / f"post-{name}.lua"
    values = {
        "codes": lua_list(codes),
        "tokens": lua_list(tokens),
        "threads": opts.threads,
        "base": base,
        "bad_every": bad_every,
    }
    path.write_text(WRK_COMMON + POST_LUA % values)
    return path


async def evaluation_count(opts: Options) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn(opts.base_url, BENCH_DB))
    try:
        evaluations = int(await conn.fetchval("SELECT count(*) FROM evaluation"))
        cases = int(await conn.fetchval('SELECT count(*) FROM "case"'))
        return evaluations, cases
    finally:
        await conn.close()


def start_worker(env: dict[str, str], tmp: Path) -> tuple[psutil.Popen, Path]:
    """The SLA worker, as deployed next to the server: it opens the 差评 cases (their intake
    rows) while the ratings come in, on the same two cores. Its SMS go nowhere (a closed port)."""
    log_path = tmp / "worker.log"
    worker_env = {**env, "PINGYI_SMS_ENDPOINT": "127.0.0.1:9", "PINGYI_SMS_PROTOCOL": "http"}
    with log_path.open("wb") as out:
        proc = psutil.Popen(
            [sys.executable, "-m", "api.workers"],
            env=worker_env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, log_path


def wait_worker(log_path: Path, limit_s: float = 60) -> None:
    """Until the worker has started its loops (it logs the calendar check at start)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and "pingyi" not in log_path.read_text(errors="replace"):
        time.sleep(0.2)


def stop_worker(proc: psutil.Popen) -> float:
    """Stops the worker; the CPU seconds it used."""
    cpu = 0.0
    with suppress(psutil.Error):
        times = proc.cpu_times()
        cpu = times.user + times.system
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait()
    return cpu


async def intake_drained(
    opts: Options, *, since: datetime | None = None, limit_s: float = 180
) -> dict[str, Any]:
    """Waits for the worker to open every 差评 case; how long those rated after ``since``
    waited (rating → opened)."""
    conn = await asyncpg.connect(dsn(opts.base_url, BENCH_DB))
    try:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if not await conn.fetchval("SELECT count(*) FROM case_intake"):
                break
            await asyncio.sleep(0.5)
        left = int(await conn.fetchval("SELECT count(*) FROM case_intake"))
        lags = sorted(
            float(x)
            for x in await conn.fetchval(
                "SELECT array_agg(EXTRACT(EPOCH FROM ev.created_at - c.received_at)) "
                'FROM "case" c JOIN case_event ev ON ev.case_id = c.id AND ev.seq = 1 '
                "WHERE c.received_at >= $1",
                since or datetime(2000, 1, 1, tzinfo=UTC),
            )
            or []
        )
    finally:
        await conn.close()
    n = len(lags)
    return {
        "left": left,
        "opened": n,
        "lag_p50_s": round(lags[n // 2], 3) if n else None,
        "lag_p99_s": round(lags[int(0.99 * (n - 1))], 3) if n else None,
    }


def measure(opts: Options, tmp: Path, codes: list[str], tokens: list[str]) -> dict[str, Any]:
    env = app_env(opts, tmp)
    bare = start_server("bare", env, tmp)
    app = start_server("app", env, tmp)
    worker: psutil.Popen | None = None
    results: dict[str, Any] = {"rounds": []}
    try:
        wait_ready(bare, BARE_PATH)
        wait_ready(app, f"/api/v1/cards/{codes[0]}")
        results["rss_idle"] = {"bare": bare.rss(), "app": app.rss()}
        get_lua = write_scripts(opts, tmp, codes)
        log(f"warming the card cache ({len(codes)} cards)")
        warm = Options(**{**opts.__dict__, "duration": 3.0})
        warmed = 0  # every card fetched (a miss), then again (a hit), before measuring hits
        for _ in range(20):
            warmed += run_wrk(warm, app, app.url, get_lua).requests
            if warmed >= 2 * len(codes):
                break
        results["warmup_requests"] = warmed
        per_round = 0
        for r in range(opts.rounds):
            row: dict[str, Any] = {}
            row["bare"] = run_wrk(opts, bare, bare.url + BARE_PATH, None).as_dict()
            row["get_card"] = run_wrk(opts, app, app.url, get_lua).as_dict()
            base = per_round * r + 1
            script = post_script(opts, tmp, codes, tokens, base, str(r))
            row["post_evaluation"] = run_wrk(opts, app, app.url, script).as_dict()
            # The next round starts past every pair this one could have used.
            per_round = max(per_round, int(row["post_evaluation"]["requests"] * 1.5) + 1000)
            log(
                f"round {r + 1}: bare {row['bare']['rps']:.0f} req/s · GET card "
                f"{row['get_card']['rps']:.0f} · POST evaluation {row['post_evaluation']['rps']:.0f}"
                f" (non-2xx {row['post_evaluation']['non_2xx']})"
            )
            results["rounds"].append(row)
        # One more POST run with the SLA worker running next to the server, as deployed on one
        # machine: it opens the 差评 cases while the ratings come in, on the same two cores.
        # First it opens the cases of the runs above (a backlog: how fast it opens them).
        worker, worker_log = start_worker(env, tmp)
        wait_worker(worker_log)
        started = time.monotonic()
        results["backlog"] = asyncio.run(intake_drained(opts))
        results["backlog"]["seconds"] = round(time.monotonic() - started, 1)
        since = datetime.now(UTC)
        script = post_script(opts, tmp, codes, tokens, per_round * opts.rounds + 1, "worker")
        results["post_with_worker"] = run_wrk(opts, app, app.url, script).as_dict()
        log(f"POST evaluation with the worker alongside {results['post_with_worker']['rps']:.0f}")
        results["intake"] = asyncio.run(intake_drained(opts, since=since))
        results["worker_rss"] = worker.memory_info().rss
        results["worker_cpu_s"] = round(stop_worker(worker), 2)
        worker = None
        results["worker_log_errors"] = [
            line
            for line in worker_log.read_text(errors="replace").splitlines()
            if "Traceback" in line or ("ERROR" in line and "sms" not in line.lower())
        ][:20]
        # "Half that load" read both ways: half the bare endpoint's max (the target's reading)
        # and half the GET's own max (the app at half its capacity).
        paths = [f"/api/v1/cards/{c}" for c in codes]
        for key, kind in (("latency", "bare"), ("latency_half_get", "get_card")):
            rate = statistics.median(r[kind]["rps"] for r in results["rounds"]) / 2
            log(f"GET card open-loop at {rate:.0f} req/s for {opts.latency_seconds:.0f} s")
            results[key] = open_loop(opts, app, paths, rate)
        results["rss"] = {
            "app": app.rss(),
            "app_peak": app.rss_peak,
            "bare": bare.rss(),
            "bare_peak": bare.rss_peak,
        }
        results["app_log_errors"] = [
            line
            for line in app.log_path.read_text(errors="replace").splitlines()
            if "ERROR" in line or "Traceback" in line
        ][:20]
    finally:
        if worker is not None:
            stop_worker(worker)
        stop_server(app)
        stop_server(bare)
    return results


async def run(opts: Options) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="pingyi-bench-scan-"))
    results: dict[str, Any] = {
        "options": {**opts.__dict__, "json_path": str(opts.json_path)},
        "wrk": wrk_version(),
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
    }
    try:
        await create_database(opts)
        log(f"seeding {opts.cards} cards and {opts.citizens} citizens in {BENCH_DB}")
        codes, tokens = await seed(opts)
        results.update(await asyncio.to_thread(measure, opts, tmp, codes, tokens))
        results["evaluations"], results["cases_opened"] = await evaluation_count(opts)
    finally:
        results["redis_keys_removed"] = await redis_cleanup(opts.redis_url)
        if not opts.keep:
            await drop_database(opts)
        shutil.rmtree(tmp, ignore_errors=True)
    return results


# --- the report ---------------------------------------------------------------------------------


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    def med(kind: str, key: str = "rps") -> float:
        return float(statistics.median(row[kind][key] for row in r["rounds"]))

    bare, get, post = med("bare"), med("get_card"), med("post_evaluation")
    pairs = r["rounds"]
    return {
        "bare_rps": bare,
        "get_rps": get,
        "post_rps": post,
        "get_ratio": get / bare,
        "post_ratio": post / bare,
        "get_ratio_per_round": [p["get_card"]["rps"] / p["bare"]["rps"] for p in pairs],
        "post_ratio_per_round": [p["post_evaluation"]["rps"] / p["bare"]["rps"] for p in pairs],
        "post_non_2xx": sum(p["post_evaluation"]["non_2xx"] for p in pairs),
        "get_non_2xx": sum(p["get_card"]["non_2xx"] for p in pairs),
        "socket_errors": sum(p[k]["socket_errors"] for p in pairs for k in p),
    }


def latency_ok(lat: dict[str, Any]) -> bool:
    return bool(lat["p99_ms"] <= TARGET_P99_MS and set(lat["statuses"]) == {"200"})


def latency_lines(r: dict[str, Any], lat: dict[str, Any], what: str) -> list[str]:
    verdict = "PASS" if latency_ok(lat) else "FAIL"
    return [
        f"latency: GET card open-loop at {lat['target_rps']:.0f} req/s ({what}) for "
        f"{r['options']['latency_seconds']:.0f} s, {r['options']['latency_procs']} generator "
        f"processes, from the scheduled send time:",
        f"  achieved {lat['achieved_rps']:.0f} req/s, {lat['requests']} requests, statuses "
        f"{lat['statuses']}, unfinished after 30 s {lat['unfinished']}, late sends "
        f"{lat['late_sends']}, server CPU {lat['server_cpu']:.2f}",
        f"  p50 {lat['p50_ms']:.2f} ms · p90 {lat['p90_ms']:.2f} ms · p99 {lat['p99_ms']:.2f} ms "
        f"· max {lat['max_ms']:.2f} ms  (target p99 ≤ {TARGET_P99_MS:.0f} ms)  {verdict}",
    ]


def report_lines(r: dict[str, Any]) -> list[str]:
    s = r["summary"]
    mib = 1024 * 1024
    ok_get = s["get_ratio"] >= TARGET_GET_RATIO
    ok_post = s["post_ratio"] >= TARGET_POST_RATIO
    verdict = {True: "PASS", False: "FAIL"}
    lines = [
        "",
        "== scan path benchmark (issue 4) ==",
        f"machine: {r['cpus']} cores, shared by the servers and the load generator; "
        f"load average before {r['load_before'][0]:.2f}; {r['wrk']}",
        f"data: {r['options']['cards']} cards, {r['options']['citizens']} citizens; each server "
        "one Sanic worker process, access log off; app on PostgreSQL + Redis, rate limits on",
        f"throughput: wrk -t{r['options']['threads']} -c{r['options']['connections']} "
        f"-d{r['options']['duration']}s, {len(r['rounds'])} interleaved rounds, medians:",
    ]
    for i, row in enumerate(r["rounds"], 1):
        lines.append(
            f"  round {i}: bare {row['bare']['rps']:8.0f} req/s (server CPU "
            f"{row['bare']['server_cpu']:.2f}, wrk {row['bare']['wrk_cpu']:.2f}) · GET card "
            f"{row['get_card']['rps']:7.0f} (CPU {row['get_card']['server_cpu']:.2f}) · POST "
            f"evaluation {row['post_evaluation']['rps']:6.0f} (CPU "
            f"{row['post_evaluation']['server_cpu']:.2f}, PostgreSQL "
            f"{row['post_evaluation'].get('postgres_cpu', 0):.2f}, Redis "
            f"{row['post_evaluation'].get('redis_cpu', 0):.2f}, wrk "
            f"{row['post_evaluation']['wrk_cpu']:.2f}, non-2xx {row['post_evaluation']['non_2xx']})"
        )
    lines += [
        f"  bare JSON endpoint        {s['bare_rps']:8.0f} req/s",
        f"  GET  /api/v1/cards/{{code}} {s['get_rps']:8.0f} req/s  = {s['get_ratio']:6.1%} of bare "
        f"(target ≥ {TARGET_GET_RATIO:.0%})  {verdict[ok_get]}",
        f"  POST …/evaluations        {s['post_rps']:8.0f} req/s  = {s['post_ratio']:6.1%} of bare "
        f"(target ≥ {TARGET_POST_RATIO:.0%})  {verdict[ok_post]}",
        f"  non-2xx: GET {s['get_non_2xx']}, POST {s['post_non_2xx']}; socket errors "
        f"{s['socket_errors']}; evaluations stored {r['evaluations']}, 差评 cases opened "
        f"{r['cases_opened']} (level-2 share {r['options']['bad_share']:.0%})",
        f"  with the SLA worker running alongside on the same cores (one more run, it opens the "
        f"差评 cases meanwhile): POST {r['post_with_worker']['rps']:.0f} req/s = "
        f"{r['post_with_worker']['rps'] / s['bare_rps']:.1%} of bare (server CPU "
        f"{r['post_with_worker']['server_cpu']:.2f}, non-2xx {r['post_with_worker']['non_2xx']})",
        f"  差评 cases of that run: {r['intake']['opened']} opened, {r['intake']['left']} left; "
        f"rating → case opened p50 {r['intake']['lag_p50_s']} s, p99 {r['intake']['lag_p99_s']} s;"
        f" before it the worker opened the {r['backlog']['opened']} cases of the runs above in "
        f"{r['backlog']['seconds']} s; worker CPU {r['worker_cpu_s']:.1f} s in all, RSS "
        f"{r['worker_rss'] / 1024 / 1024:.1f} MiB",
        *latency_lines(r, r["latency"], "half the bare max"),
        *latency_lines(r, r["latency_half_get"], "half the GET's own max"),
        f"memory: app worker RSS {r['rss']['app'] / mib:.1f} MiB (peak {r['rss']['app_peak'] / mib:.1f}"
        f", idle {r['rss_idle']['app'] / mib:.1f}); bare worker {r['rss']['bare'] / mib:.1f} MiB",
    ]
    if r.get("app_log_errors"):
        lines.append("app log errors: " + " | ".join(r["app_log_errors"][:5]))
    if r.get("worker_log_errors"):
        lines.append("worker log errors: " + " | ".join(r["worker_log_errors"][:5]))
    lines.append(
        f"cleanup: database {BENCH_DB} dropped, {r['redis_keys_removed']} Redis keys removed"
    )
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in ("serve-app", "serve-bare"):
        serve(args[0].removeprefix("serve-"), int(args[1]))
        return
    opts = parse_options(args)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (scripts/bench-scan installs the pinned package)")
    # SIGTERM ends the run like Ctrl-C: servers stopped, database dropped, Redis keys removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.perf_counter()
    results = asyncio.run(run(opts))
    results["summary"] = summarise(results)
    results["total_s"] = round(time.perf_counter() - started, 1)
    opts.json_path.parent.mkdir(parents=True, exist_ok=True)
    opts.json_path.write_text(json.dumps(results, ensure_ascii=False, indent=2, default=str))
    print("\n".join(report_lines(results)), flush=True)
    print(f"total {results['total_s']} s; JSON: {opts.json_path}", flush=True)


if __name__ == "__main__":
    main()
