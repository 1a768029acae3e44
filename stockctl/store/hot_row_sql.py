"""Merged reserves of one hot (product, warehouse) row: one statement, one round trip.

The requests of a merge are walked in arrival order against the row's sellable units (a
recursive CTE over the row, locked first): each one that fits is taken, each one that does not
is refused, exactly as one-by-one reserves in that order would be. One conditional UPDATE then
adds the taken units and bumps the version once per taken request, and every taken request gets
its own reservation row, ledger row and outbox events carrying the row as it stood after that
request, as if it had run alone. The envelopes are built by the core; SQL fills in quantities.

When a request would be refused while the row has overdue ACTIVE holds, one-by-one reserving
would first expire them; the statement then changes nothing and says so, and the core runs the
merge one by one instead. A missing row gives no walk at all: the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Engine

from stockctl.core.ports import FastRequest

MERGED_RESERVE = """
WITH RECURSIVE req AS (
    SELECT t.n::int AS n, (x ->> 'q')::int AS q, (x ->> 'rid')::bigint AS rid,
           x ->> 'ord' AS ord, (x ->> 'at')::timestamptz AS at,
           (x ->> 'exp')::timestamptz AS exp,
           x -> 'j1' AS j1, x -> 'j2' AS j2, x -> 'j3' AS j3
      FROM jsonb_array_elements(%(reqs)s::jsonb) WITH ORDINALITY AS t(x, n)
), cur AS (
    SELECT quantity_available - quantity_reserved AS sellable
      FROM inventory
     WHERE product_id = %(p)s AND warehouse_id = %(w)s
       FOR UPDATE
), walk (n, left_, fits, k, taken) AS (  -- one step per request: qs[n] is its quantity
    SELECT 0, sellable, false, 0, 0 FROM cur
    UNION ALL
    SELECT s.n, CASE WHEN s.fits THEN w.left_ - s.q ELSE w.left_ END, s.fits,
           w.k + CASE WHEN s.fits THEN 1 ELSE 0 END,
           w.taken + CASE WHEN s.fits THEN s.q ELSE 0 END
      FROM walk w
     CROSS JOIN LATERAL (SELECT w.n + 1 AS n, (%(qs)s::int[])[w.n + 1] AS q,
                                (%(qs)s::int[])[w.n + 1] <= w.left_ AS fits) AS s
     WHERE w.n < cardinality(%(qs)s::int[])
), blocked AS (
    SELECT 1 AS yes
     WHERE EXISTS (SELECT 1 FROM walk WHERE n > 0 AND NOT fits)
       AND EXISTS (SELECT 1 FROM reservations
                    WHERE product_id = %(p)s AND warehouse_id = %(w)s
                      AND status = 'ACTIVE' AND expires_at <= %(latest)s)
), total AS (
    SELECT walk.k, walk.taken,
           (SELECT req.at FROM walk f JOIN req USING (n) WHERE f.fits ORDER BY n DESC LIMIT 1)
               AS at
      FROM walk ORDER BY n DESC LIMIT 1
), upd AS (
    UPDATE inventory
       SET quantity_reserved = quantity_reserved + total.taken,
           version = version + total.k,
           last_movement_at = total.at
      FROM total
     WHERE product_id = %(p)s AND warehouse_id = %(w)s
       AND total.k > 0
       AND NOT EXISTS (SELECT 1 FROM blocked)
       AND quantity_available - quantity_reserved >= total.taken
    RETURNING quantity_available AS a, quantity_reserved - total.taken AS r0,
              low_stock_threshold AS lim, version - total.k AS v0
), made AS (
    SELECT req.*, upd.a, upd.r0 + walk.taken AS r, upd.lim, upd.v0 + walk.k AS v,
           upd.a - upd.r0 - walk.taken AS sellable
      FROM upd CROSS JOIN walk JOIN req USING (n)
     WHERE walk.fits
), res AS (
    INSERT INTO reservations
        (id, product_id, warehouse_id, quantity, status, order_id, created_at, expires_at,
         updated_at)
    SELECT rid, %(p)s, %(w)s, q, 'ACTIVE', ord, at, exp, at FROM made ORDER BY n
), led AS (
    INSERT INTO stock_movements
        (product_id, warehouse_id, kind, delta_available, delta_reserved, quantity_available,
         quantity_reserved, version, reason, reference, reservation_id, actor, created_at)
    SELECT %(p)s, %(w)s, 'reserve', 0, q, a, r, v, 'reserved', ord, rid, %(actor)s, at
      FROM made ORDER BY n
), ev AS (
    INSERT INTO outbox (event_id, topic, subject, payload, created_at)
    SELECT e.env ->> 'id', e.topic, %(p)s,
           jsonb_set(e.env, '{data}', (e.env -> 'data') || jsonb_build_object(
               'quantity_available', made.a,
               'quantity_reserved', made.r,
               'sellable', made.sellable,
               'low_stock_threshold', made.lim,
               'version', made.v))::text,
           made.at
      FROM made CROSS JOIN LATERAL (VALUES
             (1, %(t1)s, made.j1),
             (2, %(t2)s, made.j2),
             (3, %(t3)s, made.j3)) AS e(k, topic, env)
     WHERE e.k = 1
        OR (e.k = 2 AND made.sellable <= 0 AND made.sellable + made.q > 0)
        OR (e.k = 3 AND made.sellable > 0 AND made.sellable <= made.lim
            AND made.lim < made.sellable + made.q)
     ORDER BY made.n, e.k
)
SELECT walk.n, walk.fits,
       walk.left_ + CASE WHEN walk.fits THEN req.q ELSE 0 END AS sellable,
       EXISTS (SELECT 1 FROM blocked) AS blocked,
       (SELECT count(*) FROM (SELECT pg_notify('stockctl_outbox', '') FROM upd) AS x) AS updated
  FROM walk JOIN req USING (n)
 ORDER BY walk.n
"""


def merged_reserve(
    engine: Engine, requests: Sequence[FastRequest], actor: str
) -> list[tuple[bool, int]] | None:
    """Run a merge in one autocommitted statement: per request (taken, sellable before it);
    None when nothing was done and the requests must run one by one (see the module's doc)."""
    first, *candidates = requests[0]
    types = [e.type for e in candidates]
    # every request in one JSON document (bound as one text, not arrays of escaped strings)
    reqs = [
        {
            "q": r.quantity,
            "rid": r.id,
            "ord": r.order_id,
            "at": r.created_at,
            "exp": r.expires_at,
            "j1": reserved.to_dict(),
            "j2": out.to_dict(),
            "j3": low.to_dict(),
        }
        for r, reserved, out, low in requests
    ]
    params: dict[str, Any] = {
        "p": first.product_id,
        "w": first.warehouse_id,
        "reqs": orjson.dumps(reqs).decode(),
        "qs": [r.quantity for r, *_ in requests],
        "latest": max(r.created_at for r, *_ in requests),
        "actor": actor,
        "t1": types[0],
        "t2": types[1],
        "t3": types[2],
    }
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        rows = conn.exec_driver_sql(MERGED_RESERVE, params).all()
    if len(rows) != len(requests) or rows[0].blocked:
        return None
    if any(r.fits for r in rows) and rows[0].updated != 1:
        return None  # the guard refused (cannot happen with the row locked): nothing was done
    return [(bool(r.fits), int(r.sellable)) for r in rows]
