"""``stockctl serve`` and ``stockctl up`` as real processes: PostgreSQL + Redis, the embedded
default, refusing a public bind without tokens, and a clean exit on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

import stockctl
from stockctl.library import Stockctl
from tests.apiutil import (
    ADMIN,
    ADMIN_TOKEN,
    READ,
    READ_TOKEN,
    RESERVE,
    RESERVE_TOKEN,
    TOKENS,
    delete_matching,
    seed,
    unique,
)
from tests.conftest import REDIS_URL
from tests.eventutil import COMMAND, wait_until

START_TIMEOUT = 60  # seconds: imports are slow on a loaded 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def base_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCTL_")}
    env.update(
        {
            "COLUMNS": "200",
            "NO_COLOR": "1",
            "STOCKCTL_DATABASE_URL": database_url,
            "STOCKCTL_API_TOKENS": json.dumps(TOKENS),
        }
    )
    env.update(extra)
    return env


class Server:
    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def wait_healthy(self) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                _, err = self.proc.communicate()
                raise AssertionError(f"exited {self.proc.returncode} before serving: {err}")
            try:
                return self.http.get("/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, START_TIMEOUT, f"{self.url}/health", every=0.2)

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM; the exit code and what the process printed."""
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            out, err = self.proc.communicate()
            raise AssertionError(f"no exit 30 s after SIGTERM: {err[-2000:]}") from None
        return self.proc.returncode, out, err


@contextmanager
def running(env: dict[str, str], *args: str) -> Iterator[Server]:
    port = free_port()
    proc = subprocess.Popen(
        [*COMMAND, *args, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: server processes included
    )
    server = Server(proc, port)
    try:
        server.wait_healthy()
        yield server
    finally:
        if proc.returncode is None:  # the test did not stop it: the whole group goes
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def assert_clean_exit(code: int, out: str, err: str) -> None:
    assert code == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    for token in (ADMIN_TOKEN, RESERVE_TOKEN, READ_TOKEN):
        assert token not in out and token not in err


# -- PostgreSQL + Redis


@pytest.fixture
def redis_slice() -> Iterator[tuple[str, str]]:
    """A cache prefix and app id of this test's own in Redis db 15; their keys go at the end."""
    prefix, app_id = unique("srv"), unique("srvapp")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        yield prefix, app_id
    finally:
        delete_matching(client, f"{prefix}:*")
        delete_matching(client, f"stockctl:{prefix}:*")
        client.close()


@pytest.fixture
def pg_sc(pg_url: str, redis_slice: tuple[str, str]) -> Iterator[Stockctl]:
    prefix, app_id = redis_slice
    client = stockctl.connect(pg_url, redis_url=REDIS_URL, cache_prefix=prefix, app_id=app_id)
    client.init()
    try:
        yield client
    finally:
        client.close()


def test_serve_on_postgresql_and_redis(
    pg_url: str, pg_sc: Stockctl, redis_slice: tuple[str, str]
) -> None:
    prefix, app_id = redis_slice
    (p1, p2), (w1, w2) = seed(pg_sc, 2, 2)
    env = base_env(
        pg_url, STOCKCTL_REDIS_URL=REDIS_URL, STOCKCTL_CACHE_PREFIX=prefix, STOCKCTL_APP_ID=app_id
    )
    with running(env, "serve") as server:
        h = server.http
        ready = h.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["checks"]) == {"database", "redis"}

        r = h.post(
            "/v1/inventory/reserve",
            json={"product_id": p1, "warehouse_id": w1, "quantity": 3, "order_id": "o-1"},
            headers={**RESERVE, "Idempotency-Key": "e2e-key-1"},
        )
        assert r.status_code == 201, r.text
        rid = r.json()["reservation"]["id"]
        again = h.post(
            "/v1/inventory/reserve",
            json={"product_id": p1, "warehouse_id": w1, "quantity": 3, "order_id": "o-1"},
            headers={**RESERVE, "Idempotency-Key": "e2e-key-1"},
        )
        assert again.status_code == 201 and again.json()["reservation"]["id"] == rid

        r = h.post(f"/v1/inventory/reservations/{rid}/confirm", headers=RESERVE)
        assert r.status_code == 200 and r.json()["status"] == "CONFIRMED", r.text
        r = h.get(f"/api/v1/inventory/reservations/{rid}", headers=READ)
        assert r.json()["status"] == "CONFIRMED"
        assert pg_sc.stock(p1, w1).rows[0].reserved == 3  # in the database

        r = h.post("/v1/batch/stock", json={"product_ids": [p1, p2, "nope"]}, headers=READ)
        assert r.status_code == 200, r.text
        assert r.json() == {"stocks": {p1: 17, p2: 20}, "missing": ["nope"]}
        r = h.post("/v1/batch/stock", json={"product_ids": [p1], "warehouse_id": w2}, headers=READ)
        assert r.json()["stocks"] == {p1: 10}
        cache = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        try:  # the read filled Redis, with the guide's key names
            assert cache.get(f"{prefix}:stock:{p1}:warehouse:{w1}") == "7"
            assert cache.get(f"{prefix}:stock:{p1}:available") == "17"
        finally:
            cache.close()

        r = h.post("/v1/inventory/reserve", json={"product_id": p1, "quantity": 1})
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
        r = h.post(
            "/v1/inventory/adjust",
            json={"product_id": p1, "warehouse_id": w1, "delta": 1, "reason": "x"},
            headers=RESERVE,
        )
        assert r.status_code == 403
        r = h.post("/v1/inventory/reserve", json={"product_id": p1, "quantity": 99}, headers=ADMIN)
        assert r.status_code == 409 and r.json()["type"].endswith("/insufficient-stock")

        metrics = h.get("/metrics").text
        assert 'route="/v1/inventory/reserve",status="201"' in metrics
        assert "catalog_cache_misses_total" in metrics
        assert_clean_exit(*server.stop())


def test_serve_with_two_worker_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'two.db'}"
    sc = stockctl.connect(url)
    try:
        sc.init()
        (p,), _ = seed(sc, 1, 1)
    finally:
        sc.close()
    with running(base_env(url), "serve", "--workers", "2") as server:
        for _ in range(6):  # served by either process, wired from the environment alike
            r = server.http.post("/v1/batch/stock", json={"product_ids": [p]}, headers=READ)
            assert r.status_code == 200 and r.json()["stocks"] == {p: 10}, r.text
            assert server.http.get(f"/v1/products/{p}").status_code == 401
        assert_clean_exit(*server.stop())


@pytest.mark.parametrize("command", ["serve", "up"])
def test_public_bind_without_tokens_is_refused(tmp_path: Path, command: str) -> None:
    env = base_env(f"sqlite:///{tmp_path / 'x.db'}")
    del env["STOCKCTL_API_TOKENS"]
    done = subprocess.run(
        [*COMMAND, command, "--host", "0.0.0.0", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "0.0.0.0" in lines[0] and "--insecure" in lines[0] and "token" in lines[0]
    assert done.stdout == ""


# -- stockctl up on the embedded default


def test_up_runs_the_api_and_the_worker_jobs_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'up.db'}"
    sc = stockctl.connect(url)
    try:
        sc.init()
        (p,), (w1, w2) = seed(sc, 1, 2)
    finally:
        sc.close()
    env = base_env(url, STOCKCTL_RELAY_POLL_INTERVAL_MS="50", STOCKCTL_EXPIRY_INTERVAL_SECONDS="1")
    with running(env, "up") as server:
        h = server.http
        r = h.get(f"/v1/products/{p}", headers=READ)  # fills the embedded cache
        assert r.status_code == 200 and r.json()["warehouses"] == {w1: 10, w2: 10}, r.text

        r = h.put(
            f"/v1/inventory/product/{p}",
            json={"warehouse_id": w1, "quantity_available": 42},
            headers=ADMIN,
        )
        assert r.status_code == 200, r.text
        r = h.post(
            "/v1/inventory/reserve",
            json={"product_id": p, "warehouse_id": w2, "quantity": 4},
            headers=RESERVE,
        )
        assert r.status_code == 201, r.text

        def reached_cache() -> bool:
            body: dict[str, Any] = h.get(f"/v1/products/{p}", headers=READ).json()
            return body["warehouses"] == {w1: 42, w2: 6}

        wait_until(reached_cache, 30, "the change to reach the embedded cache", every=0.2)
        assert h.get(f"/v1/products/{p}", headers=READ).json()["available"] == 48
        code, out, err = server.stop()
        assert_clean_exit(code, out, err)
        assert f"{server.url}/docs" in out and "curl" in out  # the banner
