"""One circuit shared by two clients (two processes' worth of breakers) through pybreaker's
``CircuitRedisStorage`` on the real Redis (db 15, a namespace of its own per test)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pybreaker
import pytest
import redis
import respx

from stockctl import errors
from stockctl.bootstrap import build_client
from stockctl.clients.breaker import Breaker
from stockctl.clients.warehouse import ClientOptions, WarehouseClient
from stockctl.settings import load_settings
from tests.clientutil import BASE, product_json, row_json
from tests.conftest import REDIS_URL
from tests.unit.test_breaker import Clock

pytestmark = pytest.mark.redis


@pytest.fixture
def r() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def namespace(r: redis.Redis) -> Iterator[str]:
    name = f"test-breaker-{uuid.uuid4().hex[:10]}"
    yield name
    keys = list(r.scan_iter(f"{name}:*"))
    if keys:
        r.delete(*keys)


def shared_breaker(r: redis.Redis, namespace: str, clock: Clock) -> Breaker:
    storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, r, namespace=namespace)
    return Breaker("warehouse", fail_max=3, reset_timeout=30, storage=storage, clock=clock)


@pytest.mark.parametrize(
    "start",
    [
        datetime.now(UTC),
        # a clock far behind the wall clock: the circuit must still follow it
        datetime(2020, 1, 1, tzinfo=UTC),
    ],
    ids=["wall-clock", "clock-behind"],
)
def test_two_clients_share_one_circuit(r: redis.Redis, namespace: str, start: datetime) -> None:
    clock = Clock(start)
    a_breaker = shared_breaker(r, namespace, clock)
    b_breaker = shared_breaker(r, namespace, clock)
    answer = [httpx.Response(503)]
    with respx.mock(base_url=BASE) as api:
        route = api.get("/v1/inventory/product/P-1").mock(side_effect=lambda req: answer[0])
        a = WarehouseClient(ClientOptions(BASE, retries=0), a_breaker)
        b = WarehouseClient(ClientOptions(BASE, retries=0), b_breaker)
        with a, b:
            # failures from both clients count against the one circuit
            for c in (a, b, a):
                with pytest.raises(errors.WarehouseUnavailable, match="warehouse API"):
                    c.sellable("P-1")
            assert r.get(f"{namespace}:pybreaker:state") == b"open"
            assert (a_breaker.state, b_breaker.state) == ("open", "open")

            # B never saw its own failures reach fail_max, yet fails fast with no request
            answer[0] = httpx.Response(200, json=product_json("P-1", row_json(sellable=4)))
            for c in (b, a):
                with pytest.raises(errors.WarehouseUnavailable, match="is open"):
                    c.sellable("P-1")
            assert route.call_count == 3

            clock.advance(28)  # opened_at is kept in whole seconds: stay clear of the edge
            with pytest.raises(errors.WarehouseUnavailable, match="is open"):
                b.sellable("P-1")
            clock.advance(2)
            assert b.sellable("P-1") == 4  # B's trial closes the circuit for A too
            assert r.get(f"{namespace}:pybreaker:state") == b"closed"
            assert a_breaker.state == "closed"
            assert a.sellable("P-1") == 4
            assert route.call_count == 5


def test_a_failed_trial_reopens_for_every_client(r: redis.Redis, namespace: str) -> None:
    clock = Clock(datetime.now(UTC))
    a_breaker = shared_breaker(r, namespace, clock)
    b_breaker = shared_breaker(r, namespace, clock)
    for _ in range(3):
        a_breaker.failure(a_breaker.admit())
    clock.advance(30)
    assert b_breaker.admit() is True
    assert a_breaker.state == "half-open"
    b_breaker.failure(True)
    assert a_breaker.state == "open"
    with pytest.raises(errors.WarehouseUnavailable, match="is open"):
        a_breaker.admit()
    clock.advance(30)
    assert a_breaker.admit() is True
    a_breaker.success(True)
    assert b_breaker.state == "closed" and b_breaker.admit() is False


def test_build_client_shares_the_circuit_through_redis(r: redis.Redis) -> None:
    settings = load_settings(None, api_url=BASE, breaker_fail_max=4)
    existed = set(r.scan_iter("stockctl-warehouse:*"))
    try:
        with build_client(settings, redis_client=r) as c:
            storage = c.breaker.storage
            assert isinstance(storage, pybreaker.CircuitRedisStorage)
            assert c.breaker.cb.fail_max == 4
            assert r.exists("stockctl-warehouse:pybreaker:state")
    finally:
        made = set(r.scan_iter("stockctl-warehouse:*")) - existed
        if made:
            r.delete(*made)
