"""``stockctl.checkout`` (the two-phase flow) over a recording fake warehouse, and the
``NoopWarehouse`` of degraded mode. Over a real server: tests/integration/test_client_serve.py;
over the local library: tests/integration/test_client_checkout_local.py."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import respx

import stockctl
from stockctl import errors
from stockctl.clients.order_flow import NoopWarehouse, WarehousePort
from stockctl.clients.warehouse import ClientOptions, WarehouseClient
from stockctl.core.lines import Line
from stockctl.core.model import Reservation, ReservationStatus
from tests.clientutil import BASE

S = ReservationStatus
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Fake:
    """A warehouse that records every call; ``fail`` maps an operation to the error it raises."""

    def __init__(self, fail: dict[str, BaseException] | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail = fail or {}
        self.held: dict[str, Reservation] = {}

    def _maybe_fail(self, op: str) -> None:
        if op in self.fail:
            raise self.fail[op]

    def checkout(
        self,
        lines: Sequence[Line],
        *,
        order_id: str | None = None,
        ttl: timedelta | None = None,
        allow_split: bool = False,
        idempotency_key: str | None = None,
    ) -> list[Reservation]:
        self.calls.append(("checkout", (list(lines), order_id, ttl, allow_split, idempotency_key)))
        self._maybe_fail("checkout")
        for x in lines:
            r = Reservation(
                random.randrange(1, 2**62),
                x.product_id,
                x.warehouse_id or "W-auto",
                x.quantity,
                S.ACTIVE,
                NOW,
                NOW + (ttl or timedelta(minutes=15)),
                NOW,
                order_id,
            )
            self.held[r.id] = r
        return list(self.held.values())

    def confirm(self, reservation_id: str) -> Reservation:
        self.calls.append(("confirm", reservation_id))
        self._maybe_fail("confirm")
        self.held[reservation_id] = replace(self.held[reservation_id], status=S.CONFIRMED)
        return self.held[reservation_id]

    def release(self, reservation_id: str, reason: str = "released") -> Reservation:
        self.calls.append(("release", (reservation_id, reason)))
        self._maybe_fail("release")
        self.held[reservation_id] = replace(self.held[reservation_id], status=S.RELEASED)
        return self.held[reservation_id]

    def ops(self) -> list[str]:
        return [op for op, _ in self.calls]


def test_fake_and_noop_satisfy_the_port() -> None:
    ports: list[WarehousePort] = [Fake(), NoopWarehouse()]
    assert len(ports) == 2


def test_happy_path_reserves_creates_then_confirms() -> None:
    fake = Fake()
    order: list[str] = []

    def create_order(held: list[Reservation]) -> str:
        order.append("created")
        assert fake.ops() == ["checkout"]  # nothing confirmed before the order exists
        assert {r.status for r in held} == {S.ACTIVE}
        return "O-1 written"

    result = stockctl.checkout(
        fake,
        [("P-1", "W-1", 2), Line("P-2", None, 1)],
        create_order,
        order_id="O-1",
        ttl=timedelta(seconds=90),
        allow_split=True,
    )
    assert result == "O-1 written" and order == ["created"]
    assert fake.ops() == ["checkout", "confirm", "confirm"]
    lines, order_id, ttl, split, key = fake.calls[0][1]
    assert lines == [Line("P-1", "W-1", 2), Line("P-2", None, 1)]
    assert (order_id, ttl, split, key) == ("O-1", timedelta(seconds=90), True, "checkout-O-1")
    assert {r.status for r in fake.held.values()} == {S.CONFIRMED}


def test_without_an_order_id_the_key_is_still_unique_per_checkout() -> None:
    fake = Fake()
    stockctl.checkout(fake, [("P-1", None, 1)], lambda held: None)
    stockctl.checkout(fake, [("P-1", None, 1)], lambda held: None)
    keys = [args[4] for op, args in fake.calls if op == "checkout"]
    assert len(set(keys)) == 2 and all(k.startswith("checkout-") for k in keys)


@pytest.mark.parametrize("boom", [ValueError("declined"), KeyboardInterrupt()])
def test_a_failing_create_order_releases_everything_and_reraises(boom: BaseException) -> None:
    fake = Fake()

    def create_order(held: list[Reservation]) -> None:
        raise boom

    with pytest.raises(type(boom)):
        stockctl.checkout(fake, [("P-1", "W-1", 2), ("P-2", "W-1", 1)], create_order)
    assert fake.ops() == ["checkout", "release", "release"]
    assert {args[1] for op, args in fake.calls if op == "release"} == {"checkout_rollback"}
    assert {r.status for r in fake.held.values()} == {S.RELEASED}


def test_a_failed_release_is_logged_and_the_order_error_wins(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "stockctl.checkout")
    fake = Fake({"release": errors.WarehouseUnavailable("warehouse API down")})

    def create_order(held: list[Reservation]) -> None:
        raise ValueError("declined")

    with pytest.raises(ValueError, match="declined"):
        stockctl.checkout(fake, [("P-1", "W-1", 2), ("P-2", "W-1", 1)], create_order)
    assert fake.ops() == ["checkout", "release", "release"]  # tried every one
    logged = [r for r in caplog.records if r.name == "stockctl.checkout"]
    assert len(logged) == 2 and all(r.levelno == logging.WARNING for r in logged)
    for record, r in zip(logged, fake.held.values(), strict=True):
        assert record.getMessage() == (
            f"release of reservation {r.id} failed (it will expire at "
            f"{r.expires_at.isoformat()}): warehouse API down"
        )


def test_a_failed_confirm_is_logged_and_the_order_stands(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "stockctl.checkout")
    fake = Fake({"confirm": errors.ReservationExpired("too late")})
    result = stockctl.checkout(fake, [("P-1", "W-1", 2), ("P-2", "W-1", 1)], lambda held: 42)
    assert result == 42
    assert fake.ops() == ["checkout", "confirm", "confirm"]  # best effort: each one tried
    assert [m.split(" failed")[0] for m in caplog.messages] == [
        f"confirm of reservation {r.id}" for r in fake.held.values()
    ]
    assert "release" not in fake.ops()


def test_a_refused_checkout_never_creates_the_order() -> None:
    fake = Fake({"checkout": errors.InsufficientStock("not enough P-1")})

    def create_order(held: list[Reservation]) -> None:
        raise AssertionError("not called")

    with pytest.raises(errors.InsufficientStock):
        stockctl.checkout(fake, [("P-1", "W-1", 99)], create_order)
    assert fake.ops() == ["checkout"]


def test_degraded_mode_is_off_by_default() -> None:
    """A down warehouse is an error, never a silent NoopWarehouse."""
    with respx.mock(base_url=BASE) as api:
        api.post("/v1/inventory/checkout").respond(503)
        with (
            WarehouseClient(ClientOptions(BASE, retries=0)) as client,
            pytest.raises(errors.WarehouseUnavailable),
        ):
            stockctl.checkout(client, [("P-1", "W-1", 1)], lambda held: "order")


def test_noop_warehouse_pretends_and_logs_every_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "stockctl.checkout")
    noop = stockctl.NoopWarehouse()
    held = noop.checkout(
        [Line("P-1", "W-1", 2), Line("P-2", None, 1)], order_id="O-9", ttl=timedelta(minutes=2)
    )
    assert [(r.product_id, r.warehouse_id, r.quantity) for r in held] == [
        ("P-1", "W-1", 2),
        ("P-2", "-", 1),
    ]
    assert {r.status for r in held} == {S.ACTIVE} and {r.order_id for r in held} == {"O-9"}
    assert all(r.expires_at - r.created_at == timedelta(minutes=2) for r in held)
    assert len({r.id for r in held}) == 2
    assert noop.checkout([Line("P-1", None, 1)])[0].expires_at - held[0].created_at >= timedelta(
        minutes=15
    )
    assert noop.confirm(held[0].id).status is S.CONFIRMED
    assert noop.confirm(held[0].id).id == held[0].id
    assert noop.release(held[1].id).status is S.RELEASED
    assert noop.sellable("P-anything") == 2**31 - 1
    assert len(caplog.records) == 5  # 2 checkouts, 2 confirms, 1 release: none silent
    assert caplog.messages[0] == "NoopWarehouse: checkout of 2 line(s) for order O-9 not held"
    assert all(m.startswith("NoopWarehouse: ") for m in caplog.messages)


def test_noop_warehouse_through_the_flow(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "stockctl.checkout")
    assert stockctl.checkout(NoopWarehouse(), [("P-1", None, 3)], lambda held: len(held)) == 1
    assert any("confirm" in m and "ignored" in m for m in caplog.messages)

    def create_order(held: list[Reservation]) -> None:
        raise RuntimeError("order failed")

    with pytest.raises(RuntimeError):
        stockctl.checkout(NoopWarehouse(), [("P-1", None, 3)], create_order)
    assert any("release" in m and "ignored" in m for m in caplog.messages)
