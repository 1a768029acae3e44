"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index("ix_idempotency_keys_created", "idempotency_keys", ["created_at"], unique=False)
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("topic", sa.String(length=128), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_id")),
    )
    op.create_index("ix_outbox_subject", "outbox", ["subject", "id"], unique=False)
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["id"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "products",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_products")),
    )
    op.create_table(
        "stock_movements",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("product_id", sa.String(length=64), nullable=False),
        sa.Column("warehouse_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("delta_available", sa.Integer(), nullable=False),
        sa.Column("delta_reserved", sa.Integer(), nullable=False),
        sa.Column("quantity_available", sa.Integer(), nullable=False),
        sa.Column("quantity_reserved", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("reference", sa.String(length=128), nullable=True),
        sa.Column("reservation_id", sa.String(length=36), nullable=True),
        sa.Column("actor", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stock_movements")),
    )
    op.create_index(
        "ix_stock_movements_product_time",
        "stock_movements",
        ["product_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "warehouses",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("100"), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_warehouses")),
    )
    op.create_table(
        "inventory",
        sa.Column("product_id", sa.String(length=64), nullable=False),
        sa.Column("warehouse_id", sa.String(length=64), nullable=False),
        sa.Column("quantity_available", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("quantity_reserved", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "low_stock_threshold", sa.Integer(), server_default=sa.text("10"), nullable=False
        ),
        sa.Column("version", sa.BigInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("last_movement_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("low_stock_threshold >= 0", name=op.f("ck_inventory_threshold_nonneg")),
        sa.CheckConstraint(
            "quantity_reserved <= quantity_available",
            name=op.f("ck_inventory_reserved_le_available"),
        ),
        sa.CheckConstraint("quantity_reserved >= 0", name=op.f("ck_inventory_reserved_nonneg")),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_inventory_product_id_products")
        ),
        sa.ForeignKeyConstraint(
            ["warehouse_id"], ["warehouses.id"], name=op.f("fk_inventory_warehouse_id_warehouses")
        ),
        sa.PrimaryKeyConstraint("product_id", "warehouse_id", name=op.f("pk_inventory")),
    )
    op.create_index(
        "idx_inventory_last_movement",
        "inventory",
        [sa.literal_column("last_movement_at DESC")],
        unique=False,
        postgresql_where=sa.text("last_movement_at IS NOT NULL"),
        sqlite_where=sa.text("last_movement_at IS NOT NULL"),
    )
    op.create_index("ix_inventory_warehouse", "inventory", ["warehouse_id"], unique=False)
    op.create_table(
        "reservations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("product_id", sa.String(length=64), nullable=False),
        sa.Column("warehouse_id", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("order_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('ACTIVE', 'CONFIRMED', 'FULFILLED', 'RELEASED', 'EXPIRED')",
            name=op.f("ck_reservations_status_known"),
        ),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_reservations_quantity_pos")),
        sa.ForeignKeyConstraint(
            ["product_id", "warehouse_id"],
            ["inventory.product_id", "inventory.warehouse_id"],
            name=op.f("fk_reservations_product_id_inventory"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reservations")),
    )
    op.create_index(
        "ix_reservations_active_expiry",
        "reservations",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'ACTIVE'"),
        sqlite_where=sa.text("status = 'ACTIVE'"),
    )
    op.create_index("ix_reservations_order", "reservations", ["order_id"], unique=False)
    op.create_index(
        "ix_reservations_row_status",
        "reservations",
        ["product_id", "warehouse_id", "status"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_reservations_row_status", table_name="reservations")
    op.drop_index("ix_reservations_order", table_name="reservations")
    op.drop_index(
        "ix_reservations_active_expiry",
        table_name="reservations",
        postgresql_where=sa.text("status = 'ACTIVE'"),
        sqlite_where=sa.text("status = 'ACTIVE'"),
    )
    op.drop_table("reservations")
    op.drop_index("ix_inventory_warehouse", table_name="inventory")
    op.drop_index(
        "idx_inventory_last_movement",
        table_name="inventory",
        postgresql_where=sa.text("last_movement_at IS NOT NULL"),
        sqlite_where=sa.text("last_movement_at IS NOT NULL"),
    )
    op.drop_table("inventory")
    op.drop_table("warehouses")
    op.drop_index("ix_stock_movements_product_time", table_name="stock_movements")
    op.drop_table("stock_movements")
    op.drop_table("products")
    op.drop_index(
        "ix_outbox_unpublished",
        table_name="outbox",
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    )
    op.drop_index("ix_outbox_subject", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_idempotency_keys_created", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
