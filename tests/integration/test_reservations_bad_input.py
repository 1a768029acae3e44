"""Bad input to reservations: each a typed error from ``stockctl.errors``, and nothing changed."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

import stockctl
from stockctl.core.lines import Line
from stockctl.core.model import MAX_QUANTITY
from stockctl.errors import (
    InsufficientStock,
    InvalidInput,
    InvalidTransition,
    InventoryNotFound,
    ProductNotFound,
    ReservationNotFound,
    StockctlError,
    WarehouseNotFound,
)
from stockctl.library import Stockctl
from tests.conftest import new_id
from tests.integration.test_reservations import assert_invariants, snapshot, stocked


def refused(
    sc: Stockctl, error: type[StockctlError], call: Callable[..., Any], *args: Any, **kwargs: Any
) -> StockctlError:
    """``call(*args, **kwargs)`` raises exactly ``error`` (not a subclass of it) and leaves
    every table as it was."""
    before = snapshot(sc)
    with pytest.raises(StockctlError) as info:
        call(*args, **kwargs)
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert str(info.value) and "\n" not in str(info.value)
    assert snapshot(sc) == before
    return info.value


BAD_QUANTITIES: list[Any] = [0, -1, -(2**31), MAX_QUANTITY + 1, 2**63, True, 1.5, "3", None]


def test_bad_quantity(sc: Stockctl) -> None:
    p, w = stocked(sc, 10)
    for quantity in BAD_QUANTITIES:
        refused(sc, InvalidInput, sc.reserve, p, w, quantity)
        refused(sc, InvalidInput, sc.reserve, p, None, quantity)
        refused(sc, InvalidInput, sc.checkout, [(p, w, 1), (p, w, quantity)])


def test_summed_checkout_lines_above_the_maximum(sc: Stockctl) -> None:
    p, w = stocked(sc, 10)
    refused(sc, InvalidInput, sc.checkout, [(p, w, MAX_QUANTITY), (p, w, 1)])
    refused(sc, InvalidInput, sc.checkout, [])


BAD_TTLS = [
    timedelta(0),
    timedelta(seconds=-1),
    timedelta(days=-3),
    timedelta(days=1, seconds=1),  # the default maximum is 24 h
    timedelta(days=400),
]


def test_bad_ttl(sc: Stockctl) -> None:
    p, w = stocked(sc, 10)
    r = sc.reserve(p, w, 1)
    for ttl in BAD_TTLS:
        refused(sc, InvalidInput, sc.reserve, p, w, 1, ttl=ttl)
        refused(sc, InvalidInput, sc.checkout, [(p, w, 1)], ttl=ttl)
        refused(sc, InvalidInput, sc.extend, r.id, ttl)


def test_ttl_limit_follows_the_configured_maximum(sc: Stockctl, database_url: str) -> None:
    p, w = stocked(sc, 10)
    with stockctl.connect(database_url, reservation_max_ttl_seconds=60) as short:
        refused(short, InvalidInput, short.reserve, p, w, 1, ttl=timedelta(seconds=61))
        r = short.reserve(p, w, 1, ttl=timedelta(seconds=60))
        assert r.expires_at - r.created_at == timedelta(seconds=60)
        refused(short, InvalidInput, short.extend, r.id, timedelta(minutes=2))
    assert sc.reserve(p, w, 1, ttl=timedelta(hours=24)).quantity == 1  # default max: 24 h


def test_unknown_reservation(sc: Stockctl) -> None:
    p, w = stocked(sc, 10)
    sc.reserve(p, w, 2)
    missing = 2**62 + random.randrange(2**40)
    for error in (
        refused(sc, ReservationNotFound, sc.confirm, missing),
        refused(sc, ReservationNotFound, sc.release, missing),
        refused(sc, ReservationNotFound, sc.extend, missing, timedelta(minutes=5)),
        refused(sc, ReservationNotFound, sc.fulfil, missing),
        refused(sc, ReservationNotFound, sc.get_reservation, missing),
    ):
        assert str(missing) in str(error)


def test_malformed_reservation_id(sc: Stockctl) -> None:
    p, w = stocked(sc, 10)
    sc.reserve(p, w, 2)
    for bad_id in ["", "abc", "0", "-1", "1.5", " 7", "9" * 20, "../etc", "'; --", "\x00"]:
        refused(sc, InvalidInput, sc.confirm, bad_id)
        refused(sc, InvalidInput, sc.release, bad_id)
        refused(sc, InvalidInput, sc.extend, bad_id, timedelta(minutes=5))
        refused(sc, InvalidInput, sc.fulfil, bad_id)
        refused(sc, InvalidInput, sc.get_reservation, bad_id)


def test_confirm_after_release(sc: Stockctl) -> None:
    p, w = stocked(sc, 10)
    r = sc.reserve(p, w, 2)
    sc.release(r.id)
    error = refused(sc, InvalidTransition, sc.confirm, r.id)
    assert str(r.id) in str(error)
    refused(sc, InvalidTransition, sc.fulfil, r.id)
    refused(sc, InvalidTransition, sc.extend, r.id, timedelta(minutes=5))
    assert_invariants(sc)


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "P",
        "P:",
        ":3",
        "P:x",
        "P:1.5",
        "P:1e3",
        "P:W:",
        "P::3",
        "P:W:X:3",
        "P:0",
        "P:-2",
        "P:W:0",
        "P: ",
        "P W:3",
        "P:²",
        "P:W:٣",
        "P:9" * 7,
        f"P:{MAX_QUANTITY + 1}",
        "P:" + "9" * 5000,
    ],
)
def test_malformed_checkout_item(spec: str) -> None:
    with pytest.raises(StockctlError) as info:
        Line.parse(spec)
    assert type(info.value) is InvalidInput


def test_well_formed_checkout_items() -> None:
    assert Line.parse("P-1:3") == Line("P-1", None, 3)
    assert Line.parse("P-1:W.2:12") == Line("P-1", "W.2", 12)


def test_unknown_product_or_warehouse(sc: Stockctl) -> None:
    p, w = stocked(sc, 10)
    other_w = new_id("W")
    sc.add_warehouse(other_w)
    ghost_p, ghost_w = new_id("P"), new_id("W")
    refused(sc, ProductNotFound, sc.reserve, ghost_p, w, 1)
    refused(sc, ProductNotFound, sc.reserve, ghost_p, None, 1)
    refused(sc, WarehouseNotFound, sc.reserve, p, ghost_w, 1)
    refused(sc, InventoryNotFound, sc.reserve, p, other_w, 1)
    refused(sc, ProductNotFound, sc.checkout, [(p, w, 1), (ghost_p, w, 1)])
    refused(sc, WarehouseNotFound, sc.checkout, [(p, w, 1), (p, ghost_w, 1)])
    refused(sc, InvalidInput, sc.reserve, "bad id", w, 1)
    refused(sc, InvalidInput, sc.reserve, p, "a:b", 1)
    refused(sc, InvalidInput, sc.checkout, [(p, "", 1)])

    lonely = new_id("P")
    sc.add_product(lonely)  # a product with no stock row anywhere
    refused(sc, InsufficientStock, sc.reserve, lonely, None, 1)


def test_bad_order_key_and_limits(sc: Stockctl) -> None:
    p, w = stocked(sc, 10)
    refused(sc, InvalidInput, sc.reserve, p, w, 1, order_id="o" * 129)
    refused(sc, InvalidInput, sc.reserve, p, w, 1, order_id="  ")
    refused(sc, InvalidInput, sc.reserve, p, w, 1, order_id="a\nb")
    refused(sc, InvalidInput, sc.reserve, p, w, 1, idempotency_key="")
    refused(sc, InvalidInput, sc.reserve, p, w, 1, idempotency_key="k" * 201)
    refused(sc, InvalidInput, sc.release_order, "")
    held = sc.reserve(p, w, 1, order_id="o-1")
    refused(sc, InvalidInput, sc.release, held.id, reason="r" * 201)  # the ledger keeps 200
    refused(sc, InvalidInput, sc.release_order, "o-1", reason="r" * 201)
    assert sc.release(held.id, reason="  ").status.value == "RELEASED"  # blank: the default
    assert sc.history(p, w, limit=1)[0].reason == "released"
    refused(sc, InvalidInput, sc.expire_due, limit=0)
    refused(sc, InvalidInput, sc.expire_due, datetime(2030, 1, 1))  # naive: which zone?
    refused(sc, InvalidInput, sc.verify_reserved, limit=0)
