"""The domain: inventory rows, movements, reservations and the rules on them.

Pure standard library. Changes to a row are computed here as new immutable values; the store
only persists what the core decided.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum

from stockctl.core.values import MAX_QUANTITY as MAX_QUANTITY
from stockctl.core.values import check_delta as check_delta
from stockctl.core.values import check_id as check_id
from stockctl.core.values import check_quantity as check_quantity
from stockctl.core.values import check_reason as check_reason
from stockctl.errors import BelowReserved, InsufficientStock, InvalidInput, StockRuleViolation


def utcnow() -> datetime:
    return datetime.now(UTC)


class MovementKind(StrEnum):
    RECEIVE = "receive"
    SET = "set"
    ADJUST = "adjust"
    TRANSFER_OUT = "transfer_out"
    TRANSFER_IN = "transfer_in"
    RESERVE = "reserve"
    RELEASE = "release"
    EXPIRE = "expire"
    FULFIL = "fulfil"
    REPAIR = "repair"


class ReservationStatus(StrEnum):
    ACTIVE = "ACTIVE"
    CONFIRMED = "CONFIRMED"
    FULFILLED = "FULFILLED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"

    @property
    def holds_stock(self) -> bool:
        return self in (ReservationStatus.ACTIVE, ReservationStatus.CONFIRMED)


class StockStatus(StrEnum):
    IN_STOCK = "in_stock"
    LOW_STOCK = "low_stock"
    OUT_OF_STOCK = "out_of_stock"


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Warehouse:
    id: str
    name: str
    priority: int
    active: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Inventory:
    product_id: str
    warehouse_id: str
    on_hand: int  # units in the warehouse (the guide's quantity_available)
    reserved: int  # units held by ACTIVE and CONFIRMED reservations (quantity_reserved)
    low_stock_threshold: int
    version: int
    last_movement_at: datetime | None
    id: int | None = None  # the row's stable integer id (None until the row is stored)

    @property
    def sellable(self) -> int:
        return self.on_hand - self.reserved

    @property
    def status(self) -> StockStatus:
        return stock_status(self.sellable, self.low_stock_threshold)

    def with_quantities(
        self,
        on_hand: int,
        reserved: int,
        at: datetime,
        short: type[StockRuleViolation] = BelowReserved,
    ) -> Inventory:
        """The row after a change; enforces ``0 <= reserved <= on_hand <= MAX``.

        ``short`` is the refusal raised when on hand would fall below reserved: a plain
        ``BelowReserved`` for a count correction, ``InsufficientStock`` when units are taken.
        """
        where = f"{self.product_id}@{self.warehouse_id}"
        if on_hand > MAX_QUANTITY:
            raise InvalidInput(f"{where}: available would exceed {MAX_QUANTITY}")
        if reserved < 0:
            raise BelowReserved(f"{where}: reserved would go below 0")
        if on_hand < reserved:
            if on_hand < 0:
                short = InsufficientStock  # more units taken than there are
            raise short(
                f"{where}: needs {reserved - on_hand} more unit(s) "
                f"(available {self.on_hand}, reserved {self.reserved}, "
                f"sellable {self.sellable})",
                available=self.on_hand,
                reserved=self.reserved,
            )
        return replace(
            self,
            on_hand=on_hand,
            reserved=reserved,
            version=self.version + 1,
            last_movement_at=at,
        )


def stock_status(sellable: int, threshold: int) -> StockStatus:
    if sellable <= 0:
        return StockStatus.OUT_OF_STOCK
    if sellable <= threshold:
        return StockStatus.LOW_STOCK
    return StockStatus.IN_STOCK


@dataclass(frozen=True, slots=True)
class Movement:
    """One ledger line: what changed on a row, why, and who did it."""

    product_id: str
    warehouse_id: str
    kind: MovementKind
    delta_on_hand: int
    delta_reserved: int
    on_hand: int  # the row's on hand and reserved after the change
    reserved: int
    version: int
    created_at: datetime
    reason: str | None = None
    reference: str | None = None
    reservation_id: int | None = None
    actor: str | None = None
    id: int | None = None

    @classmethod
    def between(
        cls,
        before: Inventory,
        after: Inventory,
        kind: MovementKind,
        *,
        reason: str | None = None,
        reference: str | None = None,
        reservation_id: int | None = None,
        actor: str | None = None,
    ) -> Movement:
        assert after.last_movement_at is not None
        return cls(
            product_id=after.product_id,
            warehouse_id=after.warehouse_id,
            kind=kind,
            delta_on_hand=after.on_hand - before.on_hand,
            delta_reserved=after.reserved - before.reserved,
            on_hand=after.on_hand,
            reserved=after.reserved,
            version=after.version,
            created_at=after.last_movement_at,
            reason=reason,
            reference=reference,
            reservation_id=reservation_id,
            actor=actor,
        )


@dataclass(frozen=True, slots=True)
class Reservation:
    id: int
    product_id: str
    warehouse_id: str
    quantity: int
    status: ReservationStatus
    created_at: datetime
    expires_at: datetime
    updated_at: datetime
    order_id: str | None = None


@dataclass(slots=True)
class StockSummary:
    """A product across warehouses: the rows and their totals."""

    product_id: str
    rows: list[Inventory] = field(default_factory=list)

    @property
    def total_on_hand(self) -> int:
        return sum(r.on_hand for r in self.rows)

    @property
    def total_reserved(self) -> int:
        return sum(r.reserved for r in self.rows)

    @property
    def total_sellable(self) -> int:
        return sum(max(r.sellable, 0) for r in self.rows)
