"""Tortoise's SQLite backend, with write transactions that take the write lock when they begin.

The embedded default runs the API and the worker as two processes on one SQLite file (WAL). A
plain ``BEGIN`` starts as a reader; its first write must then upgrade the lock, and when the
other process committed in between SQLite answers "database is locked" at once — ``busy_timeout``
does not apply to that upgrade. ``BEGIN IMMEDIATE`` takes the write lock first and waits for it
(up to ``busy_timeout``), so one writer goes after the other instead of failing.
"""

from __future__ import annotations

import sqlite3

from tortoise.backends.base.client import TransactionContext
from tortoise.backends.sqlite.client import (
    SqliteClient,
    SqliteTransactionContext,
    SqliteTransactionWrapper,
)
from tortoise.exceptions import TransactionManagementError


class _ImmediateTransaction(SqliteTransactionWrapper):
    async def begin(self) -> None:
        try:
            await self._connection.commit()
            await self._connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise TransactionManagementError(exc) from exc


class ImmediateSqliteClient(SqliteClient):
    def _in_transaction(self) -> TransactionContext:
        return SqliteTransactionContext(_ImmediateTransaction(self), self._lock)


client_class = ImmediateSqliteClient
