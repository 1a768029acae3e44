"""The circuit breaker, through the clients (respx) and on its own, with a controllable clock.

closed -> open after ``fail_max`` consecutive 5xx / timeouts / connection errors (4xx do not
count) -> fails fast with no request while open -> after the reset timeout exactly one trial call
goes through (half-open; the others fail fast) -> its success closes, its failure reopens.
Shared state over Redis: tests/integration/test_client_breaker_redis.py.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pybreaker
import pytest
import respx

from stockctl import errors
from stockctl.bootstrap import build_client
from stockctl.clients.breaker import Breaker
from stockctl.clients.warehouse import ClientOptions, WarehouseClient
from stockctl.clients.warehouse_async import AsyncWarehouseClient
from stockctl.settings import load_settings
from tests.clientutil import BASE, problem_json, product_json, row_json

PATH = "/v1/inventory/product/P-1"


class Clock:
    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


OK = httpx.Response(200, json=product_json("P-1", row_json(sellable=7)))


def ok(request: httpx.Request) -> httpx.Response:
    return OK


def unavailable(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503, json=problem_json(503, "database-unavailable"))


def timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("slow", request=request)


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


def not_found(request: httpx.Request) -> httpx.Response:
    return httpx.Response(404, json=problem_json(404, "product-not-found"))


class Server:
    """A respx route whose behaviour the test switches: ``server.answer = unavailable``."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.answer: Callable[[httpx.Request], httpx.Response] = ok
        self.route = router.get(PATH).mock(side_effect=lambda req: self.answer(req))

    @property
    def requests(self) -> int:
        return self.route.call_count


@pytest.fixture
def server() -> Iterator[Server]:
    with respx.mock(base_url=BASE) as router:
        yield Server(router)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def changes() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def breaker(clock: Clock, changes: list[tuple[str, str]]) -> Breaker:
    return Breaker(
        fail_max=3,
        reset_timeout=30,
        clock=clock,
        on_change=lambda old, new: changes.append((old, new)),
    )


@pytest.fixture
def client(breaker: Breaker) -> Iterator[WarehouseClient]:
    with WarehouseClient(ClientOptions(BASE, retries=0), breaker) as c:
        yield c


def fails_fast(client: WarehouseClient, server: Server, reason: str = "open") -> None:
    before = server.requests
    with pytest.raises(errors.WarehouseUnavailable, match=f"circuit warehouse is {reason}"):
        client.sellable("P-1")
    assert server.requests == before, "a fast failure must not reach the server"


def trip(client: WarehouseClient, server: Server, n: int = 3) -> None:
    server.answer = unavailable
    for _ in range(n):
        with pytest.raises(errors.WarehouseUnavailable, match="warehouse API"):
            client.sellable("P-1")


def test_closed_open_half_open_closed(
    client: WarehouseClient,
    server: Server,
    breaker: Breaker,
    clock: Clock,
    changes: list[tuple[str, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "stockctl.breaker")
    # 4xx are answers: a healthy server refusing, never a failure of the circuit
    server.answer = not_found
    for _ in range(10):
        with pytest.raises(errors.ProductNotFound):
            client.sellable("P-1")
    assert breaker.state == "closed" and breaker.storage.counter == 0

    # failures must be consecutive: a success in between resets the count
    for answer in (unavailable, timeout, ok, refused, unavailable, not_found):
        server.answer = answer
        try:
            client.sellable("P-1")
        except errors.StockctlError:
            pass
    assert breaker.state == "closed" and breaker.storage.counter == 0

    # fail_max = 3 consecutive failures of every kind: 5xx, timeout, connection refused
    for answer in (unavailable, timeout, refused):
        server.answer = answer
        with pytest.raises(errors.WarehouseUnavailable):
            client.sellable("P-1")
    assert breaker.state == "open" and changes == [("closed", "open")]
    assert "circuit warehouse: closed -> open" in caplog.text

    # open: fails fast with no request, until the reset timeout has passed
    server.answer = ok
    fails_fast(client, server)
    clock.advance(29.9)
    fails_fast(client, server)

    # half-open: exactly one trial goes through; callers during the trial fail fast
    clock.advance(0.1)
    during: list[str] = []

    def trial(request: httpx.Request) -> httpx.Response:
        during.append(breaker.state)
        fails_fast(client, server, "half-open")
        return OK

    server.answer = trial
    assert client.sellable("P-1") == 7
    assert during == ["half-open"]
    assert breaker.state == "closed"
    assert changes == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]
    server.answer = ok
    assert client.sellable("P-1") == 7  # closed again: calls go through


def test_a_failed_trial_reopens_for_another_timeout(
    client: WarehouseClient,
    server: Server,
    breaker: Breaker,
    clock: Clock,
    changes: list[tuple[str, str]],
) -> None:
    trip(client, server)
    clock.advance(30)
    server.answer = timeout
    with pytest.raises(errors.WarehouseUnavailable, match="ReadTimeout"):
        client.sellable("P-1")  # the trial
    assert breaker.state == "open"
    assert changes[-2:] == [("open", "half-open"), ("half-open", "open")]

    server.answer = ok
    clock.advance(29)  # the timeout counts from the failed trial, not the first opening
    fails_fast(client, server)
    clock.advance(1)
    assert client.sellable("P-1") == 7
    assert breaker.state == "closed"


def test_a_trial_answered_with_4xx_closes(
    client: WarehouseClient, server: Server, breaker: Breaker, clock: Clock
) -> None:
    trip(client, server)
    clock.advance(30)
    server.answer = not_found
    with pytest.raises(errors.ProductNotFound):
        client.sellable("P-1")
    assert breaker.state == "closed"


def test_retries_stop_when_the_circuit_opens(server: Server, clock: Clock) -> None:
    breaker = Breaker(fail_max=2, reset_timeout=30, clock=clock)
    options = ClientOptions(BASE, retries=5, backoff=0.0)
    server.answer = unavailable
    with (
        WarehouseClient(options, breaker) as c,
        pytest.raises(errors.WarehouseUnavailable, match="circuit warehouse is open"),
    ):
        c.sellable("P-1")
    assert server.requests == 2 and breaker.state == "open"


def test_only_one_trial_among_concurrent_callers(
    client: WarehouseClient, server: Server, breaker: Breaker, clock: Clock
) -> None:
    trip(client, server)
    clock.advance(30)
    release = threading.Event()

    def slow_trial(request: httpx.Request) -> httpx.Response:
        release.wait(5)
        return OK

    server.answer = slow_trial
    results: list[Any] = []

    def call() -> None:
        try:
            results.append(client.sellable("P-1"))
        except errors.WarehouseUnavailable as exc:
            results.append(exc)

    first = threading.Thread(target=call)
    first.start()
    deadline = time.monotonic() + 5
    while breaker.state != "half-open" and time.monotonic() < deadline:
        time.sleep(0.001)
    assert breaker.state == "half-open"
    others = [threading.Thread(target=call) for _ in range(8)]
    for t in others:
        t.start()
    for t in others:
        t.join(5)
    release.set()
    first.join(5)
    assert server.requests == 3 + 1  # the 3 that tripped it, then the single trial
    assert results.count(7) == 1
    refused_ = [r for r in results if isinstance(r, errors.WarehouseUnavailable)]
    assert len(refused_) == 8 and all("half-open" in str(r) for r in refused_)
    assert breaker.state == "closed"


def test_admit_is_exclusive_under_a_thread_race(breaker: Breaker, clock: Clock) -> None:
    for _ in range(3):
        breaker.failure(breaker.admit())
    assert breaker.state == "open"
    clock.advance(30)
    gate = threading.Barrier(16)
    admitted: list[bool] = []
    refused_: list[Exception] = []

    def race() -> None:
        gate.wait()
        try:
            admitted.append(breaker.admit())
        except errors.WarehouseUnavailable as exc:
            refused_.append(exc)

    threads = [threading.Thread(target=race) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert admitted == [True] and len(refused_) == 15
    breaker.success(True)
    assert breaker.state == "closed" and breaker.admit() is False


class Boom(BaseException):
    """Something that is not an HTTP error (a KeyboardInterrupt, a cancellation)."""


def test_a_trial_that_blows_up_reopens_and_frees_the_trial(
    client: WarehouseClient, server: Server, breaker: Breaker, clock: Clock
) -> None:
    trip(client, server)
    clock.advance(30)

    def boom(request: httpx.Request) -> httpx.Response:
        raise Boom

    server.answer = boom
    with pytest.raises(Boom):
        client.sellable("P-1")
    assert breaker.state == "open"  # never stuck half-open with the trial taken
    fails_fast(client, server)
    clock.advance(30)
    server.answer = ok
    assert client.sellable("P-1") == 7 and breaker.state == "closed"


def test_the_async_client_shares_the_rules(
    server: Server, breaker: Breaker, clock: Clock, changes: list[tuple[str, str]]
) -> None:
    async def main() -> None:
        gate = asyncio.Event()

        async def slow_trial(request: httpx.Request) -> httpx.Response:
            await gate.wait()
            return OK

        async with AsyncWarehouseClient(ClientOptions(BASE, retries=0), breaker) as c:
            server.answer = unavailable
            for _ in range(2):
                with pytest.raises(errors.WarehouseUnavailable):
                    await c.sellable("P-1")
            server.answer = not_found  # a 4xx resets the consecutive count
            with pytest.raises(errors.ProductNotFound):
                await c.sellable("P-1")
            server.answer = refused
            for _ in range(3):
                with pytest.raises(errors.WarehouseUnavailable):
                    await c.sellable("P-1")
            assert breaker.state == "open" and server.requests == 6

            with pytest.raises(errors.WarehouseUnavailable, match="is open"):
                await c.sellable("P-1")
            assert server.requests == 6

            clock.advance(30)
            server.route.side_effect = slow_trial
            trial = asyncio.ensure_future(c.sellable("P-1"))
            await asyncio.sleep(0.01)
            assert breaker.state == "half-open"
            others = await asyncio.gather(
                *(c.sellable("P-1") for _ in range(5)), return_exceptions=True
            )
            assert all(isinstance(o, errors.WarehouseUnavailable) for o in others)
            gate.set()
            assert await trial == 7
            assert server.requests == 7 and breaker.state == "closed"

    asyncio.run(main())
    assert changes == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]


def test_a_cancelled_async_trial_reopens(server: Server, breaker: Breaker, clock: Clock) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return OK

    async def main() -> None:
        async with AsyncWarehouseClient(ClientOptions(BASE, retries=0), breaker) as c:
            server.answer = unavailable
            for _ in range(3):
                with pytest.raises(errors.WarehouseUnavailable):
                    await c.sellable("P-1")
            clock.advance(30)
            server.route.side_effect = hang
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(c.sellable("P-1"), 0.05)
            assert breaker.state == "open"
            clock.advance(30)
            server.route.side_effect = ok
            assert await c.sellable("P-1") == 7

    asyncio.run(main())
    assert breaker.state == "closed"


def test_in_flight_results_after_opening_do_not_close_it(breaker: Breaker, clock: Clock) -> None:
    """Calls admitted while closed may finish after the circuit opened: only a trial closes."""
    late = [breaker.admit() for _ in range(5)]
    assert late == [False] * 5
    for t in late[:3]:
        breaker.failure(t)
    assert breaker.state == "open"
    breaker.success(late[3])
    breaker.failure(late[4])
    assert breaker.state == "open"
    with pytest.raises(errors.WarehouseUnavailable):
        breaker.admit()


def test_build_client_wires_settings() -> None:
    settings = load_settings(
        None,
        api_url=BASE,
        api_token="tok-" + "0123456789abcdef",
        client_timeout_seconds=2.5,
        client_retries=4,
        breaker_fail_max=7,
        breaker_reset_seconds=12.0,
    )
    with build_client(settings) as c:
        assert c.breaker.cb.fail_max == 7 and c.breaker.cb.reset_timeout == 12.0
        assert isinstance(c.breaker.storage, pybreaker.CircuitMemoryStorage)
        assert c.options.retries == 4 and c.options.timeout == 2.5
        with respx.mock(base_url=BASE) as router:
            route = router.get("/v1/inventory/product/P-1").respond(404)
            with pytest.raises(errors.StockctlError):
                c.sellable("P-1")
        assert route.calls.last.request.headers["Authorization"] == "Bearer tok-0123456789abcdef"
    with pytest.raises(errors.InvalidInput, match="no API URL"):
        build_client(load_settings(None))


def test_state_changes_are_exported_as_metrics(server: Server, clock: Clock) -> None:
    from stockctl.daemons.metrics import Metrics

    metrics = Metrics()
    breaker = Breaker(
        fail_max=3, reset_timeout=30, clock=clock, on_change=metrics.circuit_changed("warehouse")
    )
    with WarehouseClient(ClientOptions(BASE, retries=0), breaker) as client:
        trip(client, server)
        value = metrics.registry.get_sample_value
        assert value("stockctl_circuit_open", {"circuit": "warehouse"}) == 1
        assert (
            value("stockctl_circuit_state_changes_total", {"circuit": "warehouse", "state": "open"})
            == 1
        )
        clock.advance(31)
        server.answer = ok
        client.sellable("P-1")  # the trial succeeds: closed again
        assert value("stockctl_circuit_open", {"circuit": "warehouse"}) == 0
