"""What a reserve or checkout asks for: its lines (product, warehouse, quantity) and how long
a hold lasts, checked before anything is locked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from stockctl.core.context import Context
from stockctl.core.model import check_id, check_quantity
from stockctl.core.values import parse_whole
from stockctl.errors import InvalidInput

MAX_CHECKOUT_LINES = 1000


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a checkout: product, warehouse (None: the allocation strategy chooses),
    quantity, in the order every operation takes them."""

    product_id: str
    warehouse_id: str | None
    quantity: int

    @classmethod
    def parse(cls, spec: str) -> Line:
        """``PRODUCT:QTY`` or ``PRODUCT:WAREHOUSE:QTY``."""
        parts = spec.split(":")
        malformed = f"malformed item {spec!r}: use PRODUCT:QTY or PRODUCT:WAREHOUSE:QTY"
        if len(parts) not in (2, 3):
            raise InvalidInput(malformed)
        try:
            quantity = parse_whole(parts[-1], "quantity")
        except InvalidInput:
            raise InvalidInput(malformed) from None
        return cls(parts[0], parts[1] if len(parts) == 3 else None, quantity).checked()

    def checked(self) -> Line:
        check_id(self.product_id, "product")
        if self.warehouse_id is not None:
            check_id(self.warehouse_id, "warehouse")
        check_quantity(self.quantity)
        return self


def check_ttl(ctx: Context, ttl: timedelta | None) -> timedelta:
    if ttl is None:
        return ctx.reservation_ttl
    if not isinstance(ttl, timedelta) or ttl <= timedelta(0) or ttl > ctx.reservation_max_ttl:
        most = int(ctx.reservation_max_ttl.total_seconds())
        raise InvalidInput(f"ttl must be more than 0 s and at most {most} s")
    return ttl


def merge_lines(lines: Sequence[Line]) -> list[Line]:
    """Sum lines for the same (product, warehouse); keep first-seen order."""
    if not lines:
        raise InvalidInput("a checkout needs at least one item")
    if len(lines) > MAX_CHECKOUT_LINES:
        raise InvalidInput(f"a checkout takes at most {MAX_CHECKOUT_LINES} items")
    totals: dict[tuple[str, str | None], int] = {}
    for line in lines:
        line.checked()
        key = (line.product_id, line.warehouse_id)
        totals[key] = totals.get(key, 0) + line.quantity
    merged = [Line(p, w, q) for (p, w), q in totals.items()]
    for line in merged:
        check_quantity(line.quantity)
    return merged
