"""What the services need at run time, built once per process from the settings."""

from __future__ import annotations

import logging
import time as _time
import tomllib
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from api.integrations.sms import SmsGateway
from api.integrations.wechat import WeChatGateway
from api.models import CalendarOverride
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
    unknown_years: set[int] = field(default_factory=set)
    _calendars: dict[str, tuple[float, WorkCalendar]] = field(default_factory=dict)

    def profile(self, name: str) -> SlaPolicy:
        return self.profiles.get(name, self.policy)

    def key(self, *parts: str) -> str:
        return self.settings.redis_prefix + ":".join(parts)

    async def calendar(self, policy: SlaPolicy) -> WorkCalendar:
        """The working-day calendar: chinesecalendar + the admin's overrides (cached a minute)."""
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

    def _unknown_year(self, year: int) -> None:
        if year not in self.unknown_years:
            self.unknown_years.add(year)
            log.warning("calendar: year %s unknown to chinesecalendar, Monday–Friday used", year)


def _templates(raw: dict[str, Any]) -> dict[str, SmsTemplate]:
    return {
        key: SmsTemplate(key=key, code=str(t["code"]), text=str(t["text"]))
        for key, t in raw.get("templates", {}).items()
    }


def build_context(settings: Settings, redis: Redis) -> Services:
    policy = load_policy(settings.sla_policy)
    profiles = load_profiles(settings.sla_policy.parent)
    profiles[policy.name] = policy
    with settings.sms_config.open("rb") as fh:
        sms_raw = tomllib.load(fh)
    return Services(
        settings=settings,
        redis=redis,
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
    )
