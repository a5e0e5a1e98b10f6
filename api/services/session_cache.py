"""Citizen sessions remembered by each worker for a few seconds: a rating costs no session query.

What is kept is what never changes for a session — whose it is (citizen id and openid) and when it
expires — for at most ``session_cache_seconds`` (10) after it was read. Revocation:

* in the worker that revokes, at once: ``auth.revoke`` forgets the token before it answers;
* in every other worker, when the news arrives: the token's hash is published on
  ``{prefix}session-revoked`` and each worker's follower (``broadcast``) forgets it;
* without that channel, within ``session_cache_seconds``: a worker that is not following the
  channel keeps nothing, and an entry never outlives its bound.

A lookup that read the database before a revocation and finished after it is not kept (any
revocation since the read started counts), so a revoked session is never remembered as valid.
Only citizen sessions are kept: staff sessions are read every time (disabling an account or a
password change ends them in one update).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class CitizenIdentity:
    """Who a citizen session belongs to: what the rating path needs, immutable for a session."""

    id: int
    openid: str


@dataclass(frozen=True)
class UnreadSession:
    """A citizen token this worker does not remember: read where it is used (a rating reads it in
    its own call). ``mark`` is the revocation count when it was looked for (``SessionCache.mark``)."""

    digest: str
    mark: int


@dataclass(frozen=True)
class _Kept:
    identity: CitizenIdentity
    expires_at: datetime  # the session's own expiry
    fresh_until: float  # time.monotonic()


class SessionCache:
    def __init__(self, *, seconds: float, max_entries: int = 100_000) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self.following = False  # set by the follower while subscribed to the revocations
        self._items: dict[str, _Kept] = {}
        self._revocations = 0

    def get(self, digest: str, now: datetime) -> CitizenIdentity | None:
        kept = self._items.get(digest)
        if kept is None:
            return None
        if not self.following or time.monotonic() > kept.fresh_until or kept.expires_at <= now:
            del self._items[digest]
            return None
        return kept.identity

    def mark(self) -> int:
        return self._revocations

    def put(
        self, digest: str, identity: CitizenIdentity, *, expires_at: datetime, mark: int
    ) -> None:
        if not self.following or self.seconds <= 0 or mark != self._revocations:
            return
        if digest not in self._items and len(self._items) >= self.max_entries:
            del self._items[next(iter(self._items))]
        self._items[digest] = _Kept(identity, expires_at, time.monotonic() + self.seconds)

    def forget(self, digest: str) -> None:
        self._revocations += 1
        self._items.pop(digest, None)

    def clear(self) -> None:
        self._revocations += 1
        self._items.clear()
