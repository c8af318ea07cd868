"""One typed settings object, loaded once from env / .env, prefixed CTI_."""

from __future__ import annotations

from functools import lru_cache

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class QueuePolicy(BaseModel):
    """Per-queue CTI policy; keep `wrapup_seconds` equal to the queue's wrapuptime in queues.conf."""

    wrapup_seconds: float = Field(default=5.0, ge=0)
    wrapup_required: bool = False  # agent stays paused after a call until the wrap-up form is saved
    team: str | None = None  # org unit code whose agents serve the queue
    service_level_seconds: float = Field(default=20.0, gt=0)  # SL: % of offered calls answered within T
    # Abandons shorter than this leave SL and abandon rate (docs/KPIS.md); 0: every abandon counts.
    short_abandon_seconds: float = Field(default=0.0, ge=0)
    retention_days: int | None = Field(default=None, ge=1)  # recordings of this queue; None: the site default


class Settings(BaseSettings):
    """Product settings; every secret comes from the environment or .env, never from code."""

    model_config = SettingsConfigDict(env_prefix="CTI_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./member-cti.db"
    database_echo: bool = False
    timezone: str = "Asia/Shanghai"
    phone_region: str = "CN"
    # Member numbers and card numbers: prefix + zero-padded serial (seed 004: 卡号前缀 + 流水号位数).
    member_no_prefix: str = "M"
    member_no_digits: int = Field(default=8, ge=4, le=16)
    card_no_prefix: str = "8800"
    card_no_digits: int = Field(default=8, ge=4, le=16)
    # Members must be this old to join (seed 001: full civil capacity, no under-18s).
    min_member_age: int = 18

    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_user: str = "cti"
    ami_secret: str = ""

    ami_events: str = "on"  # "on", or an event-class mask such as "call,agent,user,system"
    queues: dict[str, QueuePolicy] = Field(
        default_factory=lambda: {"member-service": QueuePolicy(), "vip": QueuePolicy()}
    )
    pause_reasons: list[str] = Field(
        default_factory=lambda: ["break", "lunch", "training", "meeting", "after-call-work", "wrap-up"]
    )

    # Recordings: MixMonitor writes into Asterisk's spool; the pipeline moves each file into
    # recordings_dir/YYYY/MM/DD/, transcodes it and keeps it for retention days (per queue override).
    recordings_dir: str = "./var/recordings"
    recordings_format: str = "mp3"  # what the browser plays; pydub/ffmpeg format name
    recordings_bitrate: str = "32k"
    recordings_workers: int = Field(default=2, ge=1)
    recordings_retention_days: int = Field(default=365, ge=1)
    # MixMonitor names files as the PBX sees them; where that tree is mounted here, as {pbx_prefix:
    # host_prefix} (longest prefix wins), e.g. {"/var/spool/asterisk/monitor": "/mnt/pbx/monitor"}.
    recordings_source_map: dict[str, str] = Field(default_factory=dict)
    recordings_max_attempts: int = Field(default=5, ge=1)  # then the job ends `failed` with the error
    recordings_missing_grace_seconds: float = Field(default=60.0, ge=0)  # no file by then: `missing`
    recordings_purge_hour: int | None = Field(default=3, ge=0, le=23)  # daily purge, local hour; None: off
    # Playback URLs are signed and short-lived; the key comes from the environment (random per process
    # when empty, which is fine for one server but not for several behind a balancer).
    recordings_url_key: str = ""
    recordings_url_ttl_seconds: int = Field(default=300, ge=10)
    pbx_name: str = "default"  # ids from Asterisk are unique per PBX only

    # Missed-call callbacks: due within N business hours; closed as unreachable after N attempts.
    callback_sla_business_hours: float = Field(default=2.0, gt=0)
    callback_max_attempts: int = Field(default=3, ge=1)
    callback_retry_minutes: int = Field(default=30, ge=1)

    # Service desk: return visits N working days after closure; the SLA escalation job's period.
    service_return_visit_days: int = Field(default=3, ge=0, le=60)
    sla_check_seconds: float = Field(default=60.0, gt=0)

    # Messages: e-mail over SMTP (the password from the environment only); SMS through the outbox
    # provider until a carrier is configured. Failed sends retry with backoff, then end `failed`.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_security: str = Field(default="starttls", pattern="^(none|starttls|tls)$")
    mail_from: str = "member-cti <noreply@localhost>"
    message_max_attempts: int = Field(default=5, ge=1)
    message_retry_seconds: float = Field(default=30.0, gt=0)

    # Loyalty: redemptions of more points than this (or for a flagged member) need a second person.
    loyalty_redemption_approval_points: int = Field(default=1_000, ge=0)
    # Manual grants and deductions of more points than this need a second person too.
    loyalty_manual_approval_points: int = Field(default=1_000, ge=0)
    # Suspicious-activity flags (crm_core/loyalty/fraud.py; `cti loyalty-flags`).
    loyalty_flag_redemptions_per_day: int = Field(default=3, ge=1)
    loyalty_flag_grant_points: int = Field(default=5_000, ge=1)
    loyalty_flag_earn_redeem_minutes: int = Field(default=10, ge=1)
    loyalty_flag_shared_members: int = Field(default=3, ge=2)

    # Agent panel (aiohttp): where it listens, its session cookie and its language.
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    session_hours: float = Field(default=12.0, gt=0)
    cookie_secure: bool = False  # set true behind HTTPS
    language: str = "zh_CN"  # zh_CN or en; each user may switch
    monitor_token: str = ""  # bearer token for /healthz and /metrics (empty: administrators' sessions only)
    # Browser softphones: the server hands each agent the credentials of its own endpoint after login,
    # so no secret is ever in a page or a script. CTI_SIP_SECRETS is JSON: {"webrtc2001": "…"}.
    sip_ws_url: str = "ws://127.0.0.1:8088/ws"
    sip_domain: str = "127.0.0.1"
    sip_secrets: dict[str, str] = Field(default_factory=dict)
    # Wrap-up disposition codes offered to agents (configurable per site).
    dispositions: list[str] = Field(
        default_factory=lambda: ["resolved", "follow_up", "transferred", "wrong_number", "complaint", "sale"]
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings are read once per process; tests build their own Settings instead."""
    return Settings()
