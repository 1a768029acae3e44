"""RowReads: the single-row reads of one event-loop turn go as one statement (a stand-in for
the async connection's select: no database here)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from stockctl.store.row_reads import MAX_BATCH, RowReads


class Reads:
    """Answers a select from a dict of rows, recording each statement's parameters."""

    def __init__(self, rows: dict[tuple[str, str], int], fail: Exception | None = None) -> None:
        self.rows = rows
        self.fail = fail
        self.statements: list[list[str]] = []

    async def select(self, table: Any, where: str, params: list[str]) -> list[Any]:
        self.statements.append(list(params))
        await asyncio.sleep(0)  # a round trip: other reads may start meanwhile
        if self.fail is not None:
            raise self.fail
        keys = list(zip(params[0::2], params[1::2], strict=True))
        assert where.count("%s") == len(params)
        return [
            SimpleNamespace(product_id=p, warehouse_id=w, on_hand=self.rows[(p, w)])
            for p, w in keys
            if (p, w) in self.rows
        ]


def test_the_reads_of_one_turn_are_one_statement_and_each_gets_its_row() -> None:
    reads = Reads({("P1", "W1"): 5, ("P2", "W1"): 7})
    rows = RowReads(reads)  # type: ignore[arg-type]

    async def main() -> list[Any]:
        wanted = [("P1", "W1"), ("P2", "W1"), ("P3", "W1"), ("P1", "W1")]
        return await asyncio.gather(*(rows.get(p, w) for p, w in wanted))

    got = asyncio.run(main())
    assert [None if r is None else r.on_hand for r in got] == [5, 7, None, 5]
    assert reads.statements == [["P1", "W1", "P2", "W1", "P3", "W1"]]  # each key once


def test_a_lone_read_goes_at_once_and_later_turns_get_statements_of_their_own() -> None:
    reads = Reads({("P1", "W1"): 1})
    rows = RowReads(reads)  # type: ignore[arg-type]

    async def main() -> None:
        assert (await rows.get("P1", "W1")).on_hand == 1
        assert await rows.get("P9", "W1") is None

    asyncio.run(main())
    assert reads.statements == [["P1", "W1"], ["P9", "W1"]]


def test_a_big_turn_is_split_and_a_failure_reaches_every_read_of_its_statement() -> None:
    reads = Reads({(f"P{i}", "W"): i for i in range(MAX_BATCH + 5)})
    rows = RowReads(reads)  # type: ignore[arg-type]

    async def many() -> list[Any]:
        return await asyncio.gather(*(rows.get(f"P{i}", "W") for i in range(MAX_BATCH + 5)))

    assert [r.on_hand for r in asyncio.run(many())] == list(range(MAX_BATCH + 5))
    assert [len(s) // 2 for s in reads.statements] == [MAX_BATCH, 5]

    failing = RowReads(Reads({}, fail=RuntimeError("db down")))  # type: ignore[arg-type]

    async def broken() -> list[Any]:
        return await asyncio.gather(
            failing.get("P1", "W"), failing.get("P2", "W"), return_exceptions=True
        )

    assert [str(e) for e in asyncio.run(broken())] == ["db down", "db down"]


def test_a_cancelled_read_does_not_stop_the_others() -> None:
    reads = Reads({("P1", "W"): 1, ("P2", "W"): 2})
    rows = RowReads(reads)  # type: ignore[arg-type]

    async def main() -> Any:
        first = asyncio.ensure_future(rows.get("P1", "W"))
        second = asyncio.ensure_future(rows.get("P2", "W"))
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second

    assert asyncio.run(main()).on_hand == 2
