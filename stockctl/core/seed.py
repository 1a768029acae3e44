"""Demo data: products x warehouses with deterministic, varied stock levels."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from stockctl.core.model import Inventory, Movement, MovementKind, Product, Warehouse
from stockctl.core.ports import Store
from stockctl.errors import AlreadyExists, InvalidInput

MAX_PRODUCTS = 1_000_000
MAX_WAREHOUSES = 1_000
MAX_ROWS = 20_000_000


@dataclass(frozen=True)
class SeedPlan:
    products: int
    warehouses: int
    seed: int = 42

    def __post_init__(self) -> None:
        if not 1 <= self.products <= MAX_PRODUCTS:
            raise InvalidInput(f"--products must be between 1 and {MAX_PRODUCTS}")
        if not 1 <= self.warehouses <= MAX_WAREHOUSES:
            raise InvalidInput(f"--warehouses must be between 1 and {MAX_WAREHOUSES}")
        if self.rows > MAX_ROWS:
            raise InvalidInput(f"products x warehouses must be at most {MAX_ROWS}")

    @property
    def rows(self) -> int:
        return self.products * self.warehouses


def product_id(n: int) -> str:
    return f"P{n:06d}"


def warehouse_id(n: int) -> str:
    return f"WH{n:03d}"


def products(plan: SeedPlan, now: datetime) -> list[Product]:
    return [Product(product_id(i), f"Demo product {i}", now) for i in range(1, plan.products + 1)]


def warehouses(plan: SeedPlan, now: datetime) -> list[Warehouse]:
    return [
        Warehouse(
            warehouse_id(i), f"Demo warehouse {i}", priority=i * 10, active=True, created_at=now
        )
        for i in range(1, plan.warehouses + 1)
    ]


def inventory(plan: SeedPlan, now: datetime) -> Iterator[Inventory]:
    """Rows ordered by product; about 5% empty, 10% at low stock, the rest 20-500 units."""
    rng = random.Random(plan.seed)
    for p in range(1, plan.products + 1):
        for w in range(1, plan.warehouses + 1):
            roll = rng.random()
            if roll < 0.05:
                qty = 0
            elif roll < 0.15:
                qty = rng.randint(1, 10)
            else:
                qty = rng.randint(20, 500)
            yield Inventory(product_id(p), warehouse_id(w), qty, 0, 10, 1, now)


def movements(rows: Iterator[Inventory], actor: str) -> Iterator[Movement]:
    for r in rows:
        assert r.last_movement_at is not None
        yield Movement(
            product_id=r.product_id,
            warehouse_id=r.warehouse_id,
            kind=MovementKind.RECEIVE,
            delta_on_hand=r.on_hand,
            delta_reserved=0,
            on_hand=r.on_hand,
            reserved=0,
            version=1,
            created_at=r.last_movement_at,
            reason="seed",
            actor=actor,
        )


def load(store: Store, plan: SeedPlan, now: datetime, actor: str) -> None:
    """Load demo data into an empty database. No events: warm the cache after seeding."""
    if store.has_products():
        raise AlreadyExists("the database already has products: seed only loads an empty one")
    store.bulk_load(
        products(plan, now),
        warehouses(plan, now),
        inventory(plan, now),
        movements(inventory(plan, now), actor),
    )
