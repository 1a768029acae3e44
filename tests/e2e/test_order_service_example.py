"""The example order service (examples/order_service/) against a real ``stockctl serve``.

The stock service is always a real process on a fresh SQLite database, reached with a
``reserve``-scoped token; the order service runs in this process (FastAPI's TestClient) with an
orders database of each test's own, except in the last test, which runs it as
``python -m examples.order_service``. Stock is read at every step from the stock database
itself (``stockctl.connect(db).stock(...)``): reserved counts, available, hold statuses.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import stockctl
from examples.order_service.app import create_app
from stockctl.clients.warehouse import ClientOptions, WarehouseClient
from stockctl.core.model import Reservation
from stockctl.library import Stockctl
from tests.clientutil import Server, free_port, serve
from tests.conftest import new_id

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "orders-" + "7c1e5a9b3d2f4e60"
TOKENS = json.dumps([{"name": "orders", "token": TOKEN, "scopes": ["reserve"]}])


@dataclass
class StockSite:
    db: str
    server: Server


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StockSite]:
    workdir = tmp_path_factory.mktemp("order-service")
    db = f"sqlite:///{workdir / 'stock.db'}"
    with stockctl.connect(db) as lib:
        lib.init()
        lib.add_warehouse("W-1")
        lib.add_warehouse("W-2", priority=200)
    with serve(db, workdir, STOCKCTL_API_TOKENS=TOKENS) as server:
        yield StockSite(db, server)


@pytest.fixture
def sc(site: StockSite) -> Iterator[Stockctl]:
    with stockctl.connect(site.db) as lib:
        yield lib


class SpyClient(WarehouseClient):
    """The real client; each confirm first runs ``on_confirm`` (to look at the world then)."""

    on_confirm: Any = None

    def confirm(self, reservation_id: int) -> Reservation:
        if self.on_confirm is not None:
            self.on_confirm(reservation_id)
        return super().confirm(reservation_id)


@dataclass
class Shop:
    http: TestClient
    client: SpyClient
    orders_db: Path

    def add(self, session: str, product: str, qty: int, wh: str | None = None) -> Any:
        body = {"session_id": session, "product_id": product, "quantity": qty}
        if wh is not None:
            body["warehouse_id"] = wh
        return self.http.post("/api/v1/cart/add", json=body)

    def order_rows(self) -> list[tuple[str, str]]:
        with sqlite3.connect(self.orders_db) as conn:
            return list(conn.execute("SELECT id, status FROM orders"))

    def cart_rows(self, session: str) -> list[tuple[str, str, int]]:
        with sqlite3.connect(self.orders_db) as conn:
            return list(
                conn.execute(
                    "SELECT product_id, warehouse_id, quantity FROM cart_items"
                    " WHERE session_id = ? ORDER BY product_id, warehouse_id",
                    (session,),
                )
            )


@pytest.fixture
def shop(site: StockSite, tmp_path: Path) -> Iterator[Shop]:
    client = SpyClient(ClientOptions(site.server.url, token=TOKEN))
    orders_db = tmp_path / "orders.db"
    app = create_app(client, str(orders_db), own_client=True)
    with TestClient(app) as http:
        yield Shop(http, client, orders_db)


def product(sc: Stockctl, w1: int = 10, w2: int = 0) -> str:
    p = new_id("P")
    sc.add_product(p)
    if w1:
        sc.receive(p, "W-1", w1)
    if w2:
        sc.receive(p, "W-2", w2)
    return p


def counts(sc: Stockctl, p: str) -> dict[str, tuple[int, int]]:
    """(available, reserved) per warehouse, from the stock database."""
    return {r.warehouse_id: (r.on_hand, r.reserved) for r in sc.stock(p).rows}


def holds(sc: Stockctl, order_id: str) -> list[str]:
    return sorted(r.status.value for r in sc.list_reservations(order_id=order_id))


def test_add_to_cart_checks_stock(sc: Stockctl, shop: Shop) -> None:
    p = product(sc, w1=10, w2=2)
    session = new_id("S")

    ok = shop.add(session, p, 7)
    assert ok.status_code == 200, ok.text
    assert ok.json() == {
        "session_id": session,
        "items": [{"product_id": p, "warehouse_id": None, "quantity": 7}],
    }
    assert shop.add(session, p, 5).status_code == 200  # 12 of 12 sellable over warehouses

    too_much = shop.add(session, p, 1)  # the cart's 13 against 12 sellable
    assert too_much.status_code == 409, too_much.text
    assert too_much.json()["type"] == "insufficient-stock"
    assert shop.add(session, p, 3, "W-2").status_code == 409  # only 2 in W-2
    assert shop.add(session, p, 2, "W-2").status_code == 200

    assert shop.cart_rows(session) == [(p, "", 12), (p, "W-2", 2)]
    assert counts(sc, p) == {"W-1": (10, 0), "W-2": (2, 0)}  # a cart holds nothing
    unknown = shop.add(session, new_id("P"), 1)
    assert unknown.status_code == 404, unknown.text
    bad = shop.add(session, p, 0)
    assert bad.status_code == 422
    assert shop.cart_rows(session) == [(p, "", 12), (p, "W-2", 2)]


def test_checkout_reserves_creates_clears_then_confirms(sc: Stockctl, shop: Shop) -> None:
    a, b = product(sc, w1=10), product(sc, w1=0, w2=5)
    session = new_id("S")
    assert shop.add(session, a, 3).status_code == 200
    assert shop.add(session, b, 2, "W-2").status_code == 200

    seen: list[dict[str, Any]] = []

    def at_confirm(reservation_id: int) -> None:
        """The order is committed and the cart cleared before the first confirm."""
        hold = sc.get_reservation(reservation_id)
        seen.append(
            {
                "status": hold.status.value,
                "a": counts(sc, a),
                "b": counts(sc, b),
                "orders": shop.order_rows(),
                "cart": shop.cart_rows(session),
            }
        )

    shop.client.on_confirm = at_confirm
    done = shop.http.post("/api/v1/cart/checkout", json={"session_id": session})
    assert done.status_code == 201, done.text
    order = done.json()
    assert order["status"] == "CREATED" and order["session_id"] == session
    lines = sorted((i["product_id"], i["warehouse_id"], i["quantity"]) for i in order["items"])
    assert lines == sorted([(a, "W-1", 3), (b, "W-2", 2)])
    assert all(type(i["reservation_id"]) is int for i in order["items"])

    assert len(seen) == 2
    for step in seen:
        assert step["status"] == "ACTIVE"  # reserved, not yet confirmed
        assert step["a"] == {"W-1": (10, 3)} and step["b"] == {"W-2": (5, 2)}
        assert step["orders"] == [(order["id"], "CREATED")]  # committed before any confirm
        assert step["cart"] == []

    assert holds(sc, order["id"]) == ["CONFIRMED", "CONFIRMED"]
    assert counts(sc, a) == {"W-1": (10, 3)} and counts(sc, b) == {"W-2": (5, 2)}
    assert shop.http.get(f"/api/v1/orders/{order['id']}").json() == order
    assert shop.cart_rows(session) == []

    again = shop.http.post("/api/v1/cart/checkout", json={"session_id": session})
    assert again.status_code == 409  # the cart is empty now

    assert shop.http.post(f"/api/v1/orders/{order['id']}/cancel").status_code == 200
    assert counts(sc, a) == {"W-1": (10, 0)} and counts(sc, b) == {"W-2": (5, 0)}


def test_cancel_releases_the_holds(sc: Stockctl, shop: Shop) -> None:
    p = product(sc, w1=4, w2=6)
    items = [
        {"product_id": p, "warehouse_id": "W-1", "quantity": 4},
        {"product_id": p, "warehouse_id": "W-2", "quantity": 1},
    ]
    created = shop.http.post("/api/v1/orders", json={"items": items})
    assert created.status_code == 201, created.text
    order = created.json()
    assert counts(sc, p) == {"W-1": (4, 4), "W-2": (6, 1)}
    assert holds(sc, order["id"]) == ["CONFIRMED", "CONFIRMED"]

    cancel = shop.http.post(
        f"/api/v1/orders/{order['id']}/cancel", json={"reason": "changed my mind"}
    )
    assert cancel.status_code == 200, cancel.text
    body = cancel.json()
    assert sorted(body["released_reservations"]) == sorted(
        i["reservation_id"] for i in order["items"]
    )
    assert body["order"]["status"] == "CANCELLED"
    assert body["order"]["cancel_reason"] == "changed my mind"
    assert counts(sc, p) == {"W-1": (4, 0), "W-2": (6, 0)}  # reserved back, available kept
    assert holds(sc, order["id"]) == ["RELEASED", "RELEASED"]

    twice = shop.http.post(f"/api/v1/orders/{order['id']}/cancel")
    assert twice.status_code == 200 and twice.json()["released_reservations"] == []
    assert twice.json()["order"]["cancel_reason"] == "changed my mind"
    assert counts(sc, p) == {"W-1": (4, 0), "W-2": (6, 0)}

    assert shop.http.post("/api/v1/orders/ORD-none/cancel").status_code == 404
    assert shop.http.get("/api/v1/orders/ORD-none").status_code == 404


@pytest.mark.parametrize("shape", ["cloudevent", "plain"])
def test_payment_failed_cancels_and_releases(sc: Stockctl, shop: Shop, shape: str) -> None:
    p = product(sc, w1=8)
    order = shop.http.post(
        "/api/v1/orders", json={"items": [{"product_id": p, "quantity": 5}]}
    ).json()
    assert counts(sc, p) == {"W-1": (8, 5)}

    data = {"order_id": order["id"], "failure_reason": "card declined"}
    event: dict[str, Any] = data
    if shape == "cloudevent":
        event = {
            "specversion": "1.0",
            "type": "payment.failed",
            "source": "payment",
            "id": new_id("evt"),
            "datacontenttype": "application/json",
            "data": data,
        }
    kind = "application/cloudevents+json" if shape == "cloudevent" else "application/json"
    got = shop.http.post(
        "/api/v1/events/payment-failed", content=json.dumps(event), headers={"Content-Type": kind}
    )
    assert got.status_code == 200, got.text
    assert got.json()["order"]["status"] == "CANCELLED"
    assert got.json()["order"]["cancel_reason"] == "payment failed: card declined"
    assert counts(sc, p) == {"W-1": (8, 0)}
    assert holds(sc, order["id"]) == ["RELEASED"]
    history = sc.history(p, limit=1)[0]
    assert history.reason == "payment_failed"

    unknown = {"order_id": "ORD-none"}
    assert shop.http.post("/api/v1/events/payment-failed", json=unknown).status_code == 404
    other = {**event, "type": "order.created"} if shape == "cloudevent" else {"order": 1}
    assert shop.http.post("/api/v1/events/payment-failed", json=other).status_code == 422


def test_a_failed_order_insert_releases_every_hold(sc: Stockctl, shop: Shop) -> None:
    a, b = product(sc, w1=5), product(sc, w1=3, w2=3)
    session = new_id("S")
    assert shop.add(session, a, 5).status_code == 200
    assert shop.add(session, b, 3, "W-2").status_code == 200
    assert shop.add(session, b, 1, "W-1").status_code == 200
    with sqlite3.connect(shop.orders_db) as conn:
        conn.execute(
            "CREATE TRIGGER no_orders BEFORE INSERT ON orders"
            " BEGIN SELECT RAISE(ABORT, 'orders table refuses inserts'); END"
        )

    failed = shop.http.post("/api/v1/cart/checkout", json={"session_id": session})
    assert failed.status_code == 500, failed.text
    assert "no stock is held" in failed.json()["detail"]
    assert counts(sc, a) == {"W-1": (5, 0)}
    assert counts(sc, b) == {"W-1": (3, 0), "W-2": (3, 0)}
    tried = sc.list_reservations(product_id=a) + sc.list_reservations(product_id=b)
    assert len(tried) == 3 and {r.status.value for r in tried} == {"RELEASED"}
    assert shop.order_rows() == []
    assert shop.cart_rows(session) == sorted([(a, "", 5), (b, "W-1", 1), (b, "W-2", 3)])

    with sqlite3.connect(shop.orders_db) as conn:
        conn.execute("DROP TRIGGER no_orders")
    retry = shop.http.post("/api/v1/cart/checkout", json={"session_id": session})
    assert retry.status_code == 201, retry.text
    assert counts(sc, a) == {"W-1": (5, 5)}
    assert counts(sc, b) == {"W-1": (3, 1), "W-2": (3, 3)}
    assert holds(sc, retry.json()["id"]) == ["CONFIRMED"] * 3
    assert shop.http.post(f"/api/v1/orders/{retry.json()['id']}/cancel").status_code == 200
    assert counts(sc, b) == {"W-1": (3, 0), "W-2": (3, 0)}


def test_checkout_short_of_stock_holds_nothing(sc: Stockctl, shop: Shop) -> None:
    a, b = product(sc, w1=5), product(sc, w1=5)
    session = new_id("S")
    assert shop.add(session, a, 2).status_code == 200
    assert shop.add(session, b, 4).status_code == 200
    sc.adjust(b, "W-1", -3, reason="damage")  # sold elsewhere after the cart check

    short = shop.http.post("/api/v1/cart/checkout", json={"session_id": session})
    assert short.status_code == 409, short.text
    assert counts(sc, a) == {"W-1": (5, 0)} and counts(sc, b) == {"W-1": (2, 0)}
    assert sc.list_reservations(product_id=a) == []
    assert shop.order_rows() == [] and len(shop.cart_rows(session)) == 2


def test_cancel_while_the_stock_service_is_down(sc: Stockctl, shop: Shop) -> None:
    """The cancel commits anyway and answers 503; repeating it once stock answers releases."""
    p = product(sc, w1=3)
    order = shop.http.post("/api/v1/orders", json={"items": [{"product_id": p, "quantity": 3}]})
    order_id = order.json()["id"]
    down = WarehouseClient(ClientOptions(f"http://127.0.0.1:{free_port()}", retries=0))
    with TestClient(create_app(down, str(shop.orders_db), own_client=True)) as cut_off:
        failed = cut_off.post(f"/api/v1/orders/{order_id}/cancel")
        assert failed.status_code == 503, failed.text
        assert (
            cut_off.post(
                "/api/v1/cart/add", json={"session_id": "S", "product_id": p, "quantity": 1}
            ).status_code
            == 503
        )
    assert shop.order_rows() == [(order_id, "CANCELLED")]
    assert counts(sc, p) == {"W-1": (3, 3)}  # confirmed holds do not expire: retry the cancel

    retried = shop.http.post(f"/api/v1/orders/{order_id}/cancel")
    assert retried.status_code == 200, retried.text
    assert len(retried.json()["released_reservations"]) == 1
    assert counts(sc, p) == {"W-1": (3, 0)}


def test_runs_as_a_module(sc: Stockctl, site: StockSite, tmp_path: Path) -> None:
    """``python -m examples.order_service`` configured by the environment only."""
    p = product(sc, w1=2)
    port = free_port()
    env = {
        "STOCK_API_URL": site.server.url,
        "STOCK_API_TOKEN": TOKEN,
        "ORDERS_DB": str(tmp_path / "orders.db"),
        "PORT": str(port),
        "PATH": "/usr/bin:/bin",
    }
    log = (tmp_path / "order-service.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.order_service"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "order-service.log").read_text()
            try:
                httpx.get(f"{url}/orders/ORD-none", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "order service did not start"
                time.sleep(0.05)
        add = {"session_id": "S-1", "product_id": p, "quantity": 2}
        assert httpx.post(f"{url}/cart/add", json=add).status_code == 200
        order = httpx.post(f"{url}/cart/checkout", json={"session_id": "S-1"})
        assert order.status_code == 201, order.text
        assert counts(sc, p) == {"W-1": (2, 2)}
        cancel = httpx.post(f"{url}/orders/{order.json()['id']}/cancel")
        assert cancel.status_code == 200, cancel.text
        assert counts(sc, p) == {"W-1": (2, 0)}
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
