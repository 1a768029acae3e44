"""Waiting for new entries on many streams of a Redis Cluster.

Standalone Redis blocks one XREADGROUP over every topic. A cluster refuses that (the topics
hash to different slots: CROSSSLOT), and blocking on one stream at a time would leave an entry
on another one waiting out the timeout. So a consumer that found nothing waits here: one
thread per stream blocks on ``XREAD BLOCK ... STREAMS s <mark>`` (it consumes nothing: it only
says that something came) and the first entry on any stream wakes every waiting consumer,
which then reads all streams again, pipelined. A stream's mark is the id of its last entry as
the consumer's empty read saw it, so an entry that arrives between that read and the XREAD is
not missed: the XREAD returns it at once.

The threads start on the first wait and send nothing while no consumer waits: under load
(reads keep finding entries) this costs nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger("stockctl.redis")

# A watcher's XREAD blocks at most this long at a time (below the socket timeout), then
# looks again whether anyone still waits.
MAX_BLOCK_MS = 1000
ERROR_PAUSE_SECONDS = 0.2


def id_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a sortable pair ("1700000000000-3" -> (1700000000000, 3))."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class StreamWaiter:
    """Blocks callers of ``wait`` until one of the streams gets an entry past its mark."""

    def __init__(self, client: Any, streams: Sequence[str]) -> None:
        from redis.cluster import RedisCluster

        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.streams = list(streams)
        self._cond = threading.Condition()
        self._marks: dict[str, str] = dict.fromkeys(self.streams, "0-0")
        self._waiting = 0
        self._deadline = 0.0
        self._arms = 0  # how many waits began: a watcher that fired waits for the next one
        self._woken = 0  # how many times a watcher saw a new entry (or failed)
        self._fired: dict[str, int] = dict.fromkeys(self.streams, 0)  # stream -> _woken then
        self._threads: list[threading.Thread] = []
        self._closed = False

    @property
    def watchers(self) -> list[threading.Thread]:
        """The watcher threads started so far (one per stream, on the first wait)."""
        return list(self._threads)

    def wait(self, marks: Mapping[str, str], timeout: float) -> list[str]:
        """Wait up to ``timeout`` seconds for an entry after ``marks[stream]`` on any stream;
        the streams that got one (all of them if a watcher failed: the caller's next read
        finds out why), or none after the timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._closed:  # nothing watches any more: just wait
                self._cond.wait(timeout)
                return []
            self._start()
            for stream, mark in marks.items():
                # Everything up to the highest mark a read saw has been delivered: keep it.
                if stream in self._marks and id_key(mark) > id_key(self._marks[stream]):
                    self._marks[stream] = mark
            seen = self._woken
            self._arms += 1
            self._waiting += 1
            self._deadline = max(self._deadline, deadline)
            self._cond.notify_all()
            try:
                while self._woken == seen:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return []
                    self._cond.wait(left)
                return [s for s, n in self._fired.items() if n > seen]
            finally:
                self._waiting -= 1

    def _start(self) -> None:
        if self._threads:
            return
        for stream in self.streams:
            t = threading.Thread(
                target=self._watch, args=(stream,), name=f"stockctl-wait-{stream}", daemon=True
            )
            self._threads.append(t)
            t.start()

    def close(self) -> None:
        """Stop the threads (within one XREAD block); the client is not ours to close."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _watch(self, stream: str) -> None:
        """Block on the stream while someone waits. Having fired, wait for the next wait (its
        read has seen that entry, or its marks are older and the XREAD returns at once): the
        mark is only ever what a consumer's read saw, so no entry is stepped over."""
        fired = -1  # the wait it last fired for
        while True:
            with self._cond:
                while not self._closed and (
                    not self._waiting or time.monotonic() >= self._deadline or self._arms == fired
                ):
                    self._cond.wait()
                if self._closed:
                    return
                mark = self._marks[stream]
                block = min(MAX_BLOCK_MS, max(1, int((self._deadline - time.monotonic()) * 1000)))
            try:
                reply = self._xread(stream, mark, block)
            except Exception as exc:  # wake the consumers: their read meets it and reports it
                log.debug("waiting on %s failed: %s", stream, exc)
                fired = self._wake(self.streams)
                time.sleep(ERROR_PAUSE_SECONDS)
                continue
            if reply:
                fired = self._wake([stream])

    def _xread(self, stream: str, mark: str, block_ms: int) -> Any:
        args = ("XREAD", "COUNT", 1, "BLOCK", block_ms, "STREAMS", stream, mark)
        if not self.cluster:
            return self.client.execute_command(*args)
        # The node named: else redis-py asks one which keys an XREAD has (COMMAND GETKEYS).
        return self.client.execute_command(
            *args, target_nodes=self.client.get_node_from_key(stream)
        )

    def _wake(self, streams: Sequence[str]) -> int:
        """Wake every waiter, naming these streams; the wait this answered."""
        with self._cond:
            self._woken += 1
            for s in streams:
                self._fired[s] = self._woken
            self._cond.notify_all()
            return self._arms
