"""SQL for the outbox relay: claim unpublished rows without blocking other relays, mark them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from stockctl.core.ports import OutboxEntry
from stockctl.store.tables import outbox


def entry_from_row(r: Any) -> OutboxEntry:
    return OutboxEntry(r.id, r.event_id, r.topic, r.payload, r.created_at, r.published_at)


class OutboxTx:
    """Outbox statements of a unit of work (mixed into ``SqlTx``)."""

    conn: Connection

    def claim_outbox(self, limit: int) -> list[OutboxEntry]:
        """Unpublished rows in id order, locked; rows another relay holds are skipped, so
        relays never publish the same row twice in the normal path. Ids commit out of order,
        so the claim is by state (``published_at IS NULL``), never by "id above the last"."""
        stmt = (
            select(outbox)
            .where(outbox.c.published_at.is_(None))
            .order_by(outbox.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [entry_from_row(r) for r in self.conn.execute(stmt)]

    def mark_published(self, ids: list[int], at: datetime) -> None:
        if ids:
            self.conn.execute(update(outbox).where(outbox.c.id.in_(ids)).values(published_at=at))

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
