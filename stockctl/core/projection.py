"""The catalog's stock cache: its keys, and how stock events project into it.

One definition, used by every cache adapter (Redis and the embedded table):

    catalog:stock:{p}:warehouse:{w}  sellable in that warehouse
    catalog:stock:{p}:total          sum of on hand over warehouses
    catalog:stock:{p}:available      sum of sellable over warehouses
    catalog:stock:{p}:status         in_stock | low_stock | out_of_stock
    catalog:stock:{p}:low_stock      1 | 0
    catalog:stock:{p}:rows           internal hash: warehouse -> "version:onhand:reserved:threshold"
                                     (on Redis also "#agg" -> the product's running totals)
    catalog:product:{p}              product detail with stock (JSON): product_id, total,
                                     available, status, warehouses {w: sellable}; what the
                                     read path (``get_stock``) serves
    catalog:event:processed:{id}     de-duplication marker (24 h)

A row's values are written only if the event's version is newer than the version held in
``rows``: a late, replayed or shuffled event never rolls the cache back. A product whose ``rows``
hash is absent (never cached, expired, flushed) is *incomplete*: its totals cannot be computed
from one event, so the processor loads the product's rows from the database and fills it.
The product status: out of stock when nothing is sellable, low stock when the sellable total is
at or below the highest threshold of its rows, otherwise in stock.

Expiry (TTL > 0): a product's keys live and expire together, at the deadline its last fill (warm,
read-through, sync, or the processor's load of an incomplete product) gave them. A change keeps
that deadline until less than half the TTL is left, then renews every key of the product: a
product that keeps changing stays cached, a quiet one expires whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from stockctl.core.envelope import Incoming, InvalidEvent
from stockctl.core.events import STOCK_EVENT_TYPES
from stockctl.core.model import Inventory, StockStatus, check_id
from stockctl.errors import StockctlError

PROCESSED_TTL_SECONDS = 86_400


# Not frozen: the processor builds one per event, and a frozen dataclass costs five times as
# much to build (0.8 against 0.16 us for five fields). Treat it as a value: never assign to it.
@dataclass(slots=True)
class RowState:
    """A warehouse row as the cache knows it."""

    warehouse_id: str
    version: int
    on_hand: int
    reserved: int
    threshold: int

    @property
    def sellable(self) -> int:
        return self.on_hand - self.reserved

    def encode(self) -> str:
        return f"{self.version}:{self.on_hand}:{self.reserved}:{self.threshold}"

    @classmethod
    def decode(cls, warehouse_id: str, text: str) -> RowState:
        version, on_hand, reserved, threshold = (int(x) for x in text.split(":"))
        return cls(warehouse_id, version, on_hand, reserved, threshold)

    @classmethod
    def of(cls, row: Inventory) -> RowState:
        return cls(
            row.warehouse_id,
            row.version,
            row.on_hand,
            row.reserved,
            row.low_stock_threshold,
        )


# Not frozen: the processor builds one per event, and a frozen dataclass costs five times as
# much to build (0.8 against 0.16 us for five fields). Treat it as a value: never assign to it.
@dataclass(slots=True)
class StockUpdate:
    """What a stock event says about one row after the change."""

    event_id: str
    product_id: str
    row: RowState


class StockLevel(NamedTuple):
    """What the catalog shows of a product: its totals, status and sellable units per
    warehouse, as ``catalog:product:{p}`` holds them. The read path serves these (a named
    tuple: built 1000 at a time per read, at half a frozen dataclass's cost)."""

    product_id: str
    on_hand: int  # the detail's "total"
    sellable: int  # the detail's "available"
    status: StockStatus
    warehouses: Mapping[str, int]

    @property
    def low_stock(self) -> bool:
        return self.status is StockStatus.LOW_STOCK

    @classmethod
    def from_detail(cls, product_id: str, detail: Any) -> StockLevel | None:
        """From a decoded product detail; None if it is not one of this product."""
        try:
            if detail["product_id"] != product_id:
                return None
            on_hand, sellable = detail["total"], detail["available"]
            warehouses, status = detail["warehouses"], _STATUSES[detail["status"]]
        except (KeyError, TypeError, IndexError):
            return None
        if type(on_hand) is not int or type(sellable) is not int or type(warehouses) is not dict:
            return None
        return cls(product_id, on_hand, sellable, status, warehouses)


_STATUSES = {s.value: s for s in StockStatus}


@dataclass(frozen=True, slots=True)
class ProductStock:
    """The derived values of a product, from all its rows."""

    product_id: str
    rows: tuple[RowState, ...]

    @property
    def on_hand(self) -> int:
        return sum(r.on_hand for r in self.rows)

    @property
    def sellable(self) -> int:
        return sum(max(r.sellable, 0) for r in self.rows)

    @property
    def status(self) -> StockStatus:
        if self.sellable <= 0:
            return StockStatus.OUT_OF_STOCK
        if self.sellable <= max((r.threshold for r in self.rows), default=0):
            return StockStatus.LOW_STOCK
        return StockStatus.IN_STOCK

    def level(self) -> StockLevel:
        return StockLevel(
            self.product_id,
            self.on_hand,
            self.sellable,
            self.status,
            {r.warehouse_id: max(r.sellable, 0) for r in self.rows},
        )

    def detail(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "total": self.on_hand,
            "available": self.sellable,
            "status": self.status.value,
            "warehouses": {r.warehouse_id: max(r.sellable, 0) for r in self.rows},
        }


class CacheKeys:
    """Key names; ``hash_tags`` wraps the product id in ``{}`` so a product's keys share a
    Redis Cluster slot."""

    def __init__(self, prefix: str = "catalog", hash_tags: bool = False) -> None:
        self.prefix = prefix
        self.hash_tags = hash_tags

    def _p(self, product_id: str) -> str:
        return f"{{{product_id}}}" if self.hash_tags else product_id

    def stock_base(self, product_id: str) -> str:
        return f"{self.prefix}:stock:{self._p(product_id)}"

    def warehouse(self, product_id: str, warehouse_id: str) -> str:
        return f"{self.stock_base(product_id)}:warehouse:{warehouse_id}"

    def total(self, product_id: str) -> str:
        return f"{self.stock_base(product_id)}:total"

    def available(self, product_id: str) -> str:
        return f"{self.stock_base(product_id)}:available"

    def status(self, product_id: str) -> str:
        return f"{self.stock_base(product_id)}:status"

    def low_stock(self, product_id: str) -> str:
        return f"{self.stock_base(product_id)}:low_stock"

    def rows(self, product_id: str) -> str:
        return f"{self.stock_base(product_id)}:rows"

    def product(self, product_id: str) -> str:
        return f"{self.prefix}:product:{self._p(product_id)}"

    def processed(self, event_id: str) -> str:
        return f"{self.prefix}:event:processed:{event_id}"

    def product_keys(self, product_id: str) -> list[str]:
        """Every fixed key of a product (warehouse keys are named by its rows)."""
        return [
            self.total(product_id),
            self.available(product_id),
            self.status(product_id),
            self.low_stock(product_id),
            self.rows(product_id),
            self.product(product_id),
        ]


def product_values(keys: CacheKeys, stock: ProductStock) -> dict[str, str]:
    """Every plain key of a product and its value, as the cache holds them."""
    pid = stock.product_id
    values = {keys.warehouse(pid, r.warehouse_id): str(max(r.sellable, 0)) for r in stock.rows}
    values[keys.total(pid)] = str(stock.on_hand)
    values[keys.available(pid)] = str(stock.sellable)
    values[keys.status(pid)] = stock.status.value
    values[keys.low_stock(pid)] = "1" if stock.status is StockStatus.LOW_STOCK else "0"
    values[keys.product(pid)] = json.dumps(stock.detail(), separators=(",", ":"))
    return values


def is_newer(update: RowState, held: RowState | None) -> bool:
    """The version guard: an update replaces the held row only if its version is newer."""
    return held is None or update.version > held.version


def merge(held: Mapping[str, RowState], updates: Iterable[RowState]) -> dict[str, RowState]:
    """Apply updates one by one through the version guard."""
    merged = dict(held)
    for u in updates:
        if is_newer(u, merged.get(u.warehouse_id)):
            merged[u.warehouse_id] = u
    return merged


_STOCK_TYPES = frozenset(STOCK_EVENT_TYPES)


def update_from_event(event: Incoming) -> StockUpdate | None:
    """The row state a stock event carries; None for other types; ``InvalidEvent`` if a stock
    event lacks what the cache needs."""
    if event.type not in _STOCK_TYPES:
        return None
    data = event.data
    if type(data) is not dict and not isinstance(data, Mapping):  # the ABC check is slow
        raise InvalidEvent(f"{event.type} without a data object")
    try:
        p, w = data["product_id"], data["warehouse_id"]
        v, a, r = data["version"], data["quantity_available"], data["quantity_reserved"]
        t = data.get("low_stock_threshold", 0)
        if (  # the usual event, checked inline (a call per field is a third of the cost)
            type(p) is str
            and p in _VALID_IDS
            and type(w) is str
            and w in _VALID_IDS
            and type(v) is int
            and type(a) is int
            and type(r) is int
            and type(t) is int
            and 0 <= v <= _MAX_INT
            and 0 <= a <= _MAX_INT
            and 0 <= r <= _MAX_INT
            and 0 <= t <= _MAX_INT
        ):
            return StockUpdate(event.id, p, RowState(w, v, a, r, t))
        product_id = _known_id(p, "product")
        row = RowState(_known_id(w, "warehouse"), _int(v), _int(a), _int(r), _int(t))
    except KeyError as exc:
        raise InvalidEvent(f"{event.type} data lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError, StockctlError) as exc:
        raise InvalidEvent(f"{event.type} data invalid: {exc}") from None
    return StockUpdate(event.id, product_id, row)


# Ids already seen valid (the processor checks two per event, and the same few thousand
# products and warehouses come back all day); bounded, so hostile input cannot grow it.
_VALID_IDS: set[str] = set()
_VALID_IDS_MAX = 200_000


def _known_id(value: Any, what: str) -> str:
    if type(value) is str and value in _VALID_IDS:
        return value
    checked = check_id(value, what)
    if len(_VALID_IDS) < _VALID_IDS_MAX:
        _VALID_IDS.add(checked)
    return checked


_MAX_INT = 9_007_199_254_740_992  # 2**53: what a JSON number holds exactly


def _int(value: Any) -> int:
    if type(value) is int and 0 <= value <= _MAX_INT:  # bool excluded
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**53:
        raise ValueError(f"{value!r} is not a non-negative whole number")
    return value
