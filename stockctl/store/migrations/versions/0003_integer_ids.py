"""integer ids: inventory rows get a stable id, reservations the guide's int64 id

Existing reservations are numbered 1, 2, ... in the order they were made (created_at, then
the old UUID); the ledger's reservation_id and the stored answers of idempotent reserves and
checkouts follow them, so a retried request after the upgrade still replays its first answer.
Inventory rows are numbered in (product, warehouse) order. Events already in the outbox keep the
UUID they were published with.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BLOCK = 100  # stockctl.store.tables.RESERVATION_ID_BLOCK
RESERVATION_OPERATIONS = ("reserve", "checkout", "reserve_many")


def _renumber_answers(conn: Any, mapping: dict[str, int]) -> None:
    """Stored answers of reserve / checkout hold reservations: give them their new ids."""
    rows = conn.execute(
        sa.text("SELECT key, response FROM idempotency_keys WHERE response IS NOT NULL")
    ).all()
    for key, response in rows:
        try:
            data = json.loads(response)
        except ValueError:
            continue
        items = data if isinstance(data, list) else [data]
        changed = False
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"] in mapping:
                item["id"] = mapping[item["id"]]
                changed = True
        if changed:
            conn.execute(
                sa.text("UPDATE idempotency_keys SET response = :r WHERE key = :k"),
                {"r": json.dumps(data), "k": key},
            )


def upgrade() -> None:
    conn = op.get_bind()
    postgres = conn.dialect.name == "postgresql"

    # inventory.id
    # a plain ADD COLUMN: SQLite cannot rebuild a table that reservations reference
    op.add_column("inventory", sa.Column("id", sa.BigInteger(), nullable=True))
    keys = conn.execute(
        sa.text("SELECT product_id, warehouse_id FROM inventory ORDER BY product_id, warehouse_id")
    ).all()
    if keys:
        conn.execute(
            sa.text("UPDATE inventory SET id = :i WHERE product_id = :p AND warehouse_id = :w"),
            [{"i": n, "p": p, "w": w} for n, (p, w) in enumerate(keys, 1)],
        )
    op.create_index("uq_inventory_id", "inventory", ["id"], unique=True)
    if postgres:
        op.execute(f"CREATE SEQUENCE inventory_id_seq START WITH {len(keys) + 1}")
        op.execute("ALTER TABLE inventory ALTER COLUMN id SET DEFAULT nextval('inventory_id_seq')")
        op.execute("ALTER SEQUENCE inventory_id_seq OWNED BY inventory.id")

    # reservations.id: UUID text -> BIGINT, and the ledger's reference to it
    old = conn.execute(sa.text("SELECT id FROM reservations ORDER BY created_at, id")).all()
    mapping = {str(r[0]): n for n, r in enumerate(old, 1)}
    if mapping:  # in place, as text: a new id ("1") never equals an old UUID
        pairs = [{"n": str(n), "o": o} for o, n in mapping.items()]
        conn.execute(sa.text("UPDATE reservations SET id = :n WHERE id = :o"), pairs)
        conn.execute(
            sa.text("UPDATE stock_movements SET reservation_id = :n WHERE reservation_id = :o"),
            pairs,
        )
        _renumber_answers(conn, mapping)
    for table, column in (("reservations", "id"), ("stock_movements", "reservation_id")):
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                column,
                existing_type=sa.String(length=36),
                type_=sa.BigInteger(),
                postgresql_using=f"{column}::bigint",
            )
    if postgres:
        start = len(mapping) + 1
        op.execute(f"CREATE SEQUENCE reservation_id_blocks START WITH {start} INCREMENT BY {BLOCK}")


def downgrade() -> None:
    raise NotImplementedError("integer ids cannot be turned back into UUIDs")
