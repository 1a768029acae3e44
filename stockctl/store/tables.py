"""SQLAlchemy Core tables: the one schema both PostgreSQL and SQLite run.

The Alembic migrations in ``migrations/versions`` create exactly these; a test compares them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    Sequence,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# BIGINT on PostgreSQL, INTEGER (the rowid alias, so it autoincrements) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# Inventory row ids on PostgreSQL (SQLite: max + 1 inside the write transaction, which holds
# the database's one write lock). Reservation ids are handed out by the application in blocks
# (``stockctl.store.ids``): on PostgreSQL each nextval of this sequence is a block's first id.
INVENTORY_IDS = Sequence("inventory_id_seq", metadata=None)
RESERVATION_ID_BLOCK = 100
RESERVATION_BLOCKS = Sequence("reservation_id_blocks", increment=RESERVATION_ID_BLOCK)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on both backends (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


products = Table(
    "products",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

warehouses = Table(
    "warehouses",
    metadata,
    Column("id", String(64), primary_key=True),  # the warehouse code
    Column("name", String(200), nullable=False),
    Column("priority", Integer, nullable=False, server_default=text("100")),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", UTCDateTime(), nullable=False),
)

inventory = Table(
    "inventory",
    metadata,
    Column("product_id", String(64), ForeignKey("products.id"), primary_key=True),
    # The row's stable integer id; set on every insert (nullable only because SQLite cannot
    # add a NOT NULL column to a table other tables reference).
    Column("id", BigInteger, nullable=True),
    Column("warehouse_id", String(64), ForeignKey("warehouses.id"), primary_key=True),
    Column("quantity_available", Integer, nullable=False, server_default=text("0")),
    Column("quantity_reserved", Integer, nullable=False, server_default=text("0")),
    Column("low_stock_threshold", Integer, nullable=False, server_default=text("10")),
    Column("version", BigInteger, nullable=False, server_default=text("1")),
    Column("last_movement_at", UTCDateTime(), nullable=True),
    CheckConstraint("quantity_reserved >= 0", name="reserved_nonneg"),
    CheckConstraint("quantity_reserved <= quantity_available", name="reserved_le_available"),
    CheckConstraint("low_stock_threshold >= 0", name="threshold_nonneg"),
    Index("ix_inventory_warehouse", "warehouse_id"),
    Index("uq_inventory_id", "id", unique=True),
    Index(
        "idx_inventory_last_movement",
        text("last_movement_at DESC"),
        postgresql_where=text("last_movement_at IS NOT NULL"),
        sqlite_where=text("last_movement_at IS NOT NULL"),
    ),
)

reservations = Table(
    "reservations",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),  # the guide's int64 id
    Column("product_id", String(64), nullable=False),
    Column("warehouse_id", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("order_id", String(128), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    ForeignKeyConstraint(
        ["product_id", "warehouse_id"], ["inventory.product_id", "inventory.warehouse_id"]
    ),
    CheckConstraint("quantity > 0", name="quantity_pos"),
    CheckConstraint(
        "status IN ('ACTIVE', 'CONFIRMED', 'FULFILLED', 'RELEASED', 'EXPIRED')",
        name="status_known",
    ),
    Index("ix_reservations_row_status", "product_id", "warehouse_id", "status"),
    Index("ix_reservations_order", "order_id"),
    Index(
        "ix_reservations_active_expiry",
        "expires_at",
        postgresql_where=text("status = 'ACTIVE'"),
        sqlite_where=text("status = 'ACTIVE'"),
    ),
)

stock_movements = Table(
    "stock_movements",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("product_id", String(64), nullable=False),
    Column("warehouse_id", String(64), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("delta_available", Integer, nullable=False),
    Column("delta_reserved", Integer, nullable=False),
    Column("quantity_available", Integer, nullable=False),
    Column("quantity_reserved", Integer, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("reason", String(200), nullable=True),
    Column("reference", String(128), nullable=True),
    Column("reservation_id", BigInteger, nullable=True),
    Column("actor", String(128), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_stock_movements_product_time", "product_id", "created_at"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("topic", String(128), nullable=False),
    Column("subject", String(64), nullable=False),
    Column("payload", Text, nullable=False),  # the whole CloudEvent, JSON
    Column("created_at", UTCDateTime(), nullable=False),
    Column("published_at", UTCDateTime(), nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Index(
        "ix_outbox_unpublished",
        "id",
        postgresql_where=text("published_at IS NULL"),
        sqlite_where=text("published_at IS NULL"),
    ),
    Index("ix_outbox_subject", "subject", "id"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("operation", String(32), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("response", Text, nullable=True),  # JSON of the first result; NULL while in flight
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_idempotency_keys_created", "created_at"),
)

# The embedded stock cache (no Redis): the same keys and values, with an expiry per key.
cache_entries = Table(
    "cache_entries",
    metadata,
    Column("key", String(400), primary_key=True),
    Column("value", Text, nullable=False),
    Column("expires_at", UTCDateTime(), nullable=True),
    Index("ix_cache_entries_expires", "expires_at"),
)
