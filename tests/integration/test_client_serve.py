"""The clients and the two-phase checkout against a real ``stockctl serve`` process (SQLite file).

- a checkout whose ``create_order`` raises leaves every reservation RELEASED, none ACTIVE;
- the happy path leaves every reservation CONFIRMED;
- killing the server (SIGKILL) mid-checkout: the release (or confirm) fails and is logged, and
  the sweeper gives everything back once the TTL has passed;
- the response shapes the clients decode are the server's real ones (reads, paging, errors).
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import stockctl
from stockctl import errors
from stockctl.clients.breaker import Breaker
from stockctl.clients.warehouse import ClientOptions, WarehouseClient
from stockctl.clients.warehouse_async import AsyncWarehouseClient
from stockctl.core.lines import Line
from stockctl.core.model import Reservation, ReservationStatus
from stockctl.library import Stockctl
from tests.clientutil import COMMAND, Server, clean_env, serve
from tests.conftest import new_id

S = ReservationStatus
RESERVE_TOKEN = "shop-" + "5c1d9e7b3a2f4e6d"
READ_TOKEN = "view-" + "8a6f4d2b0c9e7a5f"
TOKENS = json.dumps(
    [
        {"name": "shop", "token": RESERVE_TOKEN, "scopes": ["reserve"]},
        {"name": "view", "token": READ_TOKEN, "scopes": ["read"]},
    ]
)


@dataclass
class Site:
    url: str  # the database
    server: Server
    workdir: Path


def _init(url: str) -> None:
    with stockctl.connect(url) as sc:
        sc.init()
        for w in ("W-1", "W-2"):
            sc.add_warehouse(w)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One server for the tests that do not kill it; each test uses products of its own."""
    workdir = tmp_path_factory.mktemp("serve")
    url = f"sqlite:///{workdir / 'stockctl.db'}"
    _init(url)
    with serve(url, workdir, STOCKCTL_API_TOKENS=TOKENS) as server:
        yield Site(url, server, workdir)


@pytest.fixture
def sc(site: Site) -> Iterator[Stockctl]:
    """The library on the server's database: to seed, and to check what really happened."""
    with stockctl.connect(site.url) as lib:
        yield lib


def options(url: str, token: str | None = RESERVE_TOKEN) -> ClientOptions:
    return ClientOptions(url, token=token, timeout=5, backoff=0.01)


@pytest.fixture
def client(site: Site) -> Iterator[WarehouseClient]:
    with WarehouseClient(options(site.server.url)) as c:
        yield c


def stocked(sc: Stockctl, *pairs: tuple[str, int]) -> list[str]:
    """New products with stock in W-1 (first) and W-2 (second, if any)."""
    made = []
    for i, (warehouse, qty) in enumerate(pairs):
        p = new_id(f"P{i}")
        sc.add_product(p)
        sc.receive(p, warehouse, qty)
        made.append(p)
    return made


def reserved(sc: Stockctl, product: str) -> int:
    return sum(r.reserved for r in sc.stock(product).rows)


def statuses(sc: Stockctl, held: list[Reservation]) -> list[ReservationStatus]:
    return [sc.get_reservation(r.id).status for r in held]


def active_of_order(sc: Stockctl, order: str) -> list[Reservation]:
    found = sc.app.store.list_reservations(order_id=order, limit=100)
    return [r for r in found if r.status is S.ACTIVE]


# ---------------------------------------------------------------------------- two-phase checkout


def test_happy_path_leaves_every_reservation_confirmed(
    sc: Stockctl, client: WarehouseClient
) -> None:
    a, b = stocked(sc, ("W-1", 10), ("W-2", 5))
    order = new_id("O")
    seen: list[Reservation] = []

    def create_order(held: list[Reservation]) -> str:
        seen.extend(held)
        assert statuses(sc, held) == [S.ACTIVE, S.ACTIVE]
        return f"order {order} written"

    result = stockctl.checkout(
        client,
        [(a, "W-1", 3), Line(b, None, 2)],
        create_order,
        order_id=order,
        ttl=timedelta(minutes=5),
    )
    assert result == f"order {order} written"
    assert sorted((r.product_id, r.warehouse_id, r.quantity) for r in seen) == sorted(
        [(a, "W-1", 3), (b, "W-2", 2)]
    )
    assert statuses(sc, seen) == [S.CONFIRMED, S.CONFIRMED]
    assert {client.get_reservation(r.id).status for r in seen} == {S.CONFIRMED}
    assert {sc.get_reservation(r.id).order_id for r in seen} == {order}
    assert (reserved(sc, a), reserved(sc, b)) == (3, 2)  # confirmed holds stay reserved
    assert active_of_order(sc, order) == []


def test_failed_create_order_releases_every_reservation(
    sc: Stockctl, client: WarehouseClient
) -> None:
    a, b = stocked(sc, ("W-1", 10), ("W-2", 5))
    order = new_id("O")
    seen: list[Reservation] = []

    def create_order(held: list[Reservation]) -> str:
        seen.extend(held)
        assert (reserved(sc, a), reserved(sc, b)) == (4, 5)
        raise ValueError("payment declined")

    with pytest.raises(ValueError, match="payment declined"):
        stockctl.checkout(client, [(a, None, 4), (b, "W-2", 5)], create_order, order_id=order)
    assert len(seen) == 2
    assert statuses(sc, seen) == [S.RELEASED, S.RELEASED]
    assert active_of_order(sc, order) == []
    assert (reserved(sc, a), reserved(sc, b)) == (0, 0)
    assert (sc.stock(a).total_sellable, sc.stock(b).total_sellable) == (10, 5)


def test_insufficient_stock_holds_nothing_and_never_creates_the_order(
    sc: Stockctl, client: WarehouseClient
) -> None:
    a, b = stocked(sc, ("W-1", 10), ("W-1", 1))
    order = new_id("O")

    def create_order(held: list[Reservation]) -> None:
        raise AssertionError("no order without stock")

    with pytest.raises(errors.InsufficientStock):
        stockctl.checkout(client, [(a, "W-1", 2), (b, "W-1", 2)], create_order, order_id=order)
    assert (reserved(sc, a), reserved(sc, b)) == (0, 0)
    assert sc.app.store.list_reservations(order_id=order) == []


def test_the_same_order_twice_is_one_hold(sc: Stockctl, client: WarehouseClient) -> None:
    """The flow's idempotency key (checkout-<order>) makes a retried checkout the same hold."""
    (a,) = stocked(sc, ("W-1", 10))
    order = new_id("O")
    first = stockctl.checkout(client, [(a, "W-1", 3)], lambda held: held, order_id=order)
    again = stockctl.checkout(client, [(a, "W-1", 3)], lambda held: held, order_id=order)
    assert [r.id for r in again] == [r.id for r in first]
    assert reserved(sc, a) == 3


# ---------------------------------------------------------------------------- real response shapes


def test_reads_and_paging_decode_the_real_responses(sc: Stockctl, client: WarehouseClient) -> None:
    a, b = stocked(sc, ("W-1", 10), ("W-2", 4))
    sc.receive(a, "W-2", 5)
    sc.reserve(a, "W-1", 3)
    assert client.sellable(a) == 12
    assert client.sellable(a, "W-1") == 7
    summary = client.get_product_inventory(a)
    assert [(r.warehouse_id, r.on_hand, r.reserved) for r in summary.rows] == [
        ("W-1", 10, 3),
        ("W-2", 5, 0),
    ]
    assert summary.rows[0].version == sc.stock(a, "W-1").rows[0].version
    assert client.get_bulk_stock([a, b, "P-none"]) == {a: 12, b: 4}
    assert client.get_bulk_stock([a, b], "W-2") == {a: 5, b: 4}

    since = datetime.now(UTC) - timedelta(minutes=10)
    mine = {(r.product_id, r.warehouse_id) for r in client.recently_updated(since, limit=1)}
    assert {(a, "W-1"), (a, "W-2"), (b, "W-2")} <= mine
    page, more = client.recently_updated_page(since, 1, limit=1)
    assert len(page) == 1 and more is True


def test_errors_from_the_real_server(sc: Stockctl, client: WarehouseClient) -> None:
    (a,) = stocked(sc, ("W-1", 5))
    short = sc.reserve(a, "W-1", 1, ttl=timedelta(seconds=1))
    with pytest.raises(errors.InsufficientStock):
        client.reserve_stock(a, 50, "W-1")
    with pytest.raises(errors.ReservationNotFound):
        client.confirm_reservation(2**62 + 11)
    with pytest.raises(errors.ReservationNotFound):
        client.get_reservation(2**62 + 12)
    with pytest.raises(errors.InvalidInput, match="malformed reservation id"):
        client.release_reservation("not-a-uuid")
    with pytest.raises(errors.ProductNotFound):
        client.sellable(new_id("P-none"))
    with pytest.raises(errors.InvalidInput):
        client.reserve_stock(a, 0, "W-1")
    client.reserve_stock(a, 1, "W-1", idempotency_key="K-" + a)
    with pytest.raises(errors.IdempotencyConflict):
        client.reserve_stock(a, 2, "W-1", idempotency_key="K-" + a)
    time.sleep(max(0.0, (short.expires_at - datetime.now(UTC)).total_seconds() + 0.05))
    with pytest.raises(errors.ReservationExpired):
        client.confirm_reservation(short.id)


def test_lifecycle_calls_are_idempotent_so_retrying_them_is_safe(
    sc: Stockctl, client: WarehouseClient
) -> None:
    (a,) = stocked(sc, ("W-1", 10))
    one = client.reserve_stock(a, 2, "W-1")
    two = client.reserve_stock(a, 3, "W-1")
    assert one.id != two.id  # a fresh key for each reserve
    first = client.confirm_reservation(one.id)
    assert client.confirm_reservation(one.id) == first
    gone = client.release_reservation(two.id)
    assert client.release_reservation(two.id) == gone
    assert reserved(sc, a) == 2  # released once, not twice

    same = client.reserve_stock(a, 1, "W-1", idempotency_key="R-" + a)
    assert client.reserve_stock(a, 1, "W-1", idempotency_key="R-" + a).id == same.id
    assert reserved(sc, a) == 3


def test_the_bearer_token_is_what_the_server_checks(site: Site, sc: Stockctl) -> None:
    (a,) = stocked(sc, ("W-1", 5))
    with WarehouseClient(options(site.server.url, token=None)) as anonymous:
        with pytest.raises(errors.InvalidInput, match="missing bearer token"):
            anonymous.sellable(a)
    with WarehouseClient(options(site.server.url, token="wrong-" + "0" * 16)) as wrong:
        with pytest.raises(errors.InvalidInput, match="invalid bearer token"):
            wrong.sellable(a)
    with WarehouseClient(options(site.server.url, token=READ_TOKEN)) as reader:
        assert reader.sellable(a) == 5
        with pytest.raises(errors.InvalidInput, match="reserve"):
            reader.reserve_stock(a, 1, "W-1")
        assert reader.breaker.state == "closed"  # 4xx never count against the circuit
    assert reserved(sc, a) == 0


def test_async_client_against_the_server(site: Site, sc: Stockctl) -> None:
    a, b = stocked(sc, ("W-1", 10), ("W-2", 10))

    async def main() -> list[Reservation]:
        async with AsyncWarehouseClient(options(site.server.url)) as c:
            assert await c.sellable(a) == 10
            held = await c.checkout([Line(a, None, 2), Line(b, "W-2", 3)], order_id=new_id("O"))
            done = await asyncio.gather(*(c.confirm(r.id) for r in held))
            assert await c.get_bulk_stock([a, b]) == {a: 8, b: 7}
            since = datetime.now(UTC) - timedelta(minutes=10)
            rows = [r async for r in c.recently_updated(since, warehouse_id="W-2", limit=2)]
            assert (b, "W-2") in {(r.product_id, r.warehouse_id) for r in rows}
            with pytest.raises(errors.InsufficientStock):
                await c.reserve_stock(a, 100)
            return list(done)

    done = asyncio.run(main())
    assert statuses(sc, done) == [S.CONFIRMED, S.CONFIRMED]


# ---------------------------------------------------------------------------- server killed


@pytest.fixture
def doomed(tmp_path: Path) -> Iterator[Site]:
    """A server of its own, for a test that kills it."""
    url = f"sqlite:///{tmp_path / 'doomed.db'}"
    _init(url)
    with serve(url, tmp_path) as server:
        yield Site(url, server, tmp_path)


def _wait_past(held: list[Reservation]) -> None:
    last = max(r.expires_at for r in held)
    time.sleep(max(0.0, (last - datetime.now(UTC)).total_seconds() + 0.05))


def test_server_killed_before_release_leaves_nothing_held_past_the_ttl(
    doomed: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "stockctl.checkout")
    with (
        stockctl.connect(doomed.url) as sc,
        WarehouseClient(options(doomed.server.url, token=None), Breaker(fail_max=3)) as client,
    ):
        a, b = stocked(sc, ("W-1", 10), ("W-2", 6))
        order = new_id("O")
        seen: list[Reservation] = []

        def create_order(held: list[Reservation]) -> None:
            seen.extend(held)
            doomed.server.kill9()
            raise ConnectionError("order database went away too")

        with pytest.raises(ConnectionError, match="went away"):
            lines = [(a, "W-1", 4), (b, "W-2", 6)]
            stockctl.checkout(client, lines, create_order, order_id=order, ttl=timedelta(seconds=1))
        assert doomed.server.proc.returncode == -9
        failed = [m for m in caplog.messages if m.startswith("release of reservation")]
        assert len(failed) == 2
        assert all("failed (it will expire at" in m for m in failed)
        assert {r.id for r in seen} == {int(m.split()[3]) for m in failed}

        # the holds are still there: nobody could release them
        assert statuses(sc, seen) == [S.ACTIVE, S.ACTIVE]
        assert (reserved(sc, a), reserved(sc, b)) == (4, 6)

        _wait_past(seen)
        swept = subprocess.run(
            [*COMMAND, "--database-url", doomed.url, "reservations", "expire", "-o", "json"],
            env=clean_env(XDG_DATA_HOME=str(doomed.workdir / "xdg")),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert swept.returncode == 0, swept.stderr
        assert json.loads(swept.stdout) == {"expired": 2}
        assert statuses(sc, seen) == [S.EXPIRED, S.EXPIRED]
        assert active_of_order(sc, order) == []
        assert (reserved(sc, a), reserved(sc, b)) == (0, 0)
        assert (sc.stock(a).total_sellable, sc.stock(b).total_sellable) == (10, 6)


def test_server_killed_before_confirm_the_holds_expire(
    doomed: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "stockctl.checkout")
    with (
        stockctl.connect(doomed.url) as sc,
        WarehouseClient(options(doomed.server.url, token=None)) as client,
    ):
        (a,) = stocked(sc, ("W-1", 10))
        seen: list[Reservation] = []

        def create_order(held: list[Reservation]) -> str:
            seen.extend(held)
            doomed.server.kill9()
            return "committed"

        result = stockctl.checkout(client, [(a, "W-1", 7)], create_order, ttl=timedelta(seconds=1))
        assert result == "committed"  # the order stands; only the confirm failed
        assert [m for m in caplog.messages if m.startswith("confirm of reservation")] != []
        assert statuses(sc, seen) == [S.ACTIVE] and reserved(sc, a) == 7

        _wait_past(seen)
        assert sc.expire_due() == 1
        assert statuses(sc, seen) == [S.EXPIRED] and reserved(sc, a) == 0
