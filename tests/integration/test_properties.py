"""Random sequences of receive / set / adjust / transfer / retry against the real store.

A plain dict models what the stock should be. After every sequence the database must agree with
the model, and every row must account for itself: ``0 <= reserved <= available``, versions
1..n with one ledger line each, the ledger summing to the row, and per change one primary event
plus exactly the threshold events its sellable crossing calls for. Refused operations and
retried ones (same idempotency key) must change nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockctl.core import events as ev
from stockctl.errors import InsufficientStock, InvalidInput, InventoryNotFound, StockRuleViolation
from stockctl.library import Stockctl
from tests import dbutil
from tests.conftest import new_id

THRESHOLD = 10  # the default low-stock threshold of a new row
WAREHOUSES = 3
PRIMARY = {
    "receive": ev.STOCK_UPDATED,
    "set": ev.STOCK_UPDATED,
    "adjust": ev.STOCK_ADJUSTED,
    "transfer_out": ev.STOCK_TRANSFERRED,
    "transfer_in": ev.STOCK_TRANSFERRED,
}

wh = st.integers(min_value=0, max_value=WAREHOUSES - 1)
operations = st.one_of(
    st.tuples(st.just("receive"), wh, st.integers(1, 40)),
    st.tuples(st.just("set"), wh, st.integers(0, 40)),
    st.tuples(st.just("adjust"), wh, st.integers(-30, 30).filter(bool)),
    st.tuples(st.just("transfer"), wh, wh, st.integers(1, 30)),
    st.tuples(st.just("retry")),
)


def expected_thresholds(was: int, now: int) -> list[str]:
    out = []
    if was > 0 >= now:
        out.append(ev.OUT_OF_STOCK)
    if was <= 0 < now:
        out.append(ev.BACK_IN_STOCK)
    if 0 < now <= THRESHOLD < was:
        out.append(ev.LOW_STOCK)
    return out


class Model:
    """What each warehouse should hold (None: no row yet), and what each call should do."""

    def __init__(self, sc: Stockctl, p: str, warehouses: list[str]) -> None:
        self.sc, self.p, self.ws = sc, p, warehouses
        self.stock: dict[str, int | None] = dict.fromkeys(warehouses)
        self.last: Callable[[], Any] | None = None

    def apply(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "retry":
            self.retry()
            return
        key = new_id("k")
        call, expected, change = getattr(self, f"plan_{kind}")(*op[1:], key=key)
        if expected is None:
            call()
            change()
            self.last = call
            return
        before = dbutil.snapshot(self.sc)
        try:
            call()
        except expected:
            assert dbutil.snapshot(self.sc) == before, f"refused {op} changed the database"
        else:
            raise AssertionError(f"{op} should have been refused with {expected}")

    def retry(self) -> None:
        if self.last is None:
            return
        before = dbutil.snapshot(self.sc)
        self.last()
        assert dbutil.snapshot(self.sc) == before, "a retried write changed the database"

    def plan_receive(self, i: int, q: int, *, key: str) -> Any:
        w = self.ws[i]

        def change() -> None:
            self.stock[w] = (self.stock[w] or 0) + q

        return lambda: self.sc.receive(self.p, w, q, idempotency_key=key), None, change

    def plan_set(self, i: int, q: int, *, key: str) -> Any:
        w = self.ws[i]
        return (
            lambda: self.sc.set_stock(self.p, w, q, idempotency_key=key),
            None,
            lambda: self.stock.__setitem__(w, q),
        )

    def plan_adjust(self, i: int, d: int, *, key: str) -> Any:
        w, have = self.ws[i], self.stock[self.ws[i]]
        call = lambda: self.sc.adjust(self.p, w, d, reason="prop", idempotency_key=key)  # noqa: E731
        if d < 0 and have is None:
            return call, InventoryNotFound, None
        if (have or 0) + d < 0:
            return call, StockRuleViolation, None
        return call, None, lambda: self.stock.__setitem__(w, (have or 0) + d)

    def plan_transfer(self, i: int, j: int, q: int, *, key: str) -> Any:
        a, b = self.ws[i], self.ws[j]
        call = lambda: self.sc.transfer(self.p, a, b, q, idempotency_key=key)  # noqa: E731
        if a == b:
            return call, InvalidInput, None
        have = self.stock[a]
        if have is None:
            return call, InventoryNotFound, None
        if have < q:
            return call, InsufficientStock, None

        def change() -> None:
            self.stock[a] = have - q
            self.stock[b] = (self.stock[b] or 0) + q

        return call, None, change


def assert_accounts_for_itself(m: Model) -> None:
    stored = {r["warehouse_id"]: r for r in dbutil.rows(m.sc, m.p)}
    assert {w: r["quantity_available"] for w, r in stored.items()} == {
        w: q for w, q in m.stock.items() if q is not None
    }
    moves = dbutil.ledger(m.sc, m.p)
    outbox = dbutil.outbox_events(m.sc, m.p)
    for w, row in stored.items():
        assert 0 <= row["quantity_reserved"] <= row["quantity_available"]
        mine = [x for x in moves if x["warehouse_id"] == w]
        assert [x["version"] for x in mine] == list(range(1, row["version"] + 1))
        assert sum(x["delta_available"] for x in mine) == row["quantity_available"]
        assert sum(x["delta_reserved"] for x in mine) == row["quantity_reserved"]
        expected: list[tuple[str, int]] = []
        for x in mine:
            now = x["quantity_available"] - x["quantity_reserved"]
            was = now - x["delta_available"] + x["delta_reserved"]
            topics = [PRIMARY[x["kind"]], *expected_thresholds(was, now)]
            expected += [(t, x["version"]) for t in topics]
        got = [
            (e["topic"], e["event"]["data"]["version"])
            for e in outbox
            if e["event"]["data"]["warehouse_id"] == w
        ]
        assert got == expected


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(operations, min_size=1, max_size=15))
def test_random_operations_keep_every_row_accounted_for(
    sc: Stockctl, ops: list[tuple[Any, ...]]
) -> None:
    # One database serves all examples of a run; each example gets its own product.
    p, warehouses = new_id("P"), [new_id("W") for _ in range(WAREHOUSES)]
    sc.add_product(p)
    for w in warehouses:
        sc.add_warehouse(w)
    model = Model(sc, p, warehouses)
    for op in ops:
        model.apply(op)
    assert_accounts_for_itself(model)
