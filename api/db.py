"""Tortoise configuration and schema setup."""

from __future__ import annotations

from typing import Any, cast

from tortoise import Tortoise
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


def fits(model: type[Model], field: str, value: str) -> bool:
    """Whether ``value`` fits the model's text field, so a lookup on it can be made at all.

    Tortoise validates filter values like stored ones: a path or query value longer than the
    column raises (a 500) instead of finding nothing, so callers answer "not found" first.
    """
    max_length = getattr(model._meta.fields_map[field], "max_length", None)
    return max_length is None or len(value) <= max_length


async def column(query: QuerySet[Any], name: str) -> list[Any]:
    """One column of a query as a plain list (``values_list(flat=True)``, typed)."""
    return cast(list[Any], await query.values_list(name, flat=True))
