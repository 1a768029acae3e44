"""The embedded stock cache: ``stockctl.core.projection`` in a table of the database.

Same keys, values, version guard and de-duplication as the Redis cache. Operations run in
their own transaction, or in a caller's (``*_in``), as the embedded event pipeline does so that
projecting a batch and marking it delivered commit together.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite

from stockctl.core.cache_ports import ApplyResult
from stockctl.core.model import utcnow
from stockctl.core.projection import (
    PROCESSED_TTL_SECONDS,
    CacheKeys,
    ProductStock,
    RowState,
    StockLevel,
    StockUpdate,
    is_newer,
    merge,
    product_values,
)
from stockctl.store.sql import SqlStore
from stockctl.store.tables import cache_entries as ce


class SqlStockCache:
    def __init__(
        self,
        store: SqlStore,
        keys: CacheKeys | None = None,
        ttl_seconds: int = 300,
        clock: Callable[[], datetime] = utcnow,
        dedupe_ttl_seconds: int = PROCESSED_TTL_SECONDS,
        dedupe_markers: str = "unversioned",
    ) -> None:
        self.store = store
        self.keys = keys or CacheKeys()
        self.ttl = ttl_seconds
        self.clock = clock
        self.dedupe_ttl = dedupe_ttl_seconds
        # as on Redis: markers for stock events only with "all" (the version guard suffices)
        self.markers = dedupe_markers == "all"

    # -- the port, each call in its own transaction

    def apply(self, updates: Sequence[StockUpdate]) -> ApplyResult:
        with self.store.transaction() as tx:
            return self.apply_in(tx.conn, updates)

    def fill(self, products: Mapping[str, Sequence[RowState]]) -> None:
        with self.store.transaction() as tx:
            self.fill_in(tx.conn, products)

    def claim_events(self, event_ids: Sequence[str]) -> list[bool]:
        with self.store.transaction() as tx:
            return self.claim_events_in(tx.conn, event_ids)

    def processed(self, event_ids: Sequence[str]) -> list[bool]:
        keys = [self.keys.processed(e) for e in event_ids]
        with self.store.read() as conn:
            live = {
                r.key
                for r in conn.execute(
                    select(ce.c.key).where(ce.c.key.in_(keys), _live(self.clock()))
                )
            }
        return [k in live for k in keys]

    def heartbeat(self, name: str, payload: str, ttl_seconds: int) -> None:
        with self.store.transaction() as tx:
            self._upsert(
                tx.conn, {_beat(name): payload}, self.clock() + timedelta(seconds=ttl_seconds)
            )

    def heartbeats(self, prefix: str) -> dict[str, str]:
        stmt = select(ce.c.key, ce.c.value).where(
            ce.c.key.startswith(_beat(prefix), autoescape=True), _live(self.clock())
        )
        with self.store.read() as conn:
            return {r.key[len(_beat("")) :]: r.value for r in conn.execute(stmt)}

    def get_products(self, product_ids: Sequence[str]) -> dict[str, ProductStock | None]:
        with self.store.read() as conn:
            held = self._rows(conn, product_ids)
        return {
            p: ProductStock(p, tuple(sorted(held[p][0].values(), key=lambda r: r.warehouse_id)))
            if p in held
            else None
            for p in product_ids
        }

    def get_levels(self, product_ids: Sequence[str]) -> dict[str, StockLevel | None]:
        keys = [self.keys.product(p) for p in product_ids]
        found = dict(zip(keys, self.get_keys(keys), strict=True))
        out: dict[str, StockLevel | None] = {}
        for p, key in zip(product_ids, keys, strict=True):
            raw = found[key]
            try:
                out[p] = None if raw is None else StockLevel.from_detail(p, json.loads(raw))
            except ValueError:
                out[p] = None
        return out

    def count_reads(self, hits: int, misses: int) -> None:
        if not hits and not misses:
            return
        names = {self._meta("reads:hits"): hits, self._meta("reads:misses"): misses}
        with self.store.transaction() as tx:
            self._lock_writes(tx.conn, "reads")  # read-add-write: take turns, lose no count
            held = {
                r.key: int(r.value)
                for r in tx.conn.execute(select(ce.c.key, ce.c.value).where(ce.c.key.in_(names)))
            }
            self._upsert(tx.conn, {k: str(held.get(k, 0) + n) for k, n in names.items()}, None)

    def get_keys(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        with self.store.read() as conn:
            found = {
                r.key: r.value
                for r in conn.execute(
                    select(ce.c.key, ce.c.value).where(ce.c.key.in_(keys), _live(self.clock()))
                )
            }
        return [found.get(k) for k in keys]

    def inspect(self, keys: Sequence[str]) -> list[tuple[str | None, int | None]]:
        now = self.clock()
        with self.store.read() as conn:
            found = {
                r.key: r for r in conn.execute(select(ce).where(ce.c.key.in_(keys), _live(now)))
            }
        out: list[tuple[str | None, int | None]] = []
        for k in keys:
            r = found.get(k)
            if r is None:
                out.append((None, None))
            else:
                ttl = int((r.expires_at - now).total_seconds()) if r.expires_at else None
                out.append((r.value, ttl))
        return out

    def evict(self, product_ids: Sequence[str], warehouses: Mapping[str, Sequence[str]]) -> int:
        held = self._rows_any(product_ids)
        keys = [
            k
            for p in product_ids
            for k in (
                *self.keys.product_keys(p),
                *(self.keys.warehouse(p, w) for w in {*warehouses.get(p, ()), *held.get(p, ())}),
            )
        ]
        with self.store.transaction() as tx:
            return int(tx.conn.execute(delete(ce).where(ce.c.key.in_(keys))).rowcount)

    def _rows_any(self, product_ids: Sequence[str]) -> dict[str, list[str]]:
        """Warehouses named in each product's rows entry, expired or not."""
        by_key = {self.keys.rows(p): p for p in product_ids}
        with self.store.read() as conn:
            rows = conn.execute(select(ce.c.key, ce.c.value).where(ce.c.key.in_(by_key)))
            return {by_key[r.key]: list(json.loads(r.value)) for r in rows}

    def clear(self) -> int:
        prefixes = (f"{self.keys.prefix}:stock:", f"{self.keys.prefix}:product:")
        with self.store.transaction() as tx:
            return sum(
                int(
                    tx.conn.execute(
                        delete(ce).where(ce.c.key.startswith(p, autoescape=True))
                    ).rowcount
                )
                for p in prefixes
            )

    def stats(self) -> dict[str, object]:
        from sqlalchemy import func

        with self.store.read() as conn:
            keys = int(
                conn.execute(
                    select(func.count()).select_from(ce).where(_live(self.clock()))
                ).scalar_one()
            )
        hits, misses = (
            int(v or 0)
            for v in self.get_keys([self._meta("reads:hits"), self._meta("reads:misses")])
        )
        return {
            "backend": "embedded (database table)",
            "keys": keys,
            "stock_reads_hits": hits,
            "stock_reads_misses": misses,
            "stock_hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
        }

    def get_meta(self, name: str) -> str | None:
        return self.get_keys([self._meta(name)])[0]

    def set_meta(self, name: str, value: str) -> None:
        with self.store.transaction() as tx:
            self._upsert(tx.conn, {self._meta(name): value}, None)

    def _meta(self, name: str) -> str:
        return f"stockctl:{self.keys.prefix}:{name}"

    def ping(self) -> None:
        self.store.ping()

    def close(self) -> None:
        """The store is closed by its owner."""

    # -- in a caller's transaction

    def apply_in(self, conn: Connection, updates: Sequence[StockUpdate]) -> ApplyResult:
        if not updates:
            return ApplyResult(0, 0, 0, ())
        self._lock_writes(conn)
        if self.markers:
            fresh = self.claim_events_in(conn, [u.event_id for u in updates])
            new = [u for u, ok in zip(updates, fresh, strict=True) if ok]
        else:
            new = list(updates)
        held = self._rows(conn, sorted({u.product_id for u in new}))
        incomplete: dict[str, None] = {}
        applied = stale = 0
        merged: dict[str, dict[str, RowState]] = {}
        changed: set[str] = set()
        for u in new:  # one by one, as the Redis script counts: each is guarded on arrival
            if u.product_id not in held:
                incomplete[u.product_id] = None
                continue
            rows = merged.setdefault(u.product_id, held[u.product_id][0])
            if is_newer(u.row, rows.get(u.row.warehouse_id)):
                rows[u.row.warehouse_id] = u.row
                changed.add(u.product_id)
                applied += 1
            else:
                stale += 1
        # As on Redis: a change keeps the product's deadline until less than half the TTL is
        # left, then gives it a fresh one.
        now, half = self.clock(), timedelta(seconds=self.ttl / 2)
        self._write_products(
            conn,
            {p: merged[p] for p in changed},
            {
                p: d
                for p in changed
                if (d := held[p][1]) is not None and (self.ttl <= 0 or d - now >= half)
            },
        )
        return ApplyResult(applied, len(updates) - len(new), stale, tuple(incomplete))

    def fill_in(self, conn: Connection, products: Mapping[str, Sequence[RowState]]) -> None:
        if not products:
            return
        self._lock_writes(conn)
        held = self._rows(conn, list(products))
        self._write_products(
            conn, {p: merge(held[p][0] if p in held else {}, rows) for p, rows in products.items()}
        )

    def claim_events_in(self, conn: Connection, event_ids: Sequence[str]) -> list[bool]:
        now = self.clock()
        keys = [self.keys.processed(e) for e in event_ids]
        live = {r.key for r in conn.execute(select(ce.c.key).where(ce.c.key.in_(keys), _live(now)))}
        out, new = [], {}
        for key in keys:
            ok = key not in live and key not in new
            out.append(ok)
            if ok:
                new[key] = "1"
        self._upsert(conn, new, now + timedelta(seconds=self.dedupe_ttl))
        return out

    # -- helpers

    def _lock_writes(self, conn: Connection, what: str = "rows") -> None:
        """Make the version guard's read-merge-write atomic on PostgreSQL.

        A write reads the products' held rows, merges through the guard and upserts the result;
        under READ COMMITTED two such transactions interleave, and the later upsert overwrites
        what the other committed in between (a warm holding version 4 over the event's 5). A
        transaction-scoped advisory lock per key prefix makes cache writes take turns, as they do
        on SQLite, where every write transaction starts with BEGIN IMMEDIATE. One lock, not one
        per product: a warm batch of 10,000 products would not fit the server's lock table.
        """
        if conn.dialect.name == "postgresql":
            conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"),
                {"name": f"stockctl:cache:{self.keys.prefix}:{what}"},
            )

    def _rows(
        self, conn: Connection, product_ids: Sequence[str]
    ) -> dict[str, tuple[dict[str, RowState], datetime | None]]:
        """Each cached product's rows and the deadline of its keys."""
        if not product_ids:
            return {}
        by_key = {self.keys.rows(p): p for p in product_ids}
        stmt = select(ce.c.key, ce.c.value, ce.c.expires_at).where(
            ce.c.key.in_(by_key), _live(self.clock())
        )
        out: dict[str, tuple[dict[str, RowState], datetime | None]] = {}
        for r in conn.execute(stmt):
            encoded: dict[str, str] = json.loads(r.value)
            rows = {w: RowState.decode(w, v) for w, v in encoded.items()}
            out[by_key[r.key]] = (rows, r.expires_at)
        return out

    def _write_products(
        self,
        conn: Connection,
        products: Mapping[str, dict[str, RowState]],
        deadlines: Mapping[str, datetime | None] | None = None,
    ) -> None:
        """Every key of each product, expiring together: at its deadline when given (a change
        keeps it), else a fresh TTL (a fill, a renewal, or a product that had no deadline)."""
        fresh = self.clock() + timedelta(seconds=self.ttl) if self.ttl > 0 else None
        groups: dict[datetime | None, dict[str, str]] = {}
        for product_id, rows in products.items():
            ordered = tuple(sorted(rows.values(), key=lambda r: r.warehouse_id))
            deadline = (deadlines or {}).get(product_id) or fresh
            values = groups.setdefault(deadline, {})
            values.update(product_values(self.keys, ProductStock(product_id, ordered)))
            values[self.keys.rows(product_id)] = json.dumps(
                {r.warehouse_id: r.encode() for r in ordered}, separators=(",", ":")
            )
        for deadline, values in groups.items():
            self._upsert(conn, values, deadline)

    def _upsert(
        self, conn: Connection, values: Mapping[str, str], expires: datetime | None
    ) -> None:
        if not values:
            return
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt: Any = insert(ce)
        stmt = stmt.on_conflict_do_update(
            index_elements=[ce.c.key],
            set_={"value": stmt.excluded.value, "expires_at": stmt.excluded.expires_at},
        )
        conn.execute(
            stmt, [{"key": k, "value": v, "expires_at": expires} for k, v in sorted(values.items())]
        )

    def get(self, key: str) -> str | None:
        """One key, as a plain GET would read it."""
        with self.store.read() as conn:
            row = conn.execute(
                select(ce.c.value).where(ce.c.key == key, _live(self.clock()))
            ).first()
        return row.value if row else None

    def purge_expired(self) -> int:
        with self.store.transaction() as tx:
            stmt = delete(ce).where(ce.c.expires_at.is_not(None), ce.c.expires_at <= self.clock())
            return int(tx.conn.execute(stmt).rowcount)


def _beat(name: str) -> str:
    return f"stockctl:heartbeat:{name}"


def _live(now: datetime) -> Any:
    return or_(ce.c.expires_at.is_(None), ce.c.expires_at > now)
