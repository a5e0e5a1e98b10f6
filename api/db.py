"""Tortoise configuration and schema setup."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model
from tortoise.queryset import QuerySet

from api.models import MODEL_MODULES


def tortoise_config(database_url: str) -> dict[str, Any]:
    url = database_url
    if url.startswith("sqlite://") and "busy_timeout" not in url:
        # The web process and the worker share one SQLite file in the embedded default.
        url += ("&" if "?" in url else "?") + "busy_timeout=10000"
    return {
        "connections": {"default": url},
        "apps": {"models": {"models": MODEL_MODULES, "default_connection": "default"}},
        "use_tz": True,
        "timezone": "Asia/Shanghai",
    }


async def init_db(database_url: str) -> None:
    if Tortoise._inited:  # tests open the database before the app's listener runs
        return
    await Tortoise.init(config=tortoise_config(database_url), _enable_global_fallback=True)


async def migrate(database_url: str) -> None:
    """Create missing tables and indexes (safe: existing tables are kept)."""
    await init_db(database_url)
    await Tortoise.generate_schemas(safe=True)


async def close_db() -> None:
    await Tortoise.close_connections()


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
