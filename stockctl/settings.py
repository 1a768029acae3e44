"""Settings: environment ``STOCKCTL_*``, an optional YAML file, and explicit overrides on top.

Precedence, highest first: keyword overrides (CLI flags, ``connect(...)`` arguments), environment
variables, the YAML file (``--config PATH``, ``STOCKCTL_CONFIG``, or ``config/stockctl.yaml`` when
it exists), then the defaults below. Defaults follow the seed document (pool, worker, TTLs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

DEFAULT_CONFIG_FILE = Path("config/stockctl.yaml")


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "stockctl"


def default_database_url() -> str:
    return f"sqlite:///{default_data_dir() / 'stockctl.db'}"


Scope = Literal["read", "reserve", "admin"]


class ApiToken(BaseModel):
    """A bearer token for the HTTP API. ``admin`` implies ``reserve``, which implies ``read``."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    token: SecretStr
    scopes: list[Scope] = Field(min_length=1)

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("tokens must be at least 16 characters")
        return value


class Settings(BaseSettings):
    """Effective configuration. Every field is documented in ``config/stockctl.example.yaml``."""

    model_config = SettingsConfigDict(
        env_prefix="STOCKCTL_",
        extra="forbid",
        validate_default=True,
    )

    # database
    database_url: SecretStr = Field(default_factory=lambda: SecretStr(default_database_url()))
    database_replica_url: SecretStr | None = None
    db_pool_max_open: int = Field(100, ge=1, le=10_000)
    db_pool_max_idle: int = Field(20, ge=0, le=10_000)
    db_pool_max_lifetime_seconds: int = Field(1800, ge=1)
    db_pool_max_idle_time_seconds: int = Field(300, ge=1)
    db_connect_timeout_seconds: int = Field(5, ge=1, le=300)
    db_statement_timeout_ms: int = Field(30_000, ge=0)

    # redis (absent = embedded default: outbox as the log, cache in the database)
    redis_url: SecretStr | None = None
    redis_timeout_seconds: float = Field(5.0, gt=0, le=300)
    cache_prefix: str = Field("catalog", pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    cache_hash_tags: bool = False
    # Stock reads (the API, readiness) give up on Redis after this long and use the database;
    # after such a failure they skip Redis for the cool-down, then one read probes it.
    cache_read_timeout_ms: int = Field(150, ge=1, le=60_000)
    cache_breaker_cooldown_seconds: float = Field(3.0, gt=0, le=3600)

    # reservations, cache, idempotency, bulk
    reservation_ttl_seconds: int = Field(900, ge=1, le=7 * 86400)
    reservation_max_ttl_seconds: int = Field(86_400, ge=1, le=30 * 86400)
    allocation_strategy: Literal["priority", "most_stock"] = "priority"
    cache_ttl_seconds: int = Field(300, ge=0)
    # How long an event id's de-duplication marker lives (catalog:event:processed:{id}).
    event_dedupe_ttl_seconds: int = Field(86_400, ge=60, le=30 * 86400)
    # Which events get that marker: "unversioned" (default) only events without a row version
    # (order.cancelled, payment.failed: a stock event's version guard already makes a replay a
    # no-op); "all": every event, as the seed does.
    event_dedupe_markers: Literal["unversioned", "all"] = "unversioned"
    idempotency_window_seconds: int = Field(86_400, ge=60)
    bulk_limit: int = Field(1000, ge=1, le=10_000)

    # events and worker
    event_source: str = "stockctl/warehouse"
    app_id: str = "catalog"
    pubsub_name: str = "pubsub-redis"
    worker_count: int = Field(10, ge=1, le=1000)
    worker_batch_size: int = Field(100, ge=1, le=100_000)
    worker_batch_timeout_ms: int = Field(100, ge=1, le=60_000)
    worker_queue_size: int = Field(1000, ge=1, le=1_000_000)
    worker_linger_ms: int = Field(5, ge=0, le=1000)
    worker_max_deliveries: int = Field(5, ge=1, le=1000)
    worker_claim_idle_ms: int = Field(30_000, ge=100)
    worker_heartbeat_ttl_seconds: int = Field(15, ge=2, le=3600)
    # A job failing this long (its heartbeat says so) fails `worker --check` and `health`.
    worker_stall_seconds: float = Field(30.0, gt=0, le=86_400)
    stream_maxlen: int = Field(0, ge=0)
    dead_letter_topic: str = "stockctl.deadletter"
    relay_batch_size: int = Field(500, ge=1, le=100_000)
    relay_poll_interval_ms: int = Field(500, ge=10, le=60_000)
    outbox_retention_hours: int = Field(168, ge=1)
    expiry_interval_seconds: float = Field(5.0, gt=0, le=3600)
    sync_interval_seconds: float = Field(10.0, gt=0, le=86_400)
    sync_overlap_seconds: float = Field(5.0, ge=0, le=3600)
    warm_on_start: bool = False
    worker_metrics_port: int = Field(0, ge=0, le=65_535)  # 0: no /metrics listener

    # HTTP API (stockctl serve / up)
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=1, le=65_535)
    api_tokens: list[ApiToken] = Field(default_factory=list)
    api_max_body_bytes: int = Field(1 << 20, ge=1024, le=64 << 20)

    # the warehouse API as a client (order services, the remote CLI)
    api_url: str | None = Field(None, pattern=r"^https?://")
    api_token: SecretStr | None = None
    client_timeout_seconds: float = Field(5.0, gt=0, le=300)
    client_retries: int = Field(2, ge=0, le=10)
    breaker_fail_max: int = Field(5, ge=1, le=1000)
    breaker_reset_seconds: float = Field(30.0, gt=0, le=3600)

    # who is acting, recorded in the ledger
    actor: str = Field(default_factory=lambda: os.environ.get("USER") or "stockctl")

    @field_validator("database_url", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return default_database_url()
        return value

    @field_validator("database_replica_url", "redis_url", "api_url", "api_token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_topology(cls, value: SecretStr | None) -> SecretStr | None:
        """standalone, redis+cluster:// or redis+sentinel://, checked before anything connects"""
        if value is not None:
            from stockctl.clients.redis_topology import parse_redis_url
            from stockctl.errors import InvalidInput

            try:
                parse_redis_url(value.get_secret_value())
            except InvalidInput as exc:
                raise ValueError(str(exc).removeprefix("invalid settings: redis_url: ")) from None
        return value

    @field_validator("db_pool_max_idle")
    @classmethod
    def _idle_within_open(cls, value: int, info: Any) -> int:
        max_open = info.data.get("db_pool_max_open")
        if max_open is not None and value > max_open:
            raise ValueError("db_pool_max_idle cannot exceed db_pool_max_open")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file()
        if config_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    @property
    def is_embedded(self) -> bool:
        return self.database_url.get_secret_value().startswith("sqlite")

    def masked(self) -> dict[str, Any]:
        """Effective settings as plain data, passwords and tokens masked."""
        from stockctl.store.engine import mask_url

        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if name == "redis_url" and value is not None:
                from stockctl.clients.redis_topology import parse_redis_url

                out[name] = parse_redis_url(value.get_secret_value()).masked()
            elif isinstance(value, SecretStr):
                out[name] = mask_url(value.get_secret_value())
            elif name == "api_tokens":
                out[name] = [
                    {"name": t["name"], "token": "***", "scopes": t["scopes"]} for t in value
                ]
            else:
                out[name] = value
        return out


_config_override: Path | None = None


def _config_file() -> Path | None:
    if _config_override is not None:
        return _config_override
    env = os.environ.get("STOCKCTL_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings; ``overrides`` with value None are ignored (unset CLI flags)."""
    from stockctl.errors import InvalidInput

    global _config_override
    config_file = config_file if config_file is not None else _config_file()
    if config_file is not None:
        _check_config_file(config_file)
    given = {k: v for k, v in overrides.items() if v is not None}
    previous, _config_override = _config_override, config_file
    try:
        return Settings(**given)
    except ValueError as exc:
        raise InvalidInput(f"invalid settings: {_first_error(exc)}") from None
    finally:
        _config_override = previous


def _check_config_file(path: Path) -> None:
    """A missing file, bad YAML or YAML that is not a mapping is bad input, not a crash."""
    import yaml

    from stockctl.errors import InvalidInput

    if not path.is_file():
        raise InvalidInput(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInput(f"config file {path} is not valid YAML: {first}") from None
    if data is not None and not isinstance(data, dict):
        raise InvalidInput(f"config file {path} must hold a mapping of settings")


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        return f"{where}: {first.get('msg', 'invalid')}"
    return str(exc).splitlines()[0]
