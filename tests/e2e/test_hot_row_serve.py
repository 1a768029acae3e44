"""Issue 19's proof over HTTP: 1,000 concurrent reserves of 1 unit on one row with 100 sellable,
against a real ``stockctl serve`` on PostgreSQL (merged reservations on, as by default)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import httpx

import stockctl
from tests import dbutil
from tests.apiutil import RESERVE
from tests.e2e.test_serve import START_TIMEOUT, base_env, free_port
from tests.eventutil import COMMAND, wait_until

REQUESTS = 1000
SELLABLE = 100


@contextmanager
def serving(database_url: str) -> Iterator[str]:
    """``stockctl serve`` with its access log (a line per request) going to a file: a pipe
    nobody reads would fill up after some hundred requests and stall the server."""
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [*COMMAND, "serve", "--port", str(port)],
            env=base_env(database_url),
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.poll() is None, "serve exited before serving"
            try:
                return httpx.get(f"{url}/health").status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_until(up, START_TIMEOUT, f"{url}/health", every=0.2)
            yield url
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
            log.seek(0)
            assert "Traceback" not in log.read()
        finally:
            if proc.returncode is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


async def _reserve_all(url: str, product: str, warehouse: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
    # every request in flight at once; a loaded 2-core machine may take a while to answer all
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        body = {"product_id": product, "warehouse_id": warehouse, "quantity": 1}
        return await asyncio.gather(
            *(
                http.post(
                    "/v1/inventory/reserve", json=body | {"order_id": f"O{n}"}, headers=RESERVE
                )
                for n in range(REQUESTS)
            )
        )


def test_a_thousand_concurrent_reserves_of_a_hundred_units(pg_url: str) -> None:
    with stockctl.connect(pg_url) as sc:
        sc.init()
        sc.add_product("FLASH-1")
        sc.add_warehouse("WH1")
        sc.receive("FLASH-1", "WH1", SELLABLE)
        with serving(pg_url) as url:
            answers = asyncio.run(_reserve_all(url, "FLASH-1", "WH1"))
            metrics = httpx.get(f"{url}/metrics").text

        statuses = sorted(r.status_code for r in answers)
        assert statuses.count(201) == SELLABLE and statuses.count(409) == REQUESTS - SELLABLE
        made = [r.json()["reservation"] for r in answers if r.status_code == 201]
        refused = [r.json() for r in answers if r.status_code == 409]
        assert all("insufficient stock" in p["detail"] for p in refused)

        row = dbutil.row(sc, "FLASH-1", "WH1")
        assert row is not None
        assert (row["quantity_available"], row["quantity_reserved"]) == (SELLABLE, SELLABLE)
        assert row["version"] == 1 + SELLABLE
        ids = sorted(int(r["id"]) for r in made)
        assert len(set(ids)) == SELLABLE
        held = sc.list_reservations(product_id="FLASH-1", limit=1000)
        assert sorted(r.id for r in held) == ids
        assert all(r.status.value == "ACTIVE" and r.quantity == 1 for r in held)
        ledger = [m for m in dbutil.ledger(sc, "FLASH-1") if m["kind"] == "reserve"]
        assert sorted(m["reservation_id"] for m in ledger) == ids
        assert sorted(m["version"] for m in ledger) == list(range(2, 2 + SELLABLE))
        events = [e["event"] for e in dbutil.outbox_events(sc, "FLASH-1")]
        reserved = [e for e in events if e["type"] == "warehouse.stock.reserved"]
        assert sorted(e["data"]["reservation_id"] for e in reserved) == ids
        assert [e["type"] for e in events].count("warehouse.inventory.out_of_stock") == 1
        assert [e["type"] for e in events].count("warehouse.inventory.low_stock") == 1

    # the requests were merged: fewer merges than reserves
    count = re.search(r"^stockctl_reserve_merge_size_count (\S+)$", metrics, re.M)
    total = re.search(r"^stockctl_reserve_merge_size_sum (\S+)$", metrics, re.M)
    assert count and total and float(total.group(1)) == REQUESTS
    assert float(count.group(1)) < REQUESTS
