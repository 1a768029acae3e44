"""Settings: environment ``STOCKCTL_*``, an optional YAML file, and explicit overrides on top.

Precedence, highest first: keyword overrides (CLI flags, ``connect(...)`` arguments), environment
variables, the YAML file (``--config PATH``, ``STOCKCTL_CONFIG``, or ``config/stockctl.yaml`` when
it exists), then the defaults below. Defaults follow the guide (pool, worker, TTLs).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from stockctl.core.values import (
    FORBIDDEN_TEXT,
    MAX_ACTOR,
    check_database_url,
    check_http_url,
    check_text,
)
from stockctl.errors import InvalidInput

DEFAULT_CONFIG_FILE = Path("config/stockctl.yaml")
MAX_REDIS_DB = 15
_FORBIDDEN = re.compile(FORBIDDEN_TEXT)


def _checked(check: Any, value: Any, what: str, *args: Any, **kwargs: Any) -> Any:
    """A core check (``stockctl.core.values``) inside a validator: its refusal as a ValueError,
    which load_settings reports as ``invalid settings: NAME: why``."""
    try:
        return check(value, what, *args, **kwargs)
    except InvalidInput as exc:
        raise ValueError(exc.message.removeprefix(f"{what}: ").removeprefix(f"{what} ")) from None


def _secret_text(value: Any, what: str) -> Any:
    """A secret: one line of text (its value is never shown)."""
    return check_text(value, what, 4096, required=True, strip=False)


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
    # Merged reservations of a hot row: concurrent reserves of one (product, warehouse) in this
    # process run as one statement, in arrival order (PostgreSQL; stockctl.core.reserve_merge).
    # A reserve queued behind one in flight waits up to the window for others; one alone never.
    reserve_merge: bool = True
    reserve_merge_window_ms: float = Field(1.5, ge=0, le=100)
    reserve_merge_max: int = Field(256, ge=2, le=10_000)
    cache_ttl_seconds: int = Field(300, ge=0)
    # How long an event id's de-duplication marker lives (catalog:event:processed:{id}).
    event_dedupe_ttl_seconds: int = Field(86_400, ge=60, le=30 * 86400)
    # Which events get that marker: "unversioned" (default) only events without a row version
    # (order.cancelled, payment.failed: a stock event's version guard already makes a replay a
    # no-op); "all": every event, as the guide does.
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
    api_url: str | None = None
    api_token: SecretStr | None = None
    client_timeout_seconds: float = Field(5.0, gt=0, le=300)
    client_retries: int = Field(2, ge=0, le=10)
    breaker_fail_max: int = Field(5, ge=1, le=1000)
    breaker_reset_seconds: float = Field(30.0, gt=0, le=3600)

    # who is acting, recorded in the ledger
    actor: str = Field(default_factory=lambda: os.environ.get("USER") or "stockctl")

    @field_validator("database_url", "database_replica_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None, info: Any) -> SecretStr | None:
        """An empty URL is a mistake (an unset shell variable), not the embedded default."""
        if value is not None:
            _checked(check_database_url, value.get_secret_value(), info.field_name)
        return value

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            _checked(check_http_url, value, "api_url")
        return value

    @field_validator("api_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _checked(_secret_text, value.get_secret_value(), "api_token")
        return value

    @field_validator(
        "actor", "event_source", "app_id", "pubsub_name", "dead_letter_topic", "api_host"
    )
    @classmethod
    def _text(cls, value: str, info: Any) -> str:
        checked = _checked(check_text, value, info.field_name, MAX_ACTOR, required=True)
        return str(checked)

    @field_validator("redis_url")
    @classmethod
    def _redis_topology(cls, value: SecretStr | None) -> SecretStr | None:
        """standalone, redis+cluster:// or redis+sentinel://, checked before anything connects"""
        if value is not None:
            from stockctl.redis.topology import parse_redis_url

            url = value.get_secret_value()
            if not url.strip():
                raise ValueError("is empty: give a redis://, redis+cluster:// or sentinel URL")
            if _FORBIDDEN.search(url) is not None or any(c.isspace() for c in url):
                raise ValueError("holds a space or control character")
            if not url.isascii():
                raise ValueError("holds a character that is not ASCII: percent-encode it")
            try:
                target = parse_redis_url(url)
            except InvalidInput as exc:
                raise ValueError(str(exc).removeprefix("invalid settings: redis_url: ")) from None
            except ValueError:
                raise ValueError("is not a Redis URL") from None
            if target.db > MAX_REDIS_DB:
                raise ValueError(
                    f"database {target.db} is out of Redis's range 0-{MAX_REDIS_DB} "
                    "(the default 'databases 16')"
                )
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

    @property
    def redis_kind(self) -> str | None:
        """Which layout ``redis_url`` names: standalone, cluster or sentinel (None: no Redis)."""
        if self.redis_url is None:
            return None
        from stockctl.redis.topology import parse_redis_url

        return parse_redis_url(self.redis_url.get_secret_value()).kind

    def masked(self) -> dict[str, Any]:
        """Effective settings as plain data, passwords and tokens masked."""
        from stockctl.store.engine import mask_url

        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if name == "redis_url" and value is not None:
                from stockctl.redis.topology import parse_redis_url

                out[name] = parse_redis_url(value.get_secret_value()).masked()
            elif name in _URLS and isinstance(value, SecretStr):
                out[name] = mask_url(value.get_secret_value())
            elif isinstance(value, SecretStr):
                out[name] = "***"  # a token: nothing of it is shown
            elif name == "api_tokens":
                out[name] = [
                    {"name": t["name"], "token": "***", "scopes": t["scopes"]} for t in value
                ]
            else:
                out[name] = value
        return out


_URLS = ("database_url", "database_replica_url")
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
    _check_environment()
    given = {k: v for k, v in overrides.items() if v is not None}
    previous, _config_override = _config_override, config_file
    try:
        return Settings(**given)
    except ValueError as exc:
        raise InvalidInput(f"invalid settings: {_first_error(exc)}") from None
    finally:
        _config_override = previous


# STOCKCTL_* variables that are not settings: the CLI's own, the test suite's and the benchmarks'
# (by prefix), and the service links Kubernetes puts in every pod for a Service named stockctl.
_NOT_SETTINGS = re.compile(
    r"STOCKCTL_(CONFIG|DEBUG|TEST_.*|BENCH_.*|SERVICE_HOST|SERVICE_PORT(_.+)?"
    r"|PORT(_[0-9]+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)?)"
)


def _check_environment() -> None:
    """An unknown STOCKCTL_* variable is refused, as an unknown key of the config file is: a
    misspelt STOCKCTL_DATABSE_URL would otherwise run on the embedded database."""
    import difflib

    names = {f"STOCKCTL_{n.upper()}" for n in Settings.model_fields}
    for key in sorted(os.environ):
        upper = key.upper()
        if (
            upper.startswith("STOCKCTL_")
            and upper not in names
            and not _NOT_SETTINGS.fullmatch(upper)
        ):
            close = difflib.get_close_matches(upper[9:], [n[9:] for n in names], 1, 0.75)
            hint = f" (did you mean STOCKCTL_{close[0]}?)" if close else ""
            raise InvalidInput(f"invalid settings: unknown environment variable {key}{hint}")


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
        why = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        return f"{where}: {why}"
    return str(exc).splitlines()[0]
