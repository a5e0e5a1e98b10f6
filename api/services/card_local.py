"""Each worker's own copy of the card views: a cached scan answered from memory, no round trip.

Redis stays the shared cache and the generation (``card_cache``) stays the truth about what is
current. A worker keeps the answers it served, tagged with the generation they were read under,
and trusts them only while it knows that generation is still Redis's:

* **Told at once.** ``card_cache.invalidate`` publishes every new generation on a Redis channel;
  each worker's follower (``broadcast``) drops its copies when the message arrives (about a
  millisecond), and the worker that made the change drops its own before the call returns.
* **Bounded when not told.** The follower also reads the generation every quarter of
  ``card_cache_local_seconds`` (1 s), which catches a lost message, a subscription that broke
  silently and a flushed Redis. A worker that has not confirmed the generation within
  ``card_cache_local_seconds`` answers from Redis again (and from the database without Redis), so
  a copy is never trusted longer than that after a change, whatever happened to the channel.
* **No stale write-back.** An answer is kept only if the generation Redis gave with it is the one
  this worker had confirmed when the read started, and nothing was dropped in between: a read
  that raced a change can be served once, never kept.

Copies are bounded (``card_cache_local_entries``, the oldest go first) and expire like the Redis
entries (``card_cache.TTL_SECONDS``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    kind: str  # card_cache.FOUND | REVOKED | UNKNOWN
    body: bytes  # the JSON body of a FOUND answer, encoded once
    expires_at: float  # time.monotonic()


@dataclass(frozen=True)
class Mark:
    """What the worker knew when a read started: the confirmed generation and the drop count."""

    epoch: int
    generation: str | None


class LocalCards:
    def __init__(self, *, max_entries: int, trust_seconds: float) -> None:
        self.max_entries = max_entries
        self.trust_seconds = trust_seconds
        self._entries: dict[str, Entry] = {}
        self._generation: str | None = None
        self._epoch = 0
        self._confirmed_at = -float("inf")

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.trust_seconds > 0

    def get(self, code: str) -> Entry | None:
        entry = self._entries.get(code)
        if entry is None:
            return None
        now = time.monotonic()
        if now - self._confirmed_at > self.trust_seconds or now >= entry.expires_at:
            return None
        return entry

    def mark(self) -> Mark:
        trusted = time.monotonic() - self._confirmed_at <= self.trust_seconds
        return Mark(self._epoch, self._generation if trusted else None)

    def put(self, code: str, mark: Mark, generation: str | None, entry: Entry) -> None:
        """Keeps ``entry``, read under Redis ``generation``, if nothing changed since ``mark``."""
        if mark.generation is None or generation != mark.generation or mark.epoch != self._epoch:
            return
        if not self.enabled:
            return
        if code not in self._entries and len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]  # the oldest first
        self._entries[code] = entry

    def drop(self) -> None:
        """Forget every copy and the generation: answers come from Redis until it is confirmed."""
        self._epoch += 1
        self._generation = None
        self._entries.clear()

    def confirm(self, generation: str | None, epoch: int) -> None:
        """The generation Redis holds, read after ``epoch`` was current; a read overtaken by a
        drop is ignored (the watcher reads again at once)."""
        if epoch != self._epoch:
            return
        if generation != self._generation:
            self._epoch += 1
            self._entries.clear()
            self._generation = generation
        if generation is not None:
            self._confirmed_at = time.monotonic()

    @property
    def epoch(self) -> int:
        return self._epoch

    def __len__(self) -> int:
        return len(self._entries)
