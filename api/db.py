"""Tortoise configuration and schema migrations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import asyncpg
from tortoise import Tortoise, connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.migrations.autodetector import MigrationAutodetector
from tortoise.migrations.executor import MigrationExecutor
from tortoise.migrations.writer import MigrationWriter
from tortoise.models import Model
from tortoise.queryset import QuerySet

from api.models import MODEL_MODULES

# The schema is what the migrations in this package say (``python -m api.migrations make``
# writes the next one from the models); tables are never created from the models directly.
MIGRATIONS = "api.migrations"
# Several processes may start at once (deploys, the embedded default): one migrates at a time.
_PG_MIGRATION_LOCK = 7_233_017

POOL_MAX = 20
# The default connection's dialect, known from ``init_db`` to ``close_db``: the hot paths ask on
# every request, and finding the connection through Tortoise's context costs more than the rest.
_default_dialect: str | None = None


async def _keep_session(connection: Any) -> None:
    """Nothing to reset when a connection goes back to the pool: the service sets no session
    state (no SET, LISTEN, cursors or session-level advisory locks; its advisory locks are
    transaction-scoped), and asyncpg still rolls back a transaction left open. The default reset
    costs a round trip on every release, i.e. on every query outside a transaction."""


def tortoise_config(database_url: str, *, pool_max: int = POOL_MAX) -> dict[str, Any]:
    url = database_url
    if url.startswith("sqlite://") and "busy_timeout" not in url:
        # The web process and the worker share one SQLite file in the embedded default.
        url += ("&" if "?" in url else "?") + "busy_timeout=10000"
    connection: str | dict[str, Any] = url
    if url.startswith(("postgres://", "asyncpg://")) and "maxsize=" not in url:
        connection = expand_db_url(url)
        connection["credentials"].update(maxsize=pool_max, reset=_keep_session)
    elif url.startswith("sqlite://"):
        connection = {**expand_db_url(url), "engine": "api.sqlite_backend"}
    return {
        "connections": {"default": connection},
        "apps": {
            "models": {
                "models": MODEL_MODULES,
                "default_connection": "default",
                "migrations": MIGRATIONS,
            }
        },
        "use_tz": True,
        "timezone": "Asia/Shanghai",
    }


async def init_db(database_url: str, *, pool_max: int = POOL_MAX) -> None:
    if Tortoise._inited:  # tests open the database before the app's listener runs
        return
    global _default_dialect
    config = tortoise_config(database_url, pool_max=pool_max)
    await Tortoise.init(config=config, _enable_global_fallback=True)
    _default_dialect = default_connection().capabilities.dialect


async def migrate(database_url: str) -> None:
    """Apply the migrations not yet applied (run once, outside the web workers)."""
    await init_db(database_url)
    executor = MigrationExecutor(connections.get("default"), tortoise_config(database_url)["apps"])
    if database_url.startswith("sqlite://"):
        await executor.migrate()
        return
    # The lock is held by a connection of its own, outside the pool the migrations run on.
    lock = await asyncpg.connect(database_url.replace("postgres://", "postgresql://", 1))
    try:
        await lock.execute("SELECT pg_advisory_lock($1)", _PG_MIGRATION_LOCK)
        await executor.migrate()
    finally:
        await lock.close()  # ends the session, and with it the lock


async def model_changes() -> list[MigrationWriter]:
    """The migrations the models need beyond those in ``api/migrations`` (none when they agree)."""
    apps_config = tortoise_config("sqlite://:memory:")["apps"]
    return await MigrationAutodetector(Tortoise.apps, apps_config).changes()


async def close_db() -> None:
    global _default_dialect
    _default_dialect = None
    await Tortoise.close_connections()


def fits(model: type[Model], field: str, value: str | int) -> bool:
    """Whether ``value`` fits the model's column, so a lookup on it can be made at all.

    Tortoise validates filter values like stored ones, and the driver cannot send an integer past
    the column's range: a path or query value longer (or larger) than the column raises (a 500)
    instead of finding nothing, so callers answer "not found" first.
    """
    column = model._meta.fields_map[field]
    if isinstance(value, int):
        bounds = getattr(column, "constraints", {})
        return bool(bounds.get("ge", value) <= value <= bounds.get("le", value))
    max_length = getattr(column, "max_length", None)
    return max_length is None or len(value) <= max_length


def default_connection() -> BaseDBAsyncClient:
    return connections.get("default")


def is_postgres(conn: BaseDBAsyncClient | None = None) -> bool:
    """Hot paths speak SQL to PostgreSQL (production) and go through the ORM elsewhere (the
    embedded SQLite default, where row locks do not exist and one writer runs at a time)."""
    if conn is None and _default_dialect is not None:
        return _default_dialect == "postgres"
    return (conn or default_connection()).capabilities.dialect == "postgres"


async def column(query: QuerySet[Any], name: str) -> list[Any]:
    """One column of a query as a plain list (``values_list(flat=True)``, typed)."""
    return cast(list[Any], await query.values_list(name, flat=True))


_INSERTS: dict[tuple[str, str], tuple[list[str], str]] = {}


def _insert_statement(model: type[Model], conn: BaseDBAsyncClient) -> tuple[list[str], str]:
    key = (conn.connection_name, model._meta.db_table)
    if key not in _INSERTS:
        executor = conn.executor_class(model=model, db=conn)
        names = [
            name
            for name in model._meta.fields_db_projection
            if not model._meta.fields_map[name].generated
        ]
        columns = [model._meta.fields_db_projection[name] for name in names]
        query = executor._prepare_insert_statement(columns, has_generated=False)
        _INSERTS[key] = (names, query.get_sql())
    return _INSERTS[key]


async def insert_rows(
    model: type[Model], rows: Sequence[dict[str, Any]], conn: BaseDBAsyncClient
) -> None:
    """``bulk_create`` without model instances: the same INSERT and the same per-field value
    conversion, from plain dicts (missing fields take their defaults). Building a Tortoise
    instance per row costs more than the INSERT itself in a burst of escalations
    (scripts/bench-sla)."""
    if not rows:
        return
    names, sql = _insert_statement(model, conn)
    fields = [model._meta.fields_map[name] for name in names]
    defaults = [f.default() if callable(f.default) else f.default for f in fields]
    columns = list(zip(names, fields, defaults, strict=True))
    values = [
        [
            # Text, integers, booleans and NULL go as they are; the rest (JSON, datetimes) through
            # the field's own conversion, as bulk_create does.
            value if value is None or type(value) in _PLAIN else field.to_db_value(value, model)
            for name, field, default in columns
            for value in (row.get(name, default),)
        ]
        for row in rows
    ]
    await conn.execute_many(sql, values)


_PLAIN = (str, int, bool)
