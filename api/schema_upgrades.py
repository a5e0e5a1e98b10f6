"""Changes to existing tables that ``generate_schemas(safe=True)`` does not make (it creates
missing tables and never alters one). Every step is idempotent and runs with each ``db.migrate``
(``python -m api.seed``), on PostgreSQL and on the embedded SQLite file."""

from __future__ import annotations

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model

from api.fieldcrypt import PREFIX
from api.models import AuthSession, Case, Citizen

# (model, field): the encrypted columns (api/fieldcrypt.py), once plain VARCHAR(11).
ENCRYPTED: tuple[tuple[type[Model], str], ...] = ((Citizen, "phone"), (Case, "contact_phone"))
ENCRYPTED_LENGTH = 128


async def upgrade() -> None:
    conn = connections.get("default")
    dialect = conn.capabilities.dialect
    await _add_column(conn, dialect, AuthSession, "family_id", "INT")
    for model, field in ENCRYPTED:
        if dialect == "postgres":  # SQLite does not enforce VARCHAR lengths
            await _widen(conn, model, field, ENCRYPTED_LENGTH)
        await encrypt_plaintext(conn, model, field)


async def _columns(conn: BaseDBAsyncClient, dialect: str, table: str) -> dict[str, int | None]:
    """Column name → its character length (None: not a character column)."""
    if dialect == "postgres":
        rows = await conn.execute_query_dict(
            "SELECT column_name AS name, character_maximum_length AS length "
            "FROM information_schema.columns WHERE table_schema = current_schema() "
            f"AND table_name = '{table}'"
        )
        return {str(r["name"]): r["length"] for r in rows}
    rows = await conn.execute_query_dict(f'PRAGMA table_info("{table}")')
    return {str(r["name"]): None for r in rows}


async def _add_column(
    conn: BaseDBAsyncClient, dialect: str, model: type[Model], field: str, sql_type: str
) -> None:
    table = model._meta.db_table
    if field not in await _columns(conn, dialect, table):
        await conn.execute_script(f'ALTER TABLE "{table}" ADD COLUMN "{field}" {sql_type} NULL')


async def _widen(conn: BaseDBAsyncClient, model: type[Model], field: str, length: int) -> None:
    table = model._meta.db_table
    current = (await _columns(conn, "postgres", table)).get(field)
    if current is not None and current < length:
        await conn.execute_script(
            f'ALTER TABLE "{table}" ALTER COLUMN "{field}" TYPE VARCHAR({length})'
        )


async def encrypt_plaintext(conn: BaseDBAsyncClient, model: type[Model], field: str) -> int:
    """Numbers stored before encryption, encrypted in place (the model's field seals them)."""
    table = model._meta.db_table
    rows = await conn.execute_query_dict(
        f'SELECT id, "{field}" AS v FROM "{table}" '
        f'WHERE "{field}" IS NOT NULL AND "{field}" NOT LIKE \'{PREFIX}%\''
    )
    for row in rows:
        await model.filter(id=row["id"]).using_db(conn).update(**{field: str(row["v"])})
    return len(rows)
