"""BlockIds: a process's reservation ids, one sequence block at a time, with no block wasted
when many threads run out together (the sequence is stood in for: no database here)."""

from __future__ import annotations

import threading
from typing import Any

from stockctl.store.ids import BlockIds
from stockctl.store.tables import RESERVATION_ID_BLOCK


class CountedBlocks(BlockIds):
    """Blocks from a counter, as nextval of a sequence INCREMENT BY the block size gives them;
    ``hold`` makes the first ``parties`` fetches wait for each other (threads that ran out
    together)."""

    def __init__(self, parties: int = 1) -> None:
        super().__init__(engine=None)  # type: ignore[arg-type]
        self.fetched = 0
        self.hold = threading.Barrier(parties) if parties > 1 else None
        self._count = threading.Lock()

    def _block(self, conn: Any) -> int:
        with self._count:
            start = 1 + self.fetched * RESERVATION_ID_BLOCK
            self.fetched += 1
        if self.hold is not None and self.fetched <= self.hold.parties:
            self.hold.wait(timeout=5)
        return start


def test_one_fetch_per_block_for_a_single_thread() -> None:
    ids = CountedBlocks()
    taken = [ids.take() for _ in range(3 * RESERVATION_ID_BLOCK)]
    assert taken == list(range(1, 3 * RESERVATION_ID_BLOCK + 1))
    assert ids.fetched == 3


def test_threads_running_out_together_keep_every_block_they_fetched() -> None:
    parties = 8
    ids = CountedBlocks(parties)
    got: list[int] = []
    lock = threading.Lock()

    def first() -> None:
        one = ids.take()
        with lock:
            got.append(one)

    threads = [threading.Thread(target=first) for _ in range(parties)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ids.fetched == parties  # each ran out and fetched once, together
    # the rest of those eight blocks is handed out before any further fetch
    got += [ids.take() for _ in range(parties * RESERVATION_ID_BLOCK - parties)]
    assert ids.fetched == parties
    assert sorted(got) == list(range(1, parties * RESERVATION_ID_BLOCK + 1))
    ids.take()
    assert ids.fetched == parties + 1
