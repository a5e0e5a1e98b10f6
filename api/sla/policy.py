"""The SLA policy: clock limits and the escalation ladder, loaded from a TOML file under config/."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Any

NATURAL_UNITS = ("natural_seconds", "natural_minutes", "natural_hours", "natural_days")
WORKING_UNITS = ("working_days", "working_hours")


@dataclass(frozen=True)
class Amount:
    amount: float
    unit: str

    @property
    def natural(self) -> bool:
        return self.unit in NATURAL_UNITS


@dataclass(frozen=True)
class ClockRule:
    kind: str
    limit: Amount
    ladder: bool = True


@dataclass(frozen=True)
class Ladder:
    warnings: tuple[float, ...]
    province_after: Amount
    criticism_after: Amount


@dataclass(frozen=True)
class QuietHours:
    enabled: bool
    start: time
    end: time

    def contains(self, moment: time) -> bool:
        if not self.enabled:
            return False
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


@dataclass(frozen=True)
class CaseLimits:
    """How far a case may be stretched or moved (DOMAIN.md defaults: 10 working days, 2)."""

    max_extension_days: int = 10  # 延期: once, at most this many working days
    max_transfers: int = 2  # 转办: never resets the clock


@dataclass(frozen=True)
class SlaPolicy:
    name: str
    title: str
    office_periods: tuple[tuple[time, time], ...]
    quiet_hours: QuietHours
    ladder: Ladder
    clocks: dict[str, ClockRule]
    limits: CaseLimits = CaseLimits()

    def clock(self, kind: str) -> ClockRule:
        return self.clocks[kind]


def _time(text: str) -> time:
    return time.fromisoformat(text)


def _amount(raw: dict[str, Any]) -> Amount:
    unit = str(raw["unit"])
    if unit not in NATURAL_UNITS + WORKING_UNITS:
        raise ValueError(f"unknown time unit {unit!r}")
    amount = float(raw.get("amount", raw.get("limit", 0)))
    if amount <= 0:
        raise ValueError("a time limit must be positive")
    return Amount(amount, unit)


def _limits(raw: dict[str, Any]) -> CaseLimits:
    defaults = CaseLimits()
    limits = CaseLimits(
        max_extension_days=int(raw.get("max_extension_days", defaults.max_extension_days)),
        max_transfers=int(raw.get("max_transfers", defaults.max_transfers)),
    )
    if limits.max_extension_days < 0 or limits.max_transfers < 0:
        raise ValueError("case limits must not be negative")
    return limits


def parse_policy(raw: dict[str, Any]) -> SlaPolicy:
    ladder = raw["ladder"]
    quiet = raw.get("quiet_hours", {})
    return SlaPolicy(
        name=str(raw["name"]),
        title=str(raw.get("title", raw["name"])),
        office_periods=tuple((_time(a), _time(b)) for a, b in raw["office_hours"]["periods"]),
        quiet_hours=QuietHours(
            enabled=bool(quiet.get("enabled", False)),
            start=_time(quiet.get("start", "22:00")),
            end=_time(quiet.get("end", "07:00")),
        ),
        ladder=Ladder(
            warnings=tuple(float(w) for w in ladder.get("warnings", ())),
            province_after=_amount(ladder["province_after"]),
            criticism_after=_amount(ladder["criticism_after"]),
        ),
        clocks={
            kind: ClockRule(kind=kind, limit=_amount(rule), ladder=bool(rule.get("ladder", True)))
            for kind, rule in raw["clocks"].items()
        },
        limits=_limits(raw.get("limits", {})),
    )


def load_policy(path: Path) -> SlaPolicy:
    with path.open("rb") as fh:
        return parse_policy(tomllib.load(fh))


def load_profiles(config_dir: Path) -> dict[str, SlaPolicy]:
    """Every profile shipped under config/ (sla*.toml), by name: open cases keep their own."""
    profiles = {}
    for path in sorted(config_dir.glob("sla*.toml")):
        policy = load_policy(path)
        profiles[policy.name] = policy
    return profiles
