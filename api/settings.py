"""One typed settings object, read from the environment (prefix ``PINGYI_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
DEV_URL_SIGNING_KEY = "pingyi-dev-url-signing-key"
DEV_FIELD_KEY = "pingyi-dev-field-key-never-use-in-production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PINGYI_", extra="ignore")

    environment: str = "development"  # development | test | production
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = f"sqlite://{ROOT / 'var' / 'pingyi.sqlite3'}"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "pingyi:"
    public_base_url: str = "https://pingyi.example.gov.cn"
    cards_dir: Path = ROOT / "var" / "cards"
    sla_policy: Path = ROOT / "config" / "sla.toml"
    sms_config: Path = ROOT / "config" / "sms.toml"

    citizen_token_ttl: int = 7 * 24 * 3600
    staff_token_ttl: int = 8 * 3600
    # After POST /auth/refresh the old citizen token lives this long (requests in flight, a
    # retried refresh gets the same new token), then dies (api/services/sessions.py).
    citizen_refresh_grace_seconds: int = 60

    wechat_appid: str = "wxpingyidemo000001"
    wechat_secret: str = "pingyi-demo-wechat-secret"
    wechat_api_base: str = "https://api.weixin.qq.com/"
    wechat_timeout: float = 5.0

    sms_access_key_id: str = "pingyi-demo-key"
    sms_access_key_secret: str = "pingyi-demo-secret"
    sms_region: str = "cn-hangzhou"
    sms_endpoint: str = "dysmsapi.aliyuncs.com"
    sms_protocol: str = "https"
    sms_timeout: float = 5.0

    # SMS to a unit's handlers when a new case reaches it (off where subscribe messages do it).
    notify_new_cases: bool = True
    worker_poll_seconds: float = 0.5  # an idle pass costs ~2 ms (scripts/bench-sla)
    # Steps fired per transaction (and SMS sent per pass): larger batches fire a burst faster,
    # at the cost of holding the batch's case rows locked for longer (scripts/bench-sla).
    worker_batch: int = 500
    # Batches fired at once, each on its own connection, while a backlog lasts (api/workers).
    worker_fire_lanes: int = 2
    sms_lease_seconds: int = 60

    # --- evidence photos (api/services/uploads.py) ---
    uploads_storage: str = "local"  # local | (oss, later)
    uploads_dir: Path = ROOT / "var" / "uploads"
    url_signing_key: str = DEV_URL_SIGNING_KEY  # production refuses to start with this value
    # Encrypts citizens' phones at rest (api/fieldcrypt.py); production refuses the default.
    field_key: str = DEV_FIELD_KEY
    evidence_url_ttl: int = 600  # seconds a signed photo URL stays valid
    # --- end evidence photos ---
    sms_digest_seconds: int = 300  # reminders to one phone within this window: one digest SMS

    # --- rate limits, Idempotency-Key, two-tap login (api/middleware.py, api/services/auth.py) ---
    # X-Forwarded-For is trusted only behind this many proxies (0: the socket peer is the client).
    trusted_proxies: int = 0
    real_ip_header: str = ""  # e.g. X-Real-IP, set by the trusted proxy; ignored when 0 proxies
    rate_limits_enabled: bool = True
    rate_ip_per_minute: int = 600  # all requests from one IP (carrier NAT: keep generous)
    rate_posts_per_minute: int = 60  # POSTs per caller (bearer session, else IP); 0 = off
    rate_complaints_per_hour: int = 10  # complaints filed per citizen; 0 = off
    idempotency_ttl: int = 24 * 3600  # seconds a stored answer is replayed
    idempotency_lock_seconds: int = 30  # longest a first request may hold its key
    login_code_replay_seconds: int = 60  # the same wx.login code again → the same token; 0 = off
    # --- end rate limits, Idempotency-Key, two-tap login ---
    # --- the scan path (api/services/card_local.py, session_cache.py) ---
    # A worker answers a card scan from its own copy while it has confirmed the Redis generation
    # within this many seconds (0 switches the copies off); entries kept per worker.
    card_cache_local_seconds: float = 1.0
    card_cache_local_entries: int = 20000
    # A citizen's session is looked up in the database at most this often per worker; a logout
    # ends it in every worker at once (published), and within this bound without Redis.
    session_cache_seconds: float = 10.0
    db_pool_max: int = 20  # PostgreSQL connections per worker (a rating holds one per transaction)
    # Calls of stored ratings (api/services/rating_batch.py) a worker has at the database at once;
    # the ratings arriving meanwhile go together in the next call. Fewer calls make larger lots,
    # and a lot's statement costs more per rating past a few dozen ratings: with one call at a
    # time under full load the lots fill up (64) and PostgreSQL becomes the bottleneck.
    rating_calls: int = Field(default=8, ge=1, le=64)
    # --- end the scan path ---
    # Content security (api/services/moderation.py): longest wait for a WeChat verdict before the
    # text or photo is held for a person instead.
    content_check_timeout: float = 3.0

    # --- WeChat subscribe messages (api/services/subscriptions.py, api/workers/wechat_sender.py) ---
    subscribe_config: Path = ROOT / "config" / "subscribe.toml"
    wechat_lease_seconds: int = 60  # a claimed message; never shorter than a send can take
    # --- end WeChat subscribe messages ---

    # --- integrity of ratings (api/services/rating_integrity.py, encounters.py, rating_flags.py) ---
    rating_window_hours: float = 24  # one evaluation per citizen per card within this window
    encounter_code_minutes: float = 10  # life of a one-time encounter code (dynamic QR)
    # Bursts are flagged for review, never dropped; a count of 0 switches the rule off.
    burst_officer_ratings: int = 10  # this many ratings of one officer ...
    burst_officer_minutes: float = 10  # ... within this many minutes
    burst_citizen_officers: int = 5  # one citizen rating this many different officers ...
    burst_citizen_minutes: float = 60  # ... within this many minutes
    # --- end integrity of ratings ---

    @property
    def is_production(self) -> bool:
        return self.environment == "production"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
