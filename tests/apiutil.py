"""Helpers for the HTTP API tests: the app behind a ``TestClient``, tokens, problem checks.

``api_on(database_url)`` wires the app as ``stockctl serve`` does (settings -> bootstrap ->
``create_app``) on a fresh database, with three API tokens (admin, reserve, read). On PostgreSQL
it also uses Redis (``REDIS_URL``, db 15) under a cache prefix and app id of its own, and deletes
every key under them at the end; on SQLite the cache is the embedded table.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from fastapi.testclient import TestClient
from httpx import Response

from stockctl.bootstrap import App, bootstrap
from stockctl.daemons.api.app import create_app
from stockctl.library import Stockctl
from stockctl.settings import load_settings
from tests.conftest import REDIS_URL

# Distinctive, so a test can grep logs for them.
ADMIN_TOKEN = "adm-tok-" + "9f3c1e7a5b2d4c6e8a0b"
RESERVE_TOKEN = "rsv-tok-" + "4d2b8f6a1c3e5d7f9b0a"
READ_TOKEN = "rd-tok-" + "7e5c3a1f9d8b6e4c2a0f"
TOKENS: list[dict[str, Any]] = [
    {"name": "ops", "token": ADMIN_TOKEN, "scopes": ["admin"]},
    {"name": "shop", "token": RESERVE_TOKEN, "scopes": ["reserve"]},
    {"name": "viewer", "token": READ_TOKEN, "scopes": ["read"]},
]
PROBLEM = "application/problem+json"
PROBLEM_BASE = "https://stockctl.dev/problems/"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_TOKEN)
RESERVE = bearer(RESERVE_TOKEN)
READ = bearer(READ_TOKEN)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@dataclass
class Api:
    """One app under test: the wired ``App``, a ``TestClient`` sending the admin token by
    default, the library on the same ``App`` (for setting up data), and Redis when used."""

    app: App
    client: TestClient
    sc: Stockctl
    redis: redis.Redis | None = None
    prefix: str = "catalog"

    def key(self, suffix: str) -> str:
        return f"{self.prefix}:{suffix}"

    def get_key(self, suffix: str) -> str | None:
        """A plain GET of ``{prefix}:{suffix}`` in Redis, as the runbooks read the cache."""
        assert self.redis is not None
        value = self.redis.get(self.key(suffix))
        return None if value is None else value.decode()


def delete_matching(client: redis.Redis, pattern: str) -> None:
    batch = list(client.scan_iter(pattern, 1000))
    for i in range(0, len(batch), 500):
        client.delete(*batch[i : i + 500])


@contextmanager
def api_on(
    database_url: str,
    *,
    with_redis: bool | None = None,
    init: bool = True,
    **settings: Any,
) -> Iterator[Api]:
    """The app on ``database_url``; Redis db 15 when ``with_redis`` (default: on PostgreSQL)."""
    if with_redis is None:
        with_redis = database_url.startswith("postgresql")
    prefix, app_id = unique("apit"), unique("apiapp")
    extra: dict[str, Any] = {"api_tokens": TOKENS, **settings}
    if with_redis:
        extra.setdefault("redis_url", REDIS_URL)
        extra.setdefault("cache_prefix", prefix)
        extra.setdefault("app_id", app_id)
    app = bootstrap(load_settings(database_url=database_url, **extra))
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=10) if with_redis else None
    try:
        if init:
            app.store.upgrade_schema()
        with TestClient(create_app(app), headers=ADMIN) as test_client:
            yield Api(app, test_client, Stockctl(app), client, app.settings.cache_prefix)
    finally:
        app.close()
        if client is not None:
            try:
                delete_matching(client, f"{prefix}:*")
                delete_matching(client, f"stockctl:{prefix}:*")
                delete_matching(client, f"stockctl:heartbeat:{app_id}:*")
            finally:
                client.close()


def seed(
    sc: Stockctl, products: int = 2, warehouses: int = 2, qty: int = 10
) -> tuple[list[str], list[str]]:
    """Products x warehouses with ``qty`` units each; warehouse priority follows the order."""
    ps = [unique("P") for _ in range(products)]
    ws = [unique("W") for _ in range(warehouses)]
    for i, w in enumerate(ws):
        sc.add_warehouse(w, priority=(i + 1) * 10)
    for p in ps:
        sc.add_product(p)
        for w in ws:
            sc.receive(p, w, qty)
    return ps, ws


def assert_problem(response: Response, status: int, slug: str) -> dict[str, Any]:
    """An RFC 9457 problem with a stable type, and no trace of a stack."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM_BASE + slug, body
    assert body["status"] == status
    assert body["title"] == slug.replace("-", " ").capitalize()  # one title per type
    assert isinstance(body["detail"], str) and body["detail"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body
