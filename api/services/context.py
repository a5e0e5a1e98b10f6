"""What the services need at run time, built once per process from the settings."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time as _time
import tomllib
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from api import fieldcrypt
from api.integrations.sms import SmsGateway
from api.integrations.wechat import WeChatGateway
from api.models import CalendarOverride
from api.services.card_local import LocalCards
from api.services.ratelimit import LocalWindow, RedisCounts
from api.services.rating_batch import RatingBatcher
from api.services.session_cache import SessionCache
from api.services.subscribe_config import SubscribeConfig, load_subscribe_config
from api.settings import Settings
from api.sla.policy import SlaPolicy, load_policy, load_profiles
from api.sla.worktime import OfficeHours, WorkCalendar

log = logging.getLogger("pingyi.context")


@dataclass(frozen=True)
class SmsTemplate:
    key: str
    code: str
    text: str


@dataclass
class Services:
    settings: Settings
    redis: Redis
    policy: SlaPolicy
    profiles: dict[str, SlaPolicy]
    wechat: WeChatGateway
    sms: SmsGateway
    sms_templates: dict[str, SmsTemplate]
    subscribe: SubscribeConfig  # WeChat subscribe message templates (config/subscribe.toml)
    # This worker's own state on the scan path (api/services/broadcast.py keeps it in step).
    card_local: LocalCards
    sessions: SessionCache
    ip_window: LocalWindow = field(default_factory=LocalWindow)
    counts: RedisCounts = field(default_factory=RedisCounts)  # rate limit counts, pipelined
    ratings: RatingBatcher = field(default_factory=RatingBatcher)  # group commit (PostgreSQL)
    unknown_years: set[int] = field(default_factory=set)
    _calendars: dict[str, tuple[float, WorkCalendar]] = field(default_factory=dict)
    # Unknown-year admin alert: years noted and not settled, the task settling each, and when a
    # year whose alert could not be written (no province phone, Redis down) may be tried again.
    _alerts_due: set[int] = field(default_factory=set)
    _alert_tasks: dict[int, asyncio.Task[bool]] = field(default_factory=dict)
    _alert_retry_at: dict[int, float] = field(default_factory=dict)

    def profile(self, name: str) -> SlaPolicy:
        return self.profiles.get(name, self.policy)

    def key(self, *parts: str) -> str:
        return self.settings.redis_prefix + ":".join(parts)

    async def calendar(self, policy: SlaPolicy) -> WorkCalendar:
        """The working-day calendar: chinesecalendar + the admin's overrides (cached a minute)."""
        if self._alerts_due:
            self._schedule_alerts()
        cached = self._calendars.get(policy.name)
        if cached and _time.monotonic() - cached[0] < 60:
            return cached[1]
        rows = await CalendarOverride.all().values_list("date", "is_workday")
        calendar = WorkCalendar(
            overrides={d: bool(w) for d, w in rows},
            office_hours=OfficeHours(periods=policy.office_periods),
            on_unknown_year=self._unknown_year,
        )
        self._calendars[policy.name] = (_time.monotonic(), calendar)
        return calendar

    def forget_calendars(self) -> None:
        self._calendars.clear()

    def forget_local(self) -> None:
        """Drops this worker's copies of card views, sessions and per-IP counts (tests)."""
        self.card_local.drop()
        self.sessions.clear()
        self.ip_window = LocalWindow()

    def _unknown_year(self, year: int) -> None:
        if year not in self.unknown_years:
            self.unknown_years.add(year)
            log.warning("calendar: year %s unknown to chinesecalendar, Monday–Friday used", year)
            # --- unknown-year admin alert (api/services/calendar_alert.py) ---
            self._alerts_due.add(year)
            self._alert_retry_at.pop(year, None)
            self._schedule_alerts()

    # --- unknown-year admin alert -------------------------------------------------------------
    # WorkCalendar calls ``_unknown_year`` synchronously, usually deep inside a request's
    # transaction. The alert is written by a task of its own, in a fresh context (so not inside
    # that transaction, which may still roll back); without a running loop (a sync caller) the
    # year stays due and the next ``calendar()`` call schedules it. Only years in
    # ``unknown_years`` are considered, so clearing that set forgets the pending alerts too.

    def _schedule_alerts(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        from api.services.calendar_alert import raise_alert

        now = _time.monotonic()
        for year in self._alerts_due & self.unknown_years:
            if year in self._alert_tasks or now < self._alert_retry_at.get(year, 0.0):
                continue
            self._alert_retry_at[year] = now + 60
            task = loop.create_task(raise_alert(self, year), context=contextvars.Context())
            self._alert_tasks[year] = task
            task.add_done_callback(self._alert_done)

    def _alert_done(self, task: asyncio.Task[bool]) -> None:
        for year, running in list(self._alert_tasks.items()):
            if running is task:
                del self._alert_tasks[year]

    def alert_settled(self, year: int) -> None:
        self._alerts_due.discard(year)

    async def settle_alerts(self) -> None:
        """Waits for the alert tasks in flight (tests; a clean shutdown)."""
        while self._alert_tasks:
            await asyncio.gather(*list(self._alert_tasks.values()), return_exceptions=True)


def _templates(raw: dict[str, Any]) -> dict[str, SmsTemplate]:
    return {
        key: SmsTemplate(key=key, code=str(t["code"]), text=str(t["text"]))
        for key, t in raw.get("templates", {}).items()
    }


def build_context(settings: Settings, redis: Redis) -> Services:
    fieldcrypt.configure(settings.field_key, production=settings.is_production)
    policy = load_policy(settings.sla_policy)
    profiles = load_profiles(settings.sla_policy.parent)
    profiles[policy.name] = policy
    with settings.sms_config.open("rb") as fh:
        sms_raw = tomllib.load(fh)
    return Services(
        settings=settings,
        redis=redis,
        ratings=RatingBatcher(max_calls=settings.rating_calls),
        policy=policy,
        profiles=profiles,
        wechat=WeChatGateway(
            appid=settings.wechat_appid,
            secret=settings.wechat_secret,
            api_base=settings.wechat_api_base,
            timeout=settings.wechat_timeout,
            redis=redis,
            key_prefix=settings.redis_prefix,
        ),
        sms=SmsGateway(
            access_key_id=settings.sms_access_key_id,
            access_key_secret=settings.sms_access_key_secret,
            region=settings.sms_region,
            endpoint=settings.sms_endpoint,
            protocol=settings.sms_protocol,
            timeout=settings.sms_timeout,
            sign_name=str(sms_raw["sign_name"]),
        ),
        sms_templates=_templates(sms_raw),
        subscribe=load_subscribe_config(settings.subscribe_config),
        card_local=LocalCards(
            max_entries=settings.card_cache_local_entries,
            trust_seconds=settings.card_cache_local_seconds,
        ),
        sessions=SessionCache(seconds=settings.session_cache_seconds),
    )
