"""Group commit for ratings on PostgreSQL: the plain ratings of many citizens in one call.

Ratings that arrive while a call is at the database wait for the next one; each call is one
``pingyi_rate_many`` (migration 0003): one round trip, one transaction, one commit for the lot.
Each citizen's 201 is sent only once the call that stored the rating has committed, so nothing is
acknowledged that is not stored. Refusals (unknown card, rated within the window, a session that
is no longer valid) are answers per rating, not errors; if the call itself fails, each rating of
it gets that error and none of them is stored (one transaction), as a single rating would.

A citizen this worker does not remember yet is read in the same call: the rating comes with its
session's token hash, and the answer tells whose session it is.

A worker holds one batcher (``Services.ratings``) with up to ``rating_calls`` calls at the
database at once (settings, 8), so one slow call does not hold back the ratings behind it.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from api import db
from api.services.rating_store import Bursts, NewRating, Rated, rated

if TYPE_CHECKING:
    from collections.abc import Sequence

_RATE_MANY = """
SELECT outcome, rating_id, card_ref, officer_ref, last_rated_at, citizen_ref, citizen_openid,
       session_expires_at
FROM pingyi_rate_many($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                      $18)
"""

Waiting = tuple[NewRating, Bursts, "asyncio.Future[Rated]"]


async def rate_many(ratings: Sequence[tuple[NewRating, Bursts]]) -> list[Rated]:
    """One call for ``ratings`` (same settings: one threshold per rule, one SLA profile),
    answers in order."""
    first = ratings[0][1]
    values = [
        [r.session for r, _ in ratings],
        [r.card_code for r, _ in ratings],
        [r.citizen_id for r, _ in ratings],
        [r.level for r, _ in ratings],
        [json.dumps(r.dimensions) for r, _ in ratings],
        [json.dumps(r.answers) for r, _ in ratings],
        [r.comment for r, _ in ratings],
        [r.verified for r, _ in ratings],
        [r.created_at for r, _ in ratings],
        [r.window_since for r, _ in ratings],
        [r.ticket_no for r, _ in ratings],
        ratings[0][0].sla_profile,
        [b.officer_since for _, b in ratings],
        first.officer_threshold,
        first.officer_minutes,
        [b.citizen_since for _, b in ratings],
        first.citizen_threshold,
        first.citizen_minutes,
    ]
    async with db.default_connection().acquire_connection() as raw:
        rows = await raw.fetch(_RATE_MANY, *values)  # the asyncpg connection itself
    return [rated(row) for row in rows]


class RatingBatcher:
    def __init__(self, *, max_batch: int = 64, max_calls: int = 8) -> None:
        self.max_batch = max_batch
        self.max_calls = max_calls  # calls at the database at once
        self._waiting: list[Waiting] = []
        self._calls: set[asyncio.Task[None]] = set()
        self._starting = False  # a call is about to take what is waiting: no other is needed

    async def rate(self, rating: NewRating, bursts: Bursts) -> Rated:
        """Stores ``rating`` with the others waiting, or tells why not; raises what the call
        raised."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Rated] = loop.create_future()
        self._waiting.append((rating, bursts, answer))
        if not self._starting and len(self._calls) < self.max_calls:
            self._starting = True
            call = loop.create_task(self._drain())
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)
        # The rating is stored whether or not its request is still waiting for the answer (a
        # cancelled wait cancels only ``answer``, which the call then leaves alone).
        return await answer

    async def _drain(self) -> None:
        try:
            try:
                await asyncio.sleep(0)  # the ratings that arrive in this turn of the loop join in
            finally:
                self._starting = False
            while self._waiting:
                batch = self._waiting[: self.max_batch]
                self._waiting = self._waiting[self.max_batch :]
                try:
                    answers = await rate_many([(r, b) for r, b, _ in batch])
                except Exception as exc:
                    for *_, answer in batch:
                        if not answer.done():
                            answer.set_exception(exc)
                    continue
                for (*_, answer), one in zip(batch, answers, strict=True):
                    if not answer.done():
                        answer.set_result(one)
        finally:
            # Counted out in the same step that found nothing waiting: a rating added after it
            # starts a call of its own (the done callback would come a turn of the loop late).
            self._calls.discard(asyncio.current_task())  # type: ignore[arg-type]
