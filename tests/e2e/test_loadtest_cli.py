"""``stockctl loadtest`` as a real process (issue 9): through the library against a running
``stockctl worker run``, and through the HTTP API (``--api-url``) against ``stockctl up`` on the
embedded default and against ``serve`` + ``worker run`` on PostgreSQL + Redis: 0 invariant
violations and a PNG that opens; and a run over a corrupted reservation counter exits 1 naming
the row.

Redis: the events lane of ``tests/eventutil.py`` (own database, lock, streams deleted).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

import stockctl
from stockctl.core import seed as demo
from stockctl.core import warming
from stockctl.store.tables import inventory
from tests.clientutil import serve
from tests.eventutil import Lane, cli, redis_lane, spawn, wait_until

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PRODUCTS = 20


@pytest.fixture
def lane() -> Iterator[Lane]:
    with redis_lane() as lane:
        yield lane


def prepare(database_url: str, **settings: Any) -> None:
    """``stockctl init``, ``seed`` (20 products x 3 warehouses) and ``warm-cache``."""
    with stockctl.connect(database_url, **settings) as sc:
        sc.init()
        app = sc.app
        demo.load(app.store, demo.SeedPlan(PRODUCTS, 3), app.ctx.clock(), app.ctx.actor)
        warming.warm(app.store, app.cache(), product_ids=app.store.all_product_ids())


@contextmanager
def worker(env: dict[str, str], only: str, database_url: str, **settings: Any) -> Iterator[None]:
    """``stockctl worker run --only ...`` in the background; stopped with SIGTERM (exit 0)."""
    proc = spawn(env, "worker", "run", "--only", only)
    try:
        with stockctl.connect(database_url, **settings) as sc:
            app_id = sc.settings.app_id
            wait_until(
                lambda: proc.poll() is not None or bool(sc.app.cache().heartbeats(f"{app_id}:")),
                20,
                "the worker's first heartbeat",
            )
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"the worker did not stop: {err[-2000:]}") from None
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err, err[-4000:]


def loadtest(env: dict[str, str], *extra: str) -> tuple[int, dict[str, Any]]:
    done = cli(
        env,
        "loadtest",
        "--rate",
        "50/s",
        "--products",
        str(PRODUCTS),
        "-o",
        "json",
        *extra,
        timeout=120,
    )
    assert done.out, done.err
    return done.code, json.loads(done.out)


def assert_healthy_run(code: int, report: dict[str, Any], seconds: int) -> None:
    assert report["invariant_violations"] == []
    assert code == 0
    assert report["operations"] >= 50 * seconds * 0.8  # only skipped ones are not sent
    assert report["outcomes"].get("ok", 0) >= report["operations"] * 0.8, report["outcomes"]
    assert not [o for o in report["outcomes"] if o.startswith("error:")], report["outcomes"]
    assert report["latency_ms"]["p50"] > 0
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p99"] <= report["latency_ms"]["max"]


def assert_png(path: Path) -> None:
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    image = mpimg.imread(str(path))
    height, width = image.shape[:2]
    assert (width, height) == (1000, 800)
    top, bottom = image[: height // 2, :, :3], image[height // 2 :, :, :3]
    assert (top < 0.5).any() and (bottom < 0.5).any(), "both plots are drawn"


def test_loadtest_on_the_embedded_default_with_a_worker(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lt.db'}"
    prepare(url)
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "STOCKCTL_DATABASE_URL": url}
    plot = tmp_path / "out.png"
    with worker(env, "processor", url):
        code, report = loadtest(env, "--duration", "4s", "--plot", str(plot))
    assert_healthy_run(code, report, 4)
    assert report["plot"] == str(plot)
    assert_png(plot)


def test_loadtest_on_a_fresh_embedded_database_without_a_worker(tmp_path: Path) -> None:
    """The guide's own steps, nothing else: init, seed, loadtest. With no worker the run
    projects the embedded cache itself and checks it."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "STOCKCTL_DATABASE_URL": url}
    assert cli(env, "init").code == 0
    assert cli(env, "seed", "--products", str(PRODUCTS), "--warehouses", "3").code == 0
    code, report = loadtest(env, "--duration", "5s")
    assert_healthy_run(code, report, 5)


def test_loadtest_on_redis_without_a_worker_skips_only_the_cache_check(
    pg_url: str, lane: Lane
) -> None:
    settings = lane.settings()
    prepare(pg_url, **settings)
    done = cli(lane.env(pg_url), "loadtest", "--rate", "20/s", "--duration", "2s", "-o", "json")
    assert done.code == 0, done.err
    assert json.loads(done.out)["invariant_violations"] == []
    assert "no worker is alive" in done.err and "cache check is skipped" in done.err
    assert len(done.err.strip().splitlines()) == 1, done.err


def test_loadtest_on_postgresql_and_redis_with_a_worker(
    pg_url: str, lane: Lane, tmp_path: Path
) -> None:
    settings = lane.settings()
    prepare(pg_url, **settings)
    env = lane.env(pg_url)
    plot = tmp_path / "pg.png"
    with worker(env, "relay,processor", pg_url, **settings):
        code, report = loadtest(env, "--duration", "4s", "--plot", str(plot))
    assert_healthy_run(code, report, 4)
    assert_png(plot)


def over_the_api(report: dict[str, Any], log: Path) -> None:
    """The operations went through the server: its access log holds them."""
    text = log.read_text()
    assert "POST /v1/inventory/reserve" in text, text[-2000:]
    assert report["outcomes"].get("ok", 0) > 0


def test_loadtest_over_the_api_against_up_on_the_embedded_default(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'up.db'}"
    prepare(url)
    with serve(url, tmp_path, "up", STOCKCTL_RELAY_POLL_INTERVAL_MS="50") as server:
        env = {
            **os.environ,
            "COLUMNS": "200",
            "NO_COLOR": "1",
            "STOCKCTL_DATABASE_URL": url,  # read only: targets and the invariant checks
            "STOCKCTL_API_URL": server.url,
        }
        code, report = loadtest(env, "--duration", "4s")
        assert_healthy_run(code, report, 4)
        over_the_api(report, server.log)


def test_loadtest_over_the_api_against_serve_and_a_worker_on_postgresql_and_redis(
    pg_url: str, lane: Lane, tmp_path: Path
) -> None:
    settings = lane.settings()
    prepare(pg_url, **settings)
    env = lane.env(pg_url)
    lane_env = {
        k: v for k, v in env.items() if k.startswith("STOCKCTL_") and k != "STOCKCTL_DATABASE_URL"
    }
    plot = tmp_path / "api.png"
    with (
        serve(pg_url, tmp_path, **lane_env) as server,
        worker(env, "relay,processor", pg_url, **settings),
    ):
        code, report = loadtest(
            {**env, "STOCKCTL_API_URL": server.url}, "--duration", "4s", "--plot", str(plot)
        )
    assert_healthy_run(code, report, 4)
    over_the_api(report, server.log)
    assert_png(plot)


def test_a_corrupted_reserved_counter_fails_the_run_and_is_named(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broken.db'}"
    prepare(url)
    with stockctl.connect(url) as sc:
        engine = sc.app.store.engine
        with engine.begin() as conn:
            row = conn.execute(
                select(inventory.c.product_id, inventory.c.warehouse_id)
                .where(inventory.c.quantity_available >= 50)
                .order_by(inventory.c.product_id, inventory.c.warehouse_id)
                .limit(1)
            ).one()
            conn.execute(
                update(inventory)
                .where(
                    inventory.c.product_id == row.product_id,
                    inventory.c.warehouse_id == row.warehouse_id,
                )
                .values(quantity_reserved=inventory.c.quantity_reserved + 40)
            )
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "STOCKCTL_DATABASE_URL": url}
    with worker(env, "processor", url):
        code, report = loadtest(env, "--duration", "2s", "--mix", "adjust=1")
    assert code == 1, report
    where = f"{row.product_id}@{row.warehouse_id}"
    named = [v for v in report["invariant_violations"] if where in v]
    assert named and named[0].startswith("reserved 40 != holds 0 at "), report
    assert named[0].endswith(where)
