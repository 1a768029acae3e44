"""The order side's two-phase checkout, over the local library or the remote client.

Phase 1, atomic: reserve every line (all or nothing), then run the caller's ``create_order``
(which writes and commits the order in the caller's own transaction). If anything fails, every
reservation is released; a release that fails is logged and left to expire.
Phase 2, best effort: confirm each reservation; a failed confirm is logged, and the reservation
still expires safely if it never gets confirmed.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Protocol, TypeVar

from stockctl.core.lines import Line
from stockctl.core.model import Reservation, ReservationStatus, utcnow
from stockctl.core.operations import LineLike, as_lines
from stockctl.errors import InvalidTransition, StockctlError

log = logging.getLogger("stockctl.checkout")
MAX_ATTEMPTS = 100  # checkouts of one order id whose holds were released
T = TypeVar("T")


class WarehousePort(Protocol):
    """What a checkout needs: ``stockctl.connect()`` and ``WarehouseClient`` both provide it."""

    def checkout(
        self,
        lines: Sequence[Line],
        *,
        order_id: str | None = None,
        ttl: timedelta | None = None,
        allow_split: bool = False,
        idempotency_key: str | None = None,
    ) -> list[Reservation]: ...

    def confirm(self, reservation_id: int) -> Reservation: ...

    def release(self, reservation_id: int, reason: str = "released") -> Reservation: ...


def checkout(
    warehouse: WarehousePort,
    lines: Sequence[LineLike],
    create_order: Callable[[list[Reservation]], T],
    *,
    order_id: str | None = None,
    ttl: timedelta | None = None,
    allow_split: bool = False,
) -> T:
    """Reserve, create the order, confirm; release everything if the order is not created."""
    parsed = as_lines(lines)
    key = f"checkout-{order_id or uuid.uuid4()}"

    def reserve(idempotency_key: str) -> list[Reservation]:
        return warehouse.checkout(
            parsed,
            order_id=order_id,
            ttl=ttl,
            allow_split=allow_split,
            idempotency_key=idempotency_key,
        )

    # The key follows the order, so a retry after a crash gets the same holds, not more. An
    # attempt whose order was not created released its holds, and its replay says so: the
    # next key of the order (``-2``, ``-3``...) is tried, which holds afresh the first time
    # and replays those holds after that.
    held, attempt = reserve(key), 1
    while any(not r.status.holds_stock for r in held):
        attempt += 1
        if attempt > MAX_ATTEMPTS:
            raise InvalidTransition(
                f"order {order_id}: {MAX_ATTEMPTS} checkouts of it were released; use a new "
                "order id"
            )
        held = reserve(f"{key}-{attempt}")
    try:
        result = create_order(held)
    except BaseException:
        _release_all(warehouse, held)
        raise
    for r in held:
        try:
            warehouse.confirm(r.id)
        except StockctlError as exc:
            log.warning(
                "confirm of reservation %s failed (it will expire at %s): %s",
                r.id,
                r.expires_at.isoformat(),
                exc,
            )
    return result


def _release_all(warehouse: WarehousePort, held: list[Reservation]) -> None:
    for r in held:
        try:
            warehouse.release(r.id, "checkout_rollback")
        except StockctlError as exc:
            log.warning(
                "release of reservation %s failed (it will expire at %s): %s",
                r.id,
                r.expires_at.isoformat(),
                exc,
            )


class NoopWarehouse:
    """Degraded mode (off by default, as in the guide): pretends every hold succeeds.

    Use it only when selling without a stock check is better than not selling at all; nothing
    is held, so overselling becomes possible. Every call is logged.
    """

    def checkout(
        self,
        lines: Sequence[Line],
        *,
        order_id: str | None = None,
        ttl: timedelta | None = None,
        allow_split: bool = False,
        idempotency_key: str | None = None,
    ) -> list[Reservation]:
        log.warning(
            "NoopWarehouse: checkout of %d line(s) for order %s not held", len(lines), order_id
        )
        now = utcnow()
        hold = ttl or timedelta(minutes=15)
        return [
            Reservation(
                id=next(_NOOP_IDS),
                product_id=x.product_id,
                warehouse_id=x.warehouse_id or "-",
                quantity=x.quantity,
                status=ReservationStatus.ACTIVE,
                created_at=now,
                expires_at=now + hold,
                updated_at=now,
                order_id=order_id,
            )
            for x in lines
        ]

    def confirm(self, reservation_id: int) -> Reservation:
        log.warning("NoopWarehouse: confirm %s ignored", reservation_id)
        return _noop(reservation_id, ReservationStatus.CONFIRMED)

    def release(self, reservation_id: int, reason: str = "released") -> Reservation:
        log.warning("NoopWarehouse: release %s ignored", reservation_id)
        return _noop(reservation_id, ReservationStatus.RELEASED)

    def check_stock(self, product_id: str, warehouse_id: str | None, quantity: int) -> None:
        """Degraded mode: every check passes."""

    def sellable(self, product_id: str, warehouse_id: str | None = None) -> int:
        return 2**31 - 1


# NoopWarehouse's made-up holds: ids from 2**62 up, far above any real reservation's.
_NOOP_IDS = itertools.count(2**62)


def _noop(reservation_id: int, status: ReservationStatus) -> Reservation:
    now = utcnow()
    return Reservation(reservation_id, "-", "-", 1, status, now, now, now)
