"""Shared fixtures: a fresh database per test on SQLite and on a real PostgreSQL.

PostgreSQL comes from STOCKCTL_TEST_PG_URL (default: postgres@127.0.0.1:5432). When it is not
reachable the PostgreSQL-backed tests fail, never skip: `make test` starts it first.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import stockctl
from stockctl.library import Stockctl

PG_ADMIN_URL = os.environ.get(
    "STOCKCTL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("STOCKCTL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's settings or writes their embedded database."""
    for key in list(os.environ):
        if key.startswith("STOCKCTL_") and not key.startswith("STOCKCTL_TEST_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)


def _fresh_pg_database() -> Iterator[str]:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"stockctl_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _fresh_pg_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'stockctl.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'stockctl.db'}"
    else:
        yield from _fresh_pg_database()


@pytest.fixture
def sc(database_url: str) -> Iterator[Stockctl]:
    """An initialised stockctl on a fresh database of each backend."""
    client = stockctl.connect(database_url)
    client.init()
    try:
        yield client
    finally:
        client.close()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
