"""Migration 0003 carries existing data over to integer ids: inventory rows are numbered in
(product, warehouse) order, reservations 1, 2, ... in the order they were made, and the ledger
and the stored answers of idempotent reserves follow, so a retry after the upgrade still
replays its first answer. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

import stockctl
from stockctl.library import Stockctl
from stockctl.store import migrate

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def old_schema_with_data(url: str) -> tuple[list[str], str]:
    """A database at revision 0002 (UUID reservations) holding two rows, three holds, their
    ledger lines and one stored reserve answer; returns the holds' UUIDs (oldest first) and
    the idempotency key."""
    engine = create_engine(url)
    migrate.upgrade(engine, "0002")  # the schema before integer ids
    ids = [str(uuid.uuid4()) for _ in range(3)]
    key = f"k-{uuid.uuid4().hex[:8]}"
    naive = url.startswith("sqlite")
    at = [(T0 + timedelta(minutes=i)).replace(tzinfo=None if naive else UTC) for i in range(3)]
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO products VALUES ('P-B', 'b', :t), ('P-A', 'a', :t)"), {"t": at[0]}
        )
        conn.execute(
            text(
                "INSERT INTO warehouses (id, name, priority, active, created_at) "
                "VALUES ('W', 'w', 1, true, :t)"
            ),
            {"t": at[0]},
        )
        for p in ("P-B", "P-A"):
            conn.execute(
                text(
                    "INSERT INTO inventory (product_id, warehouse_id, quantity_available, "
                    "quantity_reserved, low_stock_threshold, version) VALUES (:p, 'W', 10, 0, 1, 1)"
                ),
                {"p": p},
            )
        # made in the order ids[2], ids[0], ids[1]
        for rid, when in zip((ids[2], ids[0], ids[1]), at, strict=True):
            conn.execute(
                text(
                    "INSERT INTO reservations "
                    "VALUES (:id, 'P-A', 'W', 1, 'ACTIVE', NULL, :t, :e, :t)"
                ),
                {"id": rid, "t": when, "e": when + timedelta(hours=1)},
            )
            conn.execute(
                text(
                    "INSERT INTO stock_movements (product_id, warehouse_id, kind, delta_available, "
                    "delta_reserved, quantity_available, quantity_reserved, version, reason, "
                    "reservation_id, created_at) VALUES ('P-A', 'W', 'reserve', 0, 1, 10, 1, 2, "
                    "'reserved', :id, :t)"
                ),
                {"id": rid, "t": when},
            )
        answer = [{"id": ids[0], "product_id": "P-A", "warehouse_id": "W", "quantity": 1}]
        conn.execute(
            text("INSERT INTO idempotency_keys VALUES (:k, 'reserve', 'h', :r, :t)"),
            {"k": key, "r": json.dumps(answer), "t": at[0]},
        )
    engine.dispose()
    return [ids[2], ids[0], ids[1]], key


def check_upgraded(sc: Stockctl, url: str, key: str) -> None:
    assert [(r.product_id, r.id) for r in sc.stock("P-A").rows + sc.stock("P-B").rows] == [
        ("P-A", 1),
        ("P-B", 2),
    ]
    held = sorted(sc.list_reservations(product_id="P-A"), key=lambda r: r.created_at)
    assert [r.id for r in held] == [1, 2, 3]
    assert sorted(m.reservation_id for m in sc.history("P-A") if m.reservation_id) == [1, 2, 3]
    engine = create_engine(url)
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT response FROM idempotency_keys WHERE key = :k"), {"k": key}
        ).scalar_one()
    engine.dispose()
    assert json.loads(stored)[0]["id"] == 2  # ids[0] was made second
    assert sc.reserve("P-B", "W", 1).id > 3  # after every carried-over id
    sc.add_product("P-C")
    assert sc.receive("P-C", "W", 1).id == 3  # a new row after the numbered ones


def test_sqlite_upgrade_carries_the_data_over(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    _, key = old_schema_with_data(url)
    with stockctl.connect(url) as sc:
        sc.init()
        check_upgraded(sc, url, key)


def test_postgresql_upgrade_carries_the_data_over(pg_url: str) -> None:
    _, key = old_schema_with_data(pg_url)
    with stockctl.connect(pg_url) as sc:
        sc.init()
        check_upgraded(sc, pg_url, key)
