"""Subscribe message templates (config/subscribe.toml): which template tells the citizen of
which state change, and how a case fills the template's fields within WeChat's value limits."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from api import clock

# The state changes a citizen may subscribe to.
EVENTS = ("acknowledged", "replied", "recheck_opened", "recheck_replied", "closed")
SOURCES = ("ticket", "status", "unit", "time", "kind", "remark")
STATES = ("developer", "trial", "formal")
LANGS = ("zh_CN", "en_US", "zh_HK", "zh_TW")

# WeChat's value limits per field type (subscribeMessage.send); a field's keyword names its type.
LIMITS = {"thing": 20, "phrase": 5, "character_string": 32}
FIELD_KEY = re.compile(r"(thing|phrase|character_string|time)(\d{1,2})")
_NOT_CHARACTER_STRING = re.compile(r"[^0-9A-Za-z!-/:-@\[-`{-~]")
ELLIPSIS = "…"


@dataclass(frozen=True)
class SubscribeTemplate:
    key: str
    id: str
    title: str
    events: tuple[str, ...]
    fields: dict[str, str]  # template keyword (thing1 …) → source (ticket, status …)


@dataclass(frozen=True)
class EventText:
    status: str
    remark: str


@dataclass(frozen=True)
class SubscribeConfig:
    page: str
    miniprogram_state: str
    lang: str
    templates: tuple[SubscribeTemplate, ...]
    events: dict[str, EventText]

    def by_id(self, template_id: str) -> SubscribeTemplate | None:
        return next((t for t in self.templates if t.id == template_id), None)

    def ids_for(self, event: str) -> list[str]:
        return [t.id for t in self.templates if event in t.events]


def field_type(key: str) -> str:
    match = FIELD_KEY.fullmatch(key)
    if match is None:
        raise ValueError(f"unsupported template field {key!r}")
    return match.group(1)


def clamp(key: str, value: str) -> str:
    """``value`` as WeChat accepts it in field ``key``: one line, cut to the type's limit."""
    kind = field_type(key)
    text = " ".join(value.split())
    if kind == "character_string":
        text = _NOT_CHARACTER_STRING.sub("", text)
    limit = LIMITS.get(kind)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + ELLIPSIS if kind == "thing" else text[:limit]
    return text


def time_value(at: datetime) -> str:
    return f"{clock.to_china(at):%Y-%m-%d %H:%M}"


def _template(key: str, raw: dict[str, Any]) -> SubscribeTemplate:
    events = tuple(str(e) for e in raw.get("events", ()))
    fields = {str(k): str(v) for k, v in dict(raw.get("data", {})).items()}
    if not str(raw.get("id", "")).strip() or not events or not fields:
        raise ValueError(f"subscribe template {key}: id, events and data are required")
    if unknown := [e for e in events if e not in EVENTS]:
        raise ValueError(f"subscribe template {key}: unknown events {unknown}")
    for field, source in fields.items():
        kind = field_type(field)
        if source not in SOURCES or (kind == "time") != (source == "time"):
            raise ValueError(f"subscribe template {key}: {field} cannot show {source!r}")
    return SubscribeTemplate(
        key=key,
        id=str(raw["id"]).strip(),
        title=str(raw.get("title", key)),
        events=events,
        fields=fields,
    )


def _event_text(event: str, raw: dict[str, Any]) -> EventText:
    status, remark = str(raw.get("status", "")), str(raw.get("remark", ""))
    if not 0 < len(status) <= LIMITS["phrase"] or not 0 < len(remark) <= LIMITS["thing"]:
        raise ValueError(f"subscribe event {event}: status ≤ 5 and remark ≤ 20 characters")
    return EventText(status=status, remark=remark)


def load_subscribe_config(path: Path) -> SubscribeConfig:
    with path.open("rb") as fh:
        raw = tomllib.load(fh)
    templates = tuple(_template(k, v) for k, v in raw.get("templates", {}).items())
    if len({t.id for t in templates}) != len(templates):
        raise ValueError("subscribe templates: duplicate template ids")
    events = {e: _event_text(e, raw.get("events", {}).get(e, {})) for e in EVENTS}
    config = SubscribeConfig(
        page=str(raw.get("page", "")),
        miniprogram_state=str(raw.get("miniprogram_state", "formal")),
        lang=str(raw.get("lang", "zh_CN")),
        templates=templates,
        events=events,
    )
    if config.miniprogram_state not in STATES or config.lang not in LANGS:
        raise ValueError("subscribe config: unknown miniprogram_state or lang")
    return config
