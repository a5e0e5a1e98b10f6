"""Tortoise configuration and schema setup."""

from __future__ import annotations

from typing import Any, cast

from tortoise import Tortoise, connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.queryset import QuerySet

from api.models import MODEL_MODULES

POOL_MAX = 20


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
    return {
        "connections": {"default": connection},
        "apps": {"models": {"models": MODEL_MODULES, "default_connection": "default"}},
        "use_tz": True,
        "timezone": "Asia/Shanghai",
    }


async def init_db(database_url: str, *, pool_max: int = POOL_MAX) -> None:
    if Tortoise._inited:  # tests open the database before the app's listener runs
        return
    config = tortoise_config(database_url, pool_max=pool_max)
    await Tortoise.init(config=config, _enable_global_fallback=True)


async def migrate(database_url: str) -> None:
    """Create missing tables and indexes (safe: existing tables are kept)."""
    await init_db(database_url)
    await Tortoise.generate_schemas(safe=True)


async def close_db() -> None:
    await Tortoise.close_connections()


def default_connection() -> BaseDBAsyncClient:
    return connections.get("default")


def is_postgres(conn: BaseDBAsyncClient | None = None) -> bool:
    """Hot paths speak SQL to PostgreSQL (production) and go through the ORM elsewhere (the
    embedded SQLite default, where row locks do not exist and one writer runs at a time)."""
    return (conn or default_connection()).capabilities.dialect == "postgres"


async def column(query: QuerySet[Any], name: str) -> list[Any]:
    """One column of a query as a plain list (``values_list(flat=True)``, typed)."""
    return cast(list[Any], await query.values_list(name, flat=True))
