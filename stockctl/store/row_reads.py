"""Single-row reads of one event-loop turn, read together: the stock checks that ``serve``
starts in the same turn of its event loop (at 32 connections, several at a time) become one
``SELECT ... WHERE (product_id, warehouse_id) IN (...)`` instead of one statement each. A
statement on an async connection costs the loop far more than a row does (the round trip's
awaits, the cursor, the result), and every read still sees a committed row: what a read
returns is what its own statement would have returned a moment earlier or later.

A read waits for nothing: the batch is sent once the turn that started it has run (the other
reads of that turn joined it meanwhile); a lone read goes alone, at once. A failure of the
statement is raised in every read of the batch. At most ``MAX_BATCH`` rows per statement.
"""

from __future__ import annotations

import asyncio
from typing import Any

from stockctl.store.fast_reads import AsyncFastReads
from stockctl.store.tables import inventory

MAX_BATCH = 64

Key = tuple[str, str]


class RowReads:
    def __init__(self, reads: AsyncFastReads) -> None:
        self.reads = reads
        self._pending: list[tuple[Key, asyncio.Future[Any]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.statements = 0  # sent so far (for tests and diagnosis)
        self._running: set[asyncio.Task[None]] = set()  # the loop holds tasks only weakly

    async def get(self, product_id: str, warehouse_id: str) -> Any | None:
        """The row (as ``AsyncFastReads`` returns rows), or None if there is none."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # futures belong to one loop
            self._loop, self._pending = loop, []
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(((product_id, warehouse_id), future))
        if len(self._pending) == 1:
            loop.call_soon(self._send)  # after the rest of this turn's reads have joined
        return await future

    def _send(self) -> None:
        batch, self._pending = self._pending, []
        for start in range(0, len(batch), MAX_BATCH):
            task = asyncio.ensure_future(self._read(batch[start : start + MAX_BATCH]))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _read(self, batch: list[tuple[Key, asyncio.Future[Any]]]) -> None:
        keys = list(dict.fromkeys(key for key, _ in batch))
        self.statements += 1
        try:
            if len(keys) == 1:
                where = "product_id = %s AND warehouse_id = %s"
            else:
                where = (
                    "(product_id, warehouse_id) IN (" + ", ".join(["(%s, %s)"] * len(keys)) + ")"
                )
            rows = await self.reads.select(inventory, where, [v for key in keys for v in key])
        except BaseException as exc:
            for _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):  # the loop is shutting down
                    future.cancel()
                else:
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        found = {(r.product_id, r.warehouse_id): r for r in rows}
        for key, future in batch:
            if not future.done():  # a read cancelled meanwhile has no one to tell
                future.set_result(found.get(key))
