"""SQL for the outbox relay: claim unpublished rows without blocking other relays, mark them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from stockctl.core.ports import OutboxEntry
from stockctl.store.tables import outbox

OUTBOX_CHANNEL = "stockctl_outbox"  # NOTIFY at commit of a transaction that wrote events


class OutboxTx:
    """Outbox statements of a unit of work (mixed into ``SqlTx``)."""

    conn: Connection

    def take_outbox(self, limit: int, at: datetime) -> list[OutboxEntry]:
        """Claim up to ``limit`` unpublished rows and mark them published at ``at``, in one
        statement; returned in id order. The rows stay locked until the transaction ends, so a
        caller that fails to publish rolls back and the rows are unpublished again. Rows another
        relay holds are skipped (SKIP LOCKED), so relays never publish the same row twice in the
        normal path. Ids commit out of order, so the claim is by state (``published_at IS
        NULL``), never by "id above the last"."""
        claim = (
            select(outbox.c.id)
            .where(outbox.c.published_at.is_(None))
            .order_by(outbox.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(outbox)
            .where(outbox.c.id.in_(claim.scalar_subquery()))
            .values(published_at=at)
            .returning(
                outbox.c.id,
                outbox.c.event_id,
                outbox.c.topic,
                outbox.c.payload,
                outbox.c.created_at,
            )
        )
        rows = sorted(self.conn.execute(stmt), key=lambda r: r.id)
        return [OutboxEntry(r.id, r.event_id, r.topic, r.payload, r.created_at, at) for r in rows]

    def unpublish_outbox_since(self, since: datetime) -> int:
        return unpublish_since(self.conn, since)

    def count_failed_attempt(self, ids: list[int]) -> None:
        if ids:
            self.conn.execute(
                update(outbox).where(outbox.c.id.in_(ids)).values(attempts=outbox.c.attempts + 1)
            )


def backlog(conn: Connection) -> tuple[int, datetime | None]:
    """How many rows wait to be published, and when the oldest was written."""
    stmt = select(func.count(), func.min(outbox.c.created_at)).where(
        outbox.c.published_at.is_(None)
    )
    count, oldest = conn.execute(stmt).one()
    return int(count), oldest


def prune(conn: Connection, published_before: datetime, limit: int) -> int:
    """Delete published rows older than the retention period, at most ``limit`` at a time."""
    ids = (
        select(outbox.c.id)
        .where(outbox.c.published_at.is_not(None), outbox.c.published_at < published_before)
        .order_by(outbox.c.id)
        .limit(limit)
        .scalar_subquery()
    )
    return int(conn.execute(delete(outbox).where(outbox.c.id.in_(ids))).rowcount)


def unpublish_since(conn: Connection, published_since: datetime) -> int:
    """Mark rows published at or after ``published_since`` unpublished again, so the relay
    sends them once more (after a Redis failover lost what the old master had taken)."""
    stmt = (
        update(outbox)
        .where(outbox.c.published_at.is_not(None), outbox.c.published_at >= published_since)
        .values(published_at=None)
    )
    return int(conn.execute(stmt).rowcount)


def newest(conn: Connection, topics: Sequence[str], limit: int) -> list[OutboxEntry]:
    """The last ``limit`` rows of ``topics``, newest first."""
    stmt = select(outbox).where(outbox.c.topic.in_(topics)).order_by(outbox.c.id.desc())
    return [_entry(r) for r in conn.execute(stmt.limit(limit))]


def after(conn: Connection, topics: Sequence[str], after_id: int, limit: int) -> list[OutboxEntry]:
    """Up to ``limit`` rows of ``topics`` with an id above ``after_id``, in id order."""
    stmt = select(outbox).where(outbox.c.topic.in_(topics), outbox.c.id > after_id)
    return [_entry(r) for r in conn.execute(stmt.order_by(outbox.c.id).limit(limit))]


def _entry(r: Any) -> OutboxEntry:
    return OutboxEntry(r.id, r.event_id, r.topic, r.payload, r.created_at, r.published_at)
