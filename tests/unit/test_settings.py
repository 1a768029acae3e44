"""Settings: the guide's defaults, and overrides > environment > YAML file > defaults.

The autouse fixture in conftest.py removes every STOCKCTL_* variable and runs each test in its own
empty working directory, so nothing here sees the developer's settings.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from stockctl.errors import InvalidInput
from stockctl.settings import Settings, load_settings


def write_yaml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# defaults ----------------------------------------------------------------------------------------


def test_defaults_follow_the_seed() -> None:
    s = load_settings()
    assert (
        s.db_pool_max_open,
        s.db_pool_max_idle,
        s.db_pool_max_lifetime_seconds,
        s.db_pool_max_idle_time_seconds,
    ) == (100, 20, 1800, 300)
    assert (
        s.worker_count,
        s.worker_batch_size,
        s.worker_batch_timeout_ms,
        s.worker_queue_size,
    ) == (10, 100, 100, 1000)
    assert s.reservation_ttl_seconds == 900
    assert s.cache_ttl_seconds == 300
    assert s.idempotency_window_seconds == 86_400
    assert s.bulk_limit == 1000
    assert s.app_id == "catalog"
    assert s.redis_url is None
    assert s.database_replica_url is None


def test_default_database_is_an_embedded_sqlite_file_under_xdg_data_home(tmp_path: Path) -> None:
    s = load_settings()
    assert s.is_embedded
    expected = tmp_path / "xdg" / "stockctl" / "stockctl.db"
    assert s.database_url.get_secret_value() == f"sqlite:///{expected}"


@pytest.mark.parametrize(
    "name", ["DATABASE_URL", "DATABASE_REPLICA_URL", "REDIS_URL", "API_URL", "API_TOKEN"]
)
def test_an_empty_url_or_token_is_refused_not_the_default(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """An unset shell variable (STOCKCTL_DATABASE_URL=$DB_URL) must not silently mean the
    embedded file or no Redis: to leave a setting at its default, leave it out."""
    monkeypatch.setenv(f"STOCKCTL_{name}", "")
    with pytest.raises(InvalidInput, match=f"invalid settings: {name.lower()}: "):
        load_settings()


def test_postgres_url_is_not_embedded() -> None:
    assert not load_settings(database_url="postgresql://u@h/db").is_embedded


# precedence --------------------------------------------------------------------------------------


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKCTL_CACHE_TTL_SECONDS", "42")
    monkeypatch.setenv("STOCKCTL_REDIS_URL", "redis://127.0.0.1:6379/3")
    s = load_settings()
    assert s.cache_ttl_seconds == 42
    assert s.redis_url is not None
    assert s.redis_url.get_secret_value() == "redis://127.0.0.1:6379/3"


def test_yaml_file_given_by_path_overrides_defaults(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "a.yaml", "cache_ttl_seconds: 11\nbulk_limit: 50\n")
    s = load_settings(path)
    assert (s.cache_ttl_seconds, s.bulk_limit) == (11, 50)
    assert s.reservation_ttl_seconds == 900


def test_yaml_file_given_by_stockctl_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_yaml(tmp_path / "b.yaml", "reservation_ttl_seconds: 60\n")
    monkeypatch.setenv("STOCKCTL_CONFIG", str(path))
    assert load_settings().reservation_ttl_seconds == 60


def test_config_stockctl_yaml_in_the_working_directory_is_read(tmp_path: Path) -> None:
    write_yaml(tmp_path / "config" / "stockctl.yaml", "app_id: from-default-file\n")
    assert load_settings().app_id == "from-default-file"


def test_explicit_path_wins_over_stockctl_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STOCKCTL_CONFIG", str(write_yaml(tmp_path / "env.yaml", "app_id: env\n")))
    assert load_settings(write_yaml(tmp_path / "flag.yaml", "app_id: flag\n")).app_id == "flag"


def test_environment_overrides_the_yaml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_yaml(tmp_path / "c.yaml", "cache_ttl_seconds: 11\nbulk_limit: 50\n")
    monkeypatch.setenv("STOCKCTL_CACHE_TTL_SECONDS", "22")
    s = load_settings(path)
    assert (s.cache_ttl_seconds, s.bulk_limit) == (22, 50)


def test_overrides_win_over_environment_and_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_yaml(tmp_path / "d.yaml", "cache_ttl_seconds: 11\nworker_count: 3\n")
    monkeypatch.setenv("STOCKCTL_CACHE_TTL_SECONDS", "22")
    monkeypatch.setenv("STOCKCTL_WORKER_COUNT", "4")
    s = load_settings(path, cache_ttl_seconds=33)
    assert (s.cache_ttl_seconds, s.worker_count) == (33, 4)


def test_overrides_that_are_none_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKCTL_DATABASE_URL", "postgresql://u@h/fromenv")
    s = load_settings(database_url=None, redis_url=None)
    assert s.database_url.get_secret_value() == "postgresql://u@h/fromenv"


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_settings(write_yaml(tmp_path / "empty.yaml", "")) == load_settings()


# refusals ----------------------------------------------------------------------------------------


def test_unknown_key_in_the_yaml_file_is_refused(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "e.yaml", "cache_ttl_secondz: 5\n")
    with pytest.raises(InvalidInput, match="cache_ttl_secondz"):
        load_settings(path)


def test_unknown_override_is_refused() -> None:
    with pytest.raises(InvalidInput, match="no_such_setting"):
        load_settings(no_such_setting=1)


def test_invalid_value_is_refused_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKCTL_WORKER_COUNT", "many")
    with pytest.raises(InvalidInput, match="worker_count"):
        load_settings()


@pytest.mark.parametrize(
    "overrides",
    [
        {"db_pool_max_open": 0},
        {"bulk_limit": 10_001},
        {"reservation_ttl_seconds": 0},
        {"idempotency_window_seconds": 59},
        {"allocation_strategy": "random"},
        {"db_pool_max_open": 10, "db_pool_max_idle": 11},
    ],
)
def test_out_of_range_values_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        load_settings(**overrides)


def test_missing_config_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not found"):
        load_settings(tmp_path / "nope.yaml")


def test_missing_file_named_by_stockctl_config_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STOCKCTL_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(InvalidInput, match="not found"):
        load_settings()


@pytest.mark.parametrize(
    "text", ["cache_ttl_seconds: [\n", "- 1\n- 2\n", "just a string\n", "a: b: c\n"]
)
def test_malformed_yaml_is_bad_input_not_a_crash(tmp_path: Path, text: str) -> None:
    with pytest.raises(InvalidInput, match="f.yaml"):
        load_settings(write_yaml(tmp_path / "f.yaml", text))


# masking -----------------------------------------------------------------------------------------


def test_masked_hides_every_password_and_keeps_the_rest() -> None:
    s = load_settings(
        database_url="postgresql://app:s3cret@db.example:5432/stock",
        database_replica_url="postgresql://ro:r3plica@replica.example/stock",
        redis_url="redis://:t0ken@cache.example:6379/0",
    )
    shown = s.masked()
    text = repr(shown)
    for secret in ("s3cret", "r3plica", "t0ken"):
        assert secret not in text
    assert shown["database_url"] == "postgresql://app:***@db.example:5432/stock"
    assert shown["database_replica_url"] == "postgresql://ro:***@replica.example/stock"
    assert shown["redis_url"] == "redis://:***@cache.example:6379/0"
    assert shown["db_pool_max_open"] == 100
    assert set(shown) == set(Settings.model_fields)


def test_masked_keeps_urls_without_passwords() -> None:
    shown = load_settings(database_url="sqlite:////tmp/x.db").masked()
    assert shown["database_url"] == "sqlite:////tmp/x.db"
    assert shown["redis_url"] is None


def test_settings_repr_never_shows_secrets() -> None:
    s = load_settings(database_url="postgresql://app:s3cret@h/db", redis_url="redis://:t0k@h/0")
    assert "s3cret" not in repr(s) and "t0k" not in repr(s)
    assert "s3cret" not in str(s.model_dump())
    assert isinstance(s.database_url, SecretStr)


# issue 17: every unforeseen value of a setting is InvalidInput naming the setting -----------------

BAD_SETTINGS = [
    ("database_url", "postgresql://u:pw@127.0.0.1:abc/x", "port 'abc'"),
    ("database_url", "postgresql://u:pw@127.0.0.1:1:2/x", "port '1:2'"),
    ("database_url", "postgresql://u:pw@127.0.0.1:99999/x", "port '99999'"),
    ("database_url", "postgresql://u:pw@[::1/x", "port"),
    ("database_url", "mysql://u:pw@h/x", "postgresql://"),
    ("database_url", "postgresql://u:pw@h/x\x00", "control"),
    ("database_replica_url", "postgresql://u:pw@h:x/y", "port 'x'"),
    ("redis_url", "redis://127.0.0.1:abc/5", "port 'abc'"),
    ("redis_url", "http://127.0.0.1:6379", "redis://"),
    ("redis_url", "redis://127.0.0.1:6379/99", "database 99"),
    ("redis_url", "redis://:pw@127.0.0.1:1:2/0", "host:port"),
    ("redis_url", "redis://127.0.0.1:6379/\u00b2", "ASCII"),
    ("redis_url", "redis://127.0.0.1:\u00b9/0", "ASCII"),
    ("api_url", "ftp://h", "http://"),
    ("api_url", "http://h:abc", "port 'abc'"),
    ("api_url", "http://", "no host"),
    ("actor", "a\x00b", "control"),
    ("actor", "x" * 129, "1-128"),
    ("app_id", "cat\u202ealog", "control"),
    ("api_token", "tok\x00en-secret-value", "control"),
]


@pytest.mark.parametrize(("name", "value", "why"), BAD_SETTINGS)
def test_a_malformed_setting_is_invalid_input_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str, why: str
) -> None:
    """The same refusal from a keyword override, the environment and the config file."""
    import json

    env_safe = "\x00" not in value
    sources = ["override", "file", *(["env"] if env_safe else [])]
    for source in sources:
        with monkeypatch.context() as mp:
            config = None
            kwargs = {}
            if source == "env":
                mp.setenv(f"STOCKCTL_{name.upper()}", value)
            elif source == "file":
                config = write_yaml(tmp_path / "c.yaml", f"{name}: {json.dumps(value)}\n")
            else:
                kwargs = {name: value}
            with pytest.raises(InvalidInput) as info:
                load_settings(config, **kwargs)
        message = str(info.value)
        assert message.startswith(f"invalid settings: {name}: "), (source, message)
        assert why in message, (source, message)
        assert "pw" not in message and "secret" not in message and "\n" not in message


def test_an_unknown_stockctl_variable_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKCTL_DATABSE_URL", "postgresql://u@h/x")
    with pytest.raises(InvalidInput, match="unknown environment variable STOCKCTL_DATABSE_") as i:
        load_settings()
    assert "did you mean STOCKCTL_DATABASE_URL" in str(i.value)


@pytest.mark.parametrize(
    "name",
    ["STOCKCTL_CONFIG", "STOCKCTL_DEBUG", "STOCKCTL_TEST_PG_URL", "STOCKCTL_BENCH_X",
     "STOCKCTL_SERVICE_HOST", "STOCKCTL_SERVICE_PORT", "STOCKCTL_SERVICE_PORT_HTTP",
     "STOCKCTL_PORT", "STOCKCTL_PORT_8080_TCP", "STOCKCTL_PORT_8080_TCP_ADDR"],
)  # fmt: skip
def test_stockctl_variables_that_are_not_settings_are_let_through(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    """The CLI's own, the tests' and benchmarks', and Kubernetes' service links for a Service
    named stockctl (STOCKCTL_PORT=tcp://10.0.0.1:8080 and the like)."""
    value = str(write_yaml(tmp_path / "c.yaml", "")) if name == "STOCKCTL_CONFIG" else "tcp://x:1"
    monkeypatch.setenv(name, value)
    load_settings()


def test_config_show_masks_every_secret() -> None:
    s = load_settings(
        database_url="postgresql://u:db-secret@h/x",
        redis_url="redis://:redis-secret@h:6379/0",
        api_token="client-token-secret-1",
        api_tokens=[{"name": "ops", "token": "server-token-secret-1", "scopes": ["admin"]}],
    )
    shown = repr(s.masked())
    assert "secret" not in shown, shown
    assert s.masked()["api_token"] == "***"
