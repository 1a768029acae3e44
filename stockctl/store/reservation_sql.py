"""SQL for reservations: row locks for the lifecycle, the sweeper's claim, reads, and the
one-statement reserve that PostgreSQL runs in a single round trip."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from stockctl.core.events import CloudEvent
from stockctl.core.model import Reservation, ReservationStatus, Warehouse
from stockctl.core.ports import ReservedDrift
from stockctl.store.tables import inventory, reservations, warehouses

ACTIVE = ReservationStatus.ACTIVE.value
HOLDING = (ReservationStatus.ACTIVE.value, ReservationStatus.CONFIRMED.value)


def reservation_from_row(r: Any) -> Reservation:
    return Reservation(
        id=r.id,
        product_id=r.product_id,
        warehouse_id=r.warehouse_id,
        quantity=r.quantity,
        status=ReservationStatus(r.status),
        order_id=r.order_id,
        created_at=r.created_at,
        expires_at=r.expires_at,
        updated_at=r.updated_at,
    )


class ReservationTx:
    """Reservation statements of a unit of work (mixed into ``SqlTx``)."""

    conn: Connection

    def product_warehouses(self, product_ids: list[str]) -> dict[str, list[Warehouse]]:
        """Active warehouses holding a row of each product, best priority first."""
        w, i = warehouses, inventory
        stmt = (
            select(i.c.product_id, w)
            .join(w, w.c.id == i.c.warehouse_id)
            .where(i.c.product_id.in_(product_ids), w.c.active.is_(True))
            .order_by(i.c.product_id, w.c.priority, w.c.id)
        )
        out: dict[str, list[Warehouse]] = {}
        for r in self.conn.execute(stmt):
            out.setdefault(r.product_id, []).append(
                Warehouse(r.id, r.name, r.priority, bool(r.active), r.created_at)
            )
        return out

    def lock_reservation(self, reservation_id: int) -> Reservation | None:
        stmt = select(reservations).where(reservations.c.id == reservation_id).with_for_update()
        r = self.conn.execute(stmt).first()
        return reservation_from_row(r) if r else None

    def lock_order_reservations(self, order_id: str) -> list[Reservation]:
        t = reservations
        stmt = (
            select(t)
            .where(t.c.order_id == order_id, t.c.status.in_(HOLDING))
            .order_by(t.c.id)
            .with_for_update()
        )
        return [reservation_from_row(r) for r in self.conn.execute(stmt)]

    def lock_overdue_for_row(
        self, product_id: str, warehouse_id: str, now: datetime
    ) -> list[Reservation]:
        t = reservations
        stmt = (
            select(t)
            .where(
                t.c.product_id == product_id,
                t.c.warehouse_id == warehouse_id,
                t.c.status == ACTIVE,
                t.c.expires_at <= now,
            )
            .order_by(t.c.id)
            .with_for_update(skip_locked=True)
        )
        return [reservation_from_row(r) for r in self.conn.execute(stmt)]

    def claim_due_reservations(self, now: datetime, limit: int) -> list[Reservation]:
        t = reservations
        stmt = (
            select(t)
            .where(t.c.status == ACTIVE, t.c.expires_at <= now)
            .order_by(t.c.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [reservation_from_row(r) for r in self.conn.execute(stmt)]

    def held_quantity(self, product_id: str, warehouse_id: str) -> int:
        t = reservations
        stmt = select(func.coalesce(func.sum(t.c.quantity), 0)).where(
            t.c.product_id == product_id,
            t.c.warehouse_id == warehouse_id,
            t.c.status.in_(HOLDING),
        )
        return int(self.conn.execute(stmt).scalar_one())

    def update_reservation(self, r: Reservation) -> None:
        self.conn.execute(
            update(reservations)
            .where(reservations.c.id == r.id)
            .values(status=r.status.value, expires_at=r.expires_at, updated_at=r.updated_at)
        )


def reserved_drift(conn: Connection, limit: int) -> list[ReservedDrift]:
    """Rows whose reserved counter differs from the sum of their ACTIVE/CONFIRMED holds."""
    t, i = reservations, inventory
    held = (
        select(t.c.product_id, t.c.warehouse_id, func.sum(t.c.quantity).label("held"))
        .where(t.c.status.in_(HOLDING))
        .group_by(t.c.product_id, t.c.warehouse_id)
        .subquery()
    )
    expected = func.coalesce(held.c.held, 0)
    stmt = (
        select(
            i.c.product_id,
            i.c.warehouse_id,
            i.c.quantity_available,
            i.c.quantity_reserved,
            expected.label("expected"),
        )
        .select_from(
            i.outerjoin(
                held,
                (held.c.product_id == i.c.product_id) & (held.c.warehouse_id == i.c.warehouse_id),
            )
        )
        .where(i.c.quantity_reserved != expected)
        .order_by(i.c.product_id, i.c.warehouse_id)
        .limit(limit)
    )
    return [ReservedDrift(*r) for r in conn.execute(stmt)]


# One statement, one round trip, autocommit: the conditional UPDATE guards the stock, and the
# reservation, ledger line and outbox events are inserted only if it matched. The envelopes are
# built by the core; SQL only fills in the row's quantities after the change.
_FAST_RESERVE = """
WITH upd AS (
    UPDATE inventory
       SET quantity_reserved = quantity_reserved + %(q)s,
           version = version + 1,
           last_movement_at = %(now)s
     WHERE product_id = %(p)s AND warehouse_id = %(w)s
       AND quantity_available - quantity_reserved >= %(q)s
    RETURNING quantity_available, quantity_reserved, low_stock_threshold, version
), r AS (
    SELECT upd.*, quantity_available - quantity_reserved AS sellable,
           jsonb_build_object(
               'quantity_available', quantity_available,
               'quantity_reserved', quantity_reserved,
               'sellable', quantity_available - quantity_reserved,
               'low_stock_threshold', low_stock_threshold,
               'version', version) AS fields
      FROM upd
), res AS (
    INSERT INTO reservations
        (id, product_id, warehouse_id, quantity, status, order_id, created_at, expires_at,
         updated_at)
    SELECT %(rid)s, %(p)s, %(w)s, %(q)s, 'ACTIVE', %(order)s, %(now)s, %(exp)s, %(now)s FROM r
), led AS (
    INSERT INTO stock_movements
        (product_id, warehouse_id, kind, delta_available, delta_reserved, quantity_available,
         quantity_reserved, version, reason, reference, reservation_id, actor, created_at)
    SELECT %(p)s, %(w)s, 'reserve', 0, %(q)s, quantity_available, quantity_reserved, version,
           'reserved', %(order)s, %(rid)s, %(actor)s, %(now)s FROM r
), ev AS (
    INSERT INTO outbox (event_id, topic, subject, payload, created_at)
    SELECT e.id, e.topic, %(p)s,
           jsonb_set(e.env, '{data}', (e.env -> 'data') || r.fields)::text, %(now)s
      FROM r CROSS JOIN LATERAL (VALUES
             (1, %(e1)s, %(t1)s, %(j1)s::jsonb),
             (2, %(e2)s, %(t2)s, %(j2)s::jsonb),
             (3, %(e3)s, %(t3)s, %(j3)s::jsonb)) AS e(n, id, topic, env)
     WHERE e.n = 1
        OR (e.n = 2 AND r.sellable <= 0 AND r.sellable + %(q)s > 0)
        OR (e.n = 3 AND r.sellable > 0 AND r.sellable <= r.low_stock_threshold
            AND r.low_stock_threshold < r.sellable + %(q)s)
     ORDER BY e.n
)
SELECT version, pg_notify('stockctl_outbox', '') FROM r
"""


def fast_reserve(
    engine: Engine,
    reservation: Reservation,
    actor: str,
    reserved: CloudEvent,
    out_of_stock: CloudEvent,
    low_stock: CloudEvent,
) -> bool:
    """Reserve in one autocommitted statement; False if the row is missing or short."""
    params = {
        "p": reservation.product_id,
        "w": reservation.warehouse_id,
        "q": reservation.quantity,
        "now": reservation.created_at,
        "exp": reservation.expires_at,
        "rid": reservation.id,
        "order": reservation.order_id,
        "actor": actor,
    }
    for n, e in enumerate((reserved, out_of_stock, low_stock), start=1):
        params[f"e{n}"] = e.id
        params[f"t{n}"] = e.type
        params[f"j{n}"] = e.to_json()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return conn.exec_driver_sql(_FAST_RESERVE, params).first() is not None
