"""Where evidence bytes live: a small interface, local disk by default (object storage can follow).

Keys are relative, slash-separated names chosen by the caller (``ab/ab12…ef.jpg``); content-addressed
keys make ``put`` idempotent, so two uploads of the same photo race harmlessly.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

from api.settings import Settings

_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")


class StorageKeyError(ValueError):
    """A key that could escape the storage root or is not a plain relative name."""


class Storage(Protocol):
    async def put(self, data: bytes, key: str) -> None: ...

    async def get(self, key: str) -> bytes:
        """The stored bytes; ``FileNotFoundError`` when nothing is stored under ``key``."""
        ...

    async def exists(self, key: str) -> bool: ...


class LocalStorage:
    """Files under one root directory; every disk call runs in a worker thread."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path_of(self, key: str) -> Path:
        if not _KEY.fullmatch(key) or ".." in key.split("/"):
            raise StorageKeyError(f"invalid storage key: {key!r}")
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise StorageKeyError(f"invalid storage key: {key!r}")
        return path

    async def put(self, data: bytes, key: str) -> None:
        await asyncio.to_thread(self._write, self.path_of(key), data)

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self.path_of(key).read_bytes)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path_of(key).is_file)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        # Write beside the target and rename: a reader never sees half a file, and two writers of
        # the same content-addressed key both end with the same complete file.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".put-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o640)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def open_storage(settings: Settings) -> Storage:
    if settings.uploads_storage == "local":
        return LocalStorage(settings.uploads_dir)
    raise RuntimeError(f"unknown uploads storage {settings.uploads_storage!r} (expected: local)")
