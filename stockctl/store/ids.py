"""Reservation ids: the guide's int64, handed out by the application before the INSERT (the
reservation's events carry it, and PostgreSQL's one-statement reserve writes them together).

* PostgreSQL: blocks of ``RESERVATION_ID_BLOCK`` ids per process. Each ``nextval`` of the
  ``reservation_id_blocks`` sequence (INCREMENT BY the block size) is a fresh block's first
  id; a sequence is never rolled back, so no two processes ever hold the same block, and a
  block costs one round trip per hundred reservations. Ids grow per process, not globally.
* SQLite: inside the write transaction, which holds the database's only write lock
  (``BEGIN IMMEDIATE``): the largest id so far, plus one, counted on within the transaction.
"""

from __future__ import annotations

import threading

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from stockctl.store.tables import RESERVATION_BLOCKS, RESERVATION_ID_BLOCK, reservations


class BlockIds:
    """A process's reservation ids on PostgreSQL, one sequence block at a time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._next = 0
        self._end = 0  # exclusive
        self._spare: list[int] = []  # first ids of blocks fetched while another refilled

    def take(self, conn: Connection | None = None) -> int:
        while True:
            with self._lock:
                if self._next >= self._end and self._spare:
                    self._next = self._spare.pop()
                    self._end = self._next + RESERVATION_ID_BLOCK
                if self._next < self._end:
                    taken = self._next
                    self._next += 1
                    return taken
            # A new block is fetched outside the lock: without ``conn`` it waits for a pool
            # connection, and holding the lock meanwhile would stall every thread that has one
            # (a checkout's transaction asking for its id) until the pool timed out. Threads
            # that ran out together each fetch one; the blocks not used now are kept, so that
            # 64 threads running out at once fetch 64 blocks once, not 64 every 100 ids.
            start = self._block(conn)
            with self._lock:
                if self._next >= self._end:
                    self._next, self._end = start, start + RESERVATION_ID_BLOCK
                else:
                    self._spare.append(start)

    def _block(self, conn: Connection | None) -> int:
        stmt = select(RESERVATION_BLOCKS.next_value())
        if conn is not None:  # nextval is outside transactions: safe on the caller's connection
            return int(conn.execute(stmt).scalar_one())
        with self.engine.connect() as own:
            return int(own.execute(stmt).scalar_one())


class TxIds:
    """Ids of one SQLite write transaction: after the largest stored one."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._last: int | None = None

    def take(self) -> int:
        if self._last is None:
            self._last = int(self.conn.execute(select(func.max(reservations.c.id))).scalar() or 0)
        self._last += 1
        return self._last
