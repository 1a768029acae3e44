"""The guide's order service over stockctl: cart, checkout, orders, cancellation, payment.failed.

Stock goes through ``stockctl.WarehouseClient`` (the guide's warehouse client) and the two-phase
``stockctl.checkout``: reserve every line (all or none), create the order in this service's own
SQLite transaction (``create_order`` commits it), then confirm each hold after the commit. If the
order is not created, every hold is released before the error is answered.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

import stockctl
from examples.order_service import orders
from examples.order_service.config import Config
from examples.order_service.orders import Line, Order, OrderStore
from stockctl.clients.warehouse import ClientOptions, WarehouseClient
from stockctl.core.model import Reservation
from stockctl.errors import StockctlError

log = logging.getLogger("order_service")

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]  # as stockctl
Quantity = Annotated[int, Field(gt=0, le=2_147_483_647)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Item(Strict):
    product_id: Id
    warehouse_id: Id | None = None  # None: stockctl's allocation picks the warehouse
    quantity: Quantity


class CartAdd(Item):
    session_id: Id


class Cart(Strict):
    session_id: str
    items: list[Item]


class Checkout(Strict):
    session_id: Id


class NewOrder(Strict):
    """Either the lines themselves, or a session whose cart is ordered (and cleared)."""

    items: list[Item] | None = Field(default=None, min_length=1, max_length=100)
    session_id: Id | None = None

    @model_validator(mode="after")
    def _one_source(self) -> NewOrder:
        if (self.items is None) == (self.session_id is None):
            raise ValueError("give either items or session_id")
        return self


class Cancel(Strict):
    reason: str = Field(default="cancelled by customer", min_length=1, max_length=200)


class Cancelled(Strict):
    order: Order
    released_reservations: list[int]


class OrderService:
    def __init__(self, client: WarehouseClient, store: OrderStore) -> None:
        self.client = client
        self.store = store

    def add_to_cart(self, add: CartAdd) -> Cart:
        with self.store.transaction() as tx:
            total = orders.in_cart(tx, add.session_id, add.product_id, add.warehouse_id)
            total += add.quantity
            # the guide's CheckStock: returns, or raises InsufficientStock (answered 409)
            self.client.check_stock(add.product_id, add.warehouse_id, total)
            orders.put_in_cart(tx, add.session_id, add.product_id, add.warehouse_id, total)
            lines = orders.cart_lines(tx, add.session_id)
        return Cart(session_id=add.session_id, items=[_item(line) for line in lines])

    def place_order(self, items: list[Item] | None, session_id: str | None) -> Order:
        """Reserve, create the order and clear the cart in one transaction, confirm after."""
        order_id = orders.new_order_id()
        with self.store.transaction() as tx:
            if items is None:
                assert session_id is not None
                lines = orders.cart_lines(tx, session_id)
                if not lines:
                    raise HTTPException(409, f"the cart of {session_id} is empty")
            else:
                lines = [(i.product_id, i.warehouse_id, i.quantity) for i in items]

            def create_order(held: list[Reservation]) -> Order:
                order = orders.insert_order(tx, order_id, session_id, held)
                if items is None and session_id is not None:
                    orders.clear_cart(tx, session_id)
                tx.execute("COMMIT")  # stockctl.checkout confirms once this returns
                return order

            try:
                return stockctl.checkout(self.client, lines, create_order, order_id=order_id)
            except sqlite3.Error as exc:  # stockctl.checkout has released every hold
                log.warning("order %s not created, its holds released: %s", order_id, exc)
                raise HTTPException(500, f"order not created ({exc}); no stock is held") from exc

    def get(self, order_id: str) -> Order:
        with self.store.transaction() as tx:
            order = orders.get_order(tx, order_id)
        if order is None:
            raise HTTPException(404, f"no order {order_id}")
        return order

    def cancel(self, order_id: str, reason: str, release_reason: str) -> Cancelled:
        """Cancel (committed first, it never waits on stock), then release every hold of the
        order. Safe to repeat: cancelling a cancelled order releases whatever is still held."""
        with self.store.transaction() as tx:
            if orders.get_order(tx, order_id) is None:
                raise HTTPException(404, f"no order {order_id}")
            orders.mark_cancelled(tx, order_id, reason)
        try:
            released = self.client.release_order(order_id, release_reason)
        except StockctlError as exc:  # confirmed holds never expire: the caller must retry
            log.warning("order %s cancelled, its stock not released: %s", order_id, exc)
            raise HTTPException(503, f"order cancelled; releasing its stock failed: {exc}") from exc
        return Cancelled(order=self.get(order_id), released_reservations=[r.id for r in released])


def _item(line: Line) -> Item:
    return Item(product_id=line[0], warehouse_id=line[1], quantity=line[2])


def payment_failed(event: dict[str, Any]) -> tuple[str, str]:
    """(order id, failure reason) from a CloudEvent (structured mode) or a bare
    ``{"order_id": ...}``."""
    data: object = event
    if "specversion" in event:
        if event.get("type", "payment.failed") != "payment.failed":
            raise HTTPException(422, f"not a payment.failed event: {event.get('type')!r}")
        data = event.get("data")
    if not isinstance(data, dict):
        raise HTTPException(422, "event data must be an object")
    order_id = data.get("order_id")
    if isinstance(order_id, int) and not isinstance(order_id, bool):
        order_id = str(order_id)  # the guide's order ids are int64
    if not isinstance(order_id, str) or not order_id:
        raise HTTPException(422, "event data needs an order_id")
    reason = data.get("failure_reason") or data.get("reason") or "unknown"
    return order_id, f"payment failed: {reason}"[:200]


router = APIRouter(prefix="/api/v1")


def service(request: Request) -> OrderService:
    svc: OrderService = request.app.state.service
    return svc


Service = Annotated[OrderService, Depends(service)]


@router.post("/cart/add")
def add_to_cart(body: CartAdd, svc: Service) -> Cart:
    return svc.add_to_cart(body)


@router.post("/cart/checkout", status_code=201)
def checkout_cart(body: Checkout, svc: Service) -> Order:
    return svc.place_order(None, body.session_id)


@router.post("/orders", status_code=201)
def create_order(body: NewOrder, svc: Service) -> Order:
    return svc.place_order(body.items, body.session_id)


@router.get("/orders/{order_id}")
def get_order(order_id: str, svc: Service) -> Order:
    return svc.get(order_id)


@router.post("/orders/{order_id}/cancel")
def cancel_order(order_id: str, svc: Service, body: Cancel | None = None) -> Cancelled:
    return svc.cancel(order_id, (body or Cancel()).reason, "order_cancelled")


@router.post("/events/payment-failed")
def on_payment_failed(event: Annotated[dict[str, Any], Body()], svc: Service) -> Cancelled:
    """The ``payment.failed`` subscriber: cancel the order, release its stock. 404 for an
    unknown order (Dapr drops the event), 503 when the release failed (Dapr retries)."""
    order_id, reason = payment_failed(event)
    return svc.cancel(order_id, reason, "payment_failed")


def _stock_error(request: Request, exc: Exception) -> JSONResponse:
    """stockctl's typed errors keep their HTTP status: 409 insufficient stock, 404 unknown
    product or warehouse, 422 invalid input, 503 warehouse unavailable (circuit open)."""
    assert isinstance(exc, StockctlError)
    return JSONResponse({"detail": str(exc), "type": exc.slug}, status_code=exc.http_status)


def create_app(client: WarehouseClient, orders_db: str, *, own_client: bool = False) -> FastAPI:
    """The app over ``client``; ``own_client``: close it when the app shuts down."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if own_client:
            client.close()

    app = FastAPI(title="order service (stockctl example)", lifespan=lifespan)
    app.state.service = OrderService(client, OrderStore(orders_db))
    app.include_router(router)
    app.add_exception_handler(StockctlError, _stock_error)
    return app


def app_from_env() -> FastAPI:
    """For ``uvicorn --factory examples.order_service.app:app_from_env``."""
    config = Config.from_env()
    client = WarehouseClient(ClientOptions(config.stock_api_url, token=config.stock_api_token))
    return create_app(client, config.orders_db, own_client=True)
