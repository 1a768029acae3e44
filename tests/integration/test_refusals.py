"""Bad input and broken stock rules: each refused with the right typed error, nothing changed.

One database per backend serves the whole module (a fresh one per test would cost a PostgreSQL
CREATE DATABASE each); every test still makes its own product and warehouses with random ids, and
compares a snapshot of every table before and after the refused call.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import stockctl
from stockctl.core.model import MAX_QUANTITY
from stockctl.errors import (
    AlreadyExists,
    BelowReserved,
    InsufficientStock,
    InvalidInput,
    InventoryNotFound,
    ProductNotFound,
    StockctlError,
    VersionConflict,
    WarehouseNotFound,
)
from stockctl.library import Stockctl
from tests import dbutil
from tests.conftest import _fresh_pg_database, new_id


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_sc(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stockctl]:
    def open_(url: str) -> Stockctl:
        with pytest.MonkeyPatch.context() as mp:  # no developer STOCKCTL_* settings
            for key in [k for k in os.environ if k.startswith("STOCKCTL_")]:
                mp.delenv(key)
            client = stockctl.connect(url, actor="refusal-tests")
        client.init()
        return client

    if request.param == "sqlite":
        client = open_(f"sqlite:///{tmp_path_factory.mktemp('refusals') / 'stockctl.db'}")
        yield client
        client.close()
    else:
        for url in _fresh_pg_database():
            client = open_(url)
            yield client
            client.close()


@dataclass
class World:
    """P has 10 units in A, none in B (no row), 10 with 8 reserved in R, MAX - 5 in F."""

    sc: Stockctl
    p: str
    a: str
    b: str
    r: str
    f: str


@pytest.fixture
def w(module_sc: Stockctl) -> World:
    sc = module_sc
    p = new_id("P")
    a, b, r, f = (new_id(x) for x in "ABRF")
    sc.add_product(p)
    for wh in (a, b, r, f):
        sc.add_warehouse(wh)
    sc.receive(p, a, 10)
    sc.receive(p, r, 10)
    dbutil.force_reserved(sc, p, r, 8)
    sc.receive(p, f, MAX_QUANTITY - 5)
    return World(sc, p, a, b, r, f)


Call = Callable[[World], Any]
Expected = type[StockctlError] | tuple[type[StockctlError], ...]
NOPE = "nope-" + "0" * 8
BIG = 2**31


def case(name: str, call: Call, expected: Expected) -> Any:
    return pytest.param(call, expected, id=name)


CASES = [
    # receive
    case("receive-zero", lambda w: w.sc.receive(w.p, w.a, 0), InvalidInput),
    case("receive-negative", lambda w: w.sc.receive(w.p, w.a, -3), InvalidInput),
    case("receive-2^31", lambda w: w.sc.receive(w.p, w.a, BIG), InvalidInput),
    case("receive-huge", lambda w: w.sc.receive(w.p, w.a, 10**15), InvalidInput),
    case("receive-overflows-row", lambda w: w.sc.receive(w.p, w.f, 6), InvalidInput),
    case("receive-bool", lambda w: w.sc.receive(w.p, w.a, True), InvalidInput),
    case("receive-float", lambda w: w.sc.receive(w.p, w.a, 1.5), InvalidInput),
    case("receive-text", lambda w: w.sc.receive(w.p, w.a, "5"), InvalidInput),
    case("receive-unknown-product", lambda w: w.sc.receive(NOPE, w.a, 1), ProductNotFound),
    case("receive-unknown-warehouse", lambda w: w.sc.receive(w.p, NOPE, 1), WarehouseNotFound),
    case(
        "receive-long-reason", lambda w: w.sc.receive(w.p, w.a, 1, reason="r" * 201), InvalidInput
    ),
    case(
        "receive-long-reference",
        lambda w: w.sc.receive(w.p, w.a, 1, reference="R" * 129),
        InvalidInput,
    ),
    case(
        "receive-empty-key", lambda w: w.sc.receive(w.p, w.a, 1, idempotency_key=""), InvalidInput
    ),
    case(
        "receive-long-key",
        lambda w: w.sc.receive(w.p, w.a, 1, idempotency_key="k" * 201),
        InvalidInput,
    ),
    case(
        "adjust-reference-newline",
        lambda w: w.sc.adjust(w.p, w.a, 1, reason="x", reference="a\nb"),
        InvalidInput,
    ),
    case(
        "transfer-long-reference",
        lambda w: w.sc.transfer(w.p, w.a, w.b, 1, reference="R" * 129),
        InvalidInput,
    ),
    # set
    case("set-negative", lambda w: w.sc.set_stock(w.p, w.a, -1), InvalidInput),
    case("set-2^31", lambda w: w.sc.set_stock(w.p, w.a, BIG), InvalidInput),
    case("set-unknown-product", lambda w: w.sc.set_stock(NOPE, w.a, 1), ProductNotFound),
    case("set-unknown-warehouse", lambda w: w.sc.set_stock(w.p, NOPE, 1), WarehouseNotFound),
    case(
        "set-stale-version",
        lambda w: w.sc.set_stock(w.p, w.a, 1, expect_version=0),
        VersionConflict,
    ),
    case(
        "set-future-version",
        lambda w: w.sc.set_stock(w.p, w.a, 1, expect_version=2),
        VersionConflict,
    ),
    case(
        "set-stale-version-new-row",
        lambda w: w.sc.set_stock(w.p, w.b, 1, expect_version=1),
        VersionConflict,
    ),
    case(
        "set-negative-version",
        lambda w: w.sc.set_stock(w.p, w.a, 1, expect_version=-1),
        InvalidInput,
    ),
    case(
        "set-negative-threshold",
        lambda w: w.sc.set_stock(w.p, w.a, 1, low_stock_threshold=-1),
        InvalidInput,
    ),
    case("set-below-reserved", lambda w: w.sc.set_stock(w.p, w.r, 7), BelowReserved),
    # adjust
    case("adjust-zero", lambda w: w.sc.adjust(w.p, w.a, 0, reason="x"), InvalidInput),
    case("adjust-2^31", lambda w: w.sc.adjust(w.p, w.a, BIG, reason="x"), InvalidInput),
    case("adjust-minus-2^31", lambda w: w.sc.adjust(w.p, w.a, -BIG, reason="x"), InvalidInput),
    case("adjust-overflows-row", lambda w: w.sc.adjust(w.p, w.f, 6, reason="x"), InvalidInput),
    case("adjust-empty-reason", lambda w: w.sc.adjust(w.p, w.a, -1, reason=""), InvalidInput),
    case("adjust-blank-reason", lambda w: w.sc.adjust(w.p, w.a, -1, reason="  "), InvalidInput),
    case("adjust-no-reason", lambda w: w.sc.adjust(w.p, w.a, -1, reason=None), InvalidInput),
    case(
        "adjust-more-than-available",
        lambda w: w.sc.adjust(w.p, w.a, -11, reason="damage"),
        (BelowReserved, InsufficientStock),
    ),
    case("adjust-below-reserved", lambda w: w.sc.adjust(w.p, w.r, -3, reason="x"), BelowReserved),
    case(
        "adjust-unknown-product", lambda w: w.sc.adjust(NOPE, w.a, -1, reason="x"), ProductNotFound
    ),
    case(
        "adjust-up-unknown-product",
        lambda w: w.sc.adjust(NOPE, w.a, 1, reason="x"),
        ProductNotFound,
    ),
    case(
        "adjust-unknown-warehouse",
        lambda w: w.sc.adjust(w.p, NOPE, -1, reason="x"),
        WarehouseNotFound,
    ),
    case(
        "adjust-up-unknown-warehouse",
        lambda w: w.sc.adjust(w.p, NOPE, 1, reason="x"),
        WarehouseNotFound,
    ),
    case("adjust-missing-row", lambda w: w.sc.adjust(w.p, w.b, -1, reason="x"), InventoryNotFound),
    # transfer
    case("transfer-zero", lambda w: w.sc.transfer(w.p, w.a, w.b, 0), InvalidInput),
    case("transfer-negative", lambda w: w.sc.transfer(w.p, w.a, w.b, -4), InvalidInput),
    case("transfer-2^31", lambda w: w.sc.transfer(w.p, w.a, w.b, BIG), InvalidInput),
    case("transfer-same-warehouse", lambda w: w.sc.transfer(w.p, w.a, w.a, 1), InvalidInput),
    case(
        "transfer-more-than-available",
        lambda w: w.sc.transfer(w.p, w.a, w.b, 11),
        InsufficientStock,
    ),
    case(
        "transfer-more-than-sellable", lambda w: w.sc.transfer(w.p, w.r, w.a, 3), InsufficientStock
    ),
    case("transfer-overflows-target", lambda w: w.sc.transfer(w.p, w.a, w.f, 6), InvalidInput),
    case("transfer-unknown-product", lambda w: w.sc.transfer(NOPE, w.a, w.b, 1), ProductNotFound),
    case("transfer-unknown-source", lambda w: w.sc.transfer(w.p, NOPE, w.a, 1), WarehouseNotFound),
    case("transfer-unknown-target", lambda w: w.sc.transfer(w.p, w.a, NOPE, 1), WarehouseNotFound),
    case(
        "transfer-missing-source-row", lambda w: w.sc.transfer(w.p, w.b, w.a, 1), InventoryNotFound
    ),
    # catalog and reads
    case("add-existing-product", lambda w: w.sc.add_product(w.p), AlreadyExists),
    case("add-existing-warehouse", lambda w: w.sc.add_warehouse(w.a), AlreadyExists),
    case("add-product-long-name", lambda w: w.sc.add_product(new_id("P"), "n" * 201), InvalidInput),
    case(
        "add-warehouse-priority",
        lambda w: w.sc.add_warehouse(new_id("W"), priority=-1),
        InvalidInput,
    ),
    case("stock-unknown-product", lambda w: w.sc.stock(NOPE), ProductNotFound),
    case("stock-unknown-warehouse", lambda w: w.sc.stock(w.p, NOPE), WarehouseNotFound),
    case("stock-missing-row", lambda w: w.sc.stock(w.p, w.b), InventoryNotFound),
    case("history-unknown-product", lambda w: w.sc.history(NOPE), ProductNotFound),
    case("history-limit-zero", lambda w: w.sc.history(w.p, limit=0), InvalidInput),
]

BAD_IDS = {"colon": "a:b", "empty": "", "65-chars": "x" * 65, "space": " p", "newline": "p\n"}
ID_CALLS: dict[str, Callable[[World, str], Any]] = {
    "receive-product": lambda w, bad: w.sc.receive(bad, w.a, 1),
    "receive-warehouse": lambda w, bad: w.sc.receive(w.p, bad, 1),
    "set-warehouse": lambda w, bad: w.sc.set_stock(w.p, bad, 1),
    "adjust-product": lambda w, bad: w.sc.adjust(bad, w.a, 1, reason="x"),
    "transfer-from": lambda w, bad: w.sc.transfer(w.p, bad, w.a, 1),
    "transfer-to": lambda w, bad: w.sc.transfer(w.p, w.a, bad, 1),
    "add-product": lambda w, bad: w.sc.add_product(bad),
    "add-warehouse": lambda w, bad: w.sc.add_warehouse(bad),
    "stock": lambda w, bad: w.sc.stock(bad),
    "history-warehouse": lambda w, bad: w.sc.history(w.p, bad),
}
CASES += [
    case(f"malformed-id-{where}-{label}", lambda w, c=call, b=bad: c(w, b), InvalidInput)
    for where, call in ID_CALLS.items()
    for label, bad in BAD_IDS.items()
]


@pytest.mark.parametrize(("call", "expected"), CASES)
def test_refused_with_the_right_error_and_nothing_changed(
    w: World, call: Call, expected: Expected
) -> None:
    before = dbutil.snapshot(w.sc)
    with pytest.raises(StockctlError) as caught:
        call(w)
    allowed = expected if isinstance(expected, tuple) else (expected,)
    assert type(caught.value) in allowed, f"{type(caught.value).__name__}: {caught.value}"
    message = str(caught.value)
    assert message and "\n" not in message
    assert dbutil.snapshot(w.sc) == before


def test_the_world_itself_is_as_described(w: World) -> None:
    """Guards the cases above: they mean something only if the setup is what they assume."""
    assert dbutil.row(w.sc, w.p, w.b) is None
    a, r = dbutil.row(w.sc, w.p, w.a), dbutil.row(w.sc, w.p, w.r)
    assert a is not None and (a["quantity_available"], a["quantity_reserved"], a["version"]) == (
        10,
        0,
        1,
    )
    assert r is not None and (r["quantity_available"], r["quantity_reserved"]) == (10, 8)
    w.sc.receive(w.p, w.f, 5)  # exactly to the maximum is fine
    w.sc.add_product(new_id("P").ljust(64, "x"))  # 64 characters is the longest id
