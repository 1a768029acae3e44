"""The breaker never serialises callers: 20 concurrent calls through ONE client (one breaker) to
a real HTTP server that answers in 100 ms finish in well under 20 x 100 ms, sync (threads) and
async (asyncio.gather). A control shows that pybreaker's own ``call`` would serialise them."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pybreaker
import pytest

from stockctl.clients.breaker import Breaker
from stockctl.clients.warehouse import ClientOptions, WarehouseClient
from stockctl.clients.warehouse_async import AsyncWarehouseClient
from tests.clientutil import SlowServer, slow_server

CALLS = 20
DELAY = 0.1
LIMIT = 0.8  # serialised, the 20 calls would take at least 2.0 s


@pytest.fixture
def server() -> Iterator[SlowServer]:
    with slow_server(DELAY) as s:
        yield s


def in_threads(n: int, fn: Any) -> tuple[float, list[Any]]:
    """Run ``fn`` in ``n`` threads released together; (seconds, results)."""
    gate = threading.Barrier(n + 1)
    results: list[Any] = []

    def worker() -> None:
        gate.wait()
        results.append(fn())

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    gate.wait()
    started = time.perf_counter()
    for t in threads:
        t.join(30)
    return time.perf_counter() - started, results


def test_sync_client_runs_20_calls_concurrently(server: SlowServer) -> None:
    breaker = Breaker(fail_max=5)
    with WarehouseClient(ClientOptions(server.url, timeout=5), breaker) as client:
        elapsed, results = in_threads(CALLS, lambda: client.sellable("P-1"))
    assert results == [7] * CALLS
    assert server.requests == CALLS
    assert elapsed < LIMIT, f"{CALLS} calls took {elapsed:.2f} s: serialised?"
    assert server.peak >= CALLS // 2, f"at most {server.peak} requests were in flight at once"
    assert breaker.state == "closed"


def test_async_client_runs_20_calls_concurrently(server: SlowServer) -> None:
    breaker = Breaker(fail_max=5)

    async def main() -> tuple[float, list[int]]:
        async with AsyncWarehouseClient(ClientOptions(server.url, timeout=5), breaker) as client:
            started = time.perf_counter()
            results = await asyncio.gather(*(client.sellable("P-1") for _ in range(CALLS)))
            return time.perf_counter() - started, list(results)

    elapsed, results = asyncio.run(main())
    assert results == [7] * CALLS
    assert server.requests == CALLS
    assert elapsed < LIMIT, f"{CALLS} calls took {elapsed:.2f} s: serialised?"
    assert server.peak >= CALLS // 2, f"at most {server.peak} requests were in flight at once"
    assert breaker.state == "closed"


def test_control_pybreaker_call_would_serialise(server: SlowServer) -> None:
    """The test above can fail: the same calls wrapped in ``CircuitBreaker.call`` go one by one
    (pybreaker holds its lock for the whole call)."""
    naive = pybreaker.CircuitBreaker(fail_max=5)
    n = 5
    with WarehouseClient(ClientOptions(server.url, timeout=5)) as client:
        elapsed, results = in_threads(n, lambda: naive.call(client.sellable, "P-1"))
    assert results == [7] * n
    assert server.peak == 1
    assert elapsed >= n * DELAY * 0.9


def test_bulk_stock_chunks_go_out_in_parallel() -> None:
    """2500 ids: three requests of at most 1000, all in flight at once (sync and async)."""
    ids = [f"P-{i}" for i in range(2500)]
    slow = 0.3  # wide enough that the three overlap even on a loaded machine

    async def main(url: str) -> dict[str, int]:
        async with AsyncWarehouseClient(ClientOptions(url, timeout=5)) as client:
            return await client.get_bulk_stock(ids)

    with slow_server(slow) as server:
        with WarehouseClient(ClientOptions(server.url, timeout=5)) as client:
            started = time.perf_counter()
            stocks = client.get_bulk_stock(ids)
            elapsed = time.perf_counter() - started
        assert stocks == dict.fromkeys(ids, 1)
        assert server.requests == 3 and server.peak == 3
        assert elapsed < 3 * slow

        server.peak = 0
        assert asyncio.run(main(server.url)) == dict.fromkeys(ids, 1)
        assert server.requests == 6 and server.peak == 3
