"""The guide's own runbook and order-service contract, literally, against stockctl.

* Its Operations section's commands, run as written (only host, port and ids filled in):
  ``curl -X PUT .../api/v1/inventory/{id}`` with nothing but ``{"quantity_available": 100}``,
  ``redis-cli -n 4 GET "catalog:stock:{productID}:total"`` and
  ``curl .../api/v1/inventory/product/{productID}``, against ``stockctl up`` (the API and the
  worker jobs) on PostgreSQL and a Redis of the test's own (db 4, the guide's default prefix).
* Its order service's client: the reserve answer read as its Go struct would read it
  (``reservation.id`` an int64, ``reservation.expires_at`` an RFC 3339 time), then confirm and
  release by that id on ``/v1/inventory/reservations/{id}/confirm|release``.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from datetime import datetime

import pytest

import stockctl
from stockctl.library import Stockctl
from tests.e2e.test_serve import Server, running
from tests.eventutil import wait_until
from tests.redisutil import PrivateRedis, daemon_env

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@pytest.fixture
def site(pg_url: str) -> Iterator[tuple[Server, Stockctl, PrivateRedis]]:
    with PrivateRedis() as server:
        redis_url = server.url.rsplit("/", 1)[0] + "/4"
        with stockctl.connect(pg_url, redis_url=redis_url) as sc:
            sc.init()
            sc.add_product("P000001")
            for w in ("WH001", "WH002"):
                sc.add_warehouse(w)
                sc.receive("P000001", w, 10)
            env = daemon_env(
                pg_url,
                redis_url,
                STOCKCTL_SYNC_INTERVAL_SECONDS="1",
                STOCKCTL_RELAY_POLL_INTERVAL_MS="100",
            )
            with running(env, "up") as api:
                try:
                    yield api, sc, server
                finally:
                    api.http.close()


def sh(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip()


def test_the_seeds_test_event_flow_runs_as_written(
    site: tuple[Server, Stockctl, PrivateRedis],
) -> None:
    api, sc, redis_server = site
    port = str(redis_server.port)
    row = sc.stock("P000001", "WH001").rows[0]
    assert row.id is not None

    # 1. Update stock in Warehouse
    answer = sh(
        "curl", "-s", "-X", "PUT", f"{api.url}/api/v1/inventory/{row.id}",
        "-H", "Content-Type: application/json",
        "-d", '{"quantity_available": 100}',
    )  # fmt: skip
    updated = json.loads(answer)
    assert (updated["id"], updated["product_id"], updated["warehouse_id"]) == (
        row.id,
        "P000001",
        "WH001",
    )
    assert updated["quantity_available"] == 100

    # 4. Verify cache updated
    def total() -> str:
        return sh("redis-cli", "-p", port, "-n", "4", "GET", "catalog:stock:P000001:total")

    wait_until(lambda: total() == "110", 30, "the cache's total after the PUT")
    assert (
        sh("redis-cli", "-p", port, "-n", "4", "GET", "catalog:stock:P000001:warehouse:WH001")
        == "100"
    )

    # Check Stock Flow, 1.
    product = json.loads(sh("curl", "-s", f"{api.url}/api/v1/inventory/product/P000001"))
    assert product["total_available"] == 110
    assert {
        (w["id"], w["warehouse_id"], w["quantity_available"]) for w in product["warehouses"]
    } == {
        (row.id, "WH001", 100),
        (sc.stock("P000001", "WH002").rows[0].id, "WH002", 10),
    }


def test_the_seeds_order_client_reads_the_reserve_answer_and_confirms_by_its_id(
    site: tuple[Server, Stockctl, PrivateRedis],
) -> None:
    api, sc, _ = site
    h = api.http
    body = {"product_id": "P000001", "warehouse_id": "WH002", "quantity": 3}
    r = h.post("/v1/inventory/reserve", json=body)
    assert r.status_code == 201, r.text
    reservation = r.json()["reservation"]  # type ReserveResponse struct{ Reservation ... }
    rid = reservation["id"]
    assert type(rid) is int and 0 < rid < 2**63  # ID int64 `json:"id"`
    assert RFC3339.match(reservation["expires_at"]), reservation["expires_at"]
    datetime.fromisoformat(reservation["expires_at"].replace("Z", "+00:00"))
    assert {"product_id", "warehouse_id", "quantity"} <= set(reservation)

    confirmed = h.post(f"/v1/inventory/reservations/{rid}/confirm")
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "CONFIRMED"
    assert sc.stock("P000001", "WH002").rows[0].reserved == 3
    released = h.post(f"/v1/inventory/reservations/{rid}/release")
    assert released.status_code == 200 and released.json()["status"] == "RELEASED"
    assert sc.stock("P000001", "WH002").rows[0].reserved == 0
    history = sc.history("P000001", "WH002")
    assert [m.reservation_id for m in history[:2]] == [rid, rid]  # the ledger's id is the same
