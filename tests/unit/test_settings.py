"""Settings: the seed's defaults, and overrides > environment > YAML file > defaults.

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


def test_empty_database_url_means_the_embedded_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKCTL_DATABASE_URL", "")
    assert load_settings().is_embedded


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
