"""One clock for the whole service: business code asks ``now()`` here, tests and the demo move it."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

CHINA = ZoneInfo("Asia/Shanghai")

_frozen: datetime | None = None
_offset = timedelta()


def now() -> datetime:
    """The current time, aware, in Asia/Shanghai."""
    if _frozen is not None:
        return _frozen
    return datetime.now(CHINA) + _offset


def freeze(at: datetime) -> None:
    """Stop the clock at ``at`` (tests)."""
    global _frozen
    _frozen = at.astimezone(CHINA)


def advance(delta: timedelta) -> None:
    """Move the clock forward, frozen or not."""
    global _frozen, _offset
    if _frozen is not None:
        _frozen += delta
    else:
        _offset += delta


def reset() -> None:
    global _frozen, _offset
    _frozen = None
    _offset = timedelta()


def to_china(value: datetime) -> datetime:
    return value.astimezone(CHINA)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in +08:00, as the API speaks it."""
    return None if value is None else value.astimezone(CHINA).isoformat(timespec="seconds")
