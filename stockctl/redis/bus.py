"""Redis Streams laid out as Dapr's pub/sub lays them out.

The stream key is the topic; each entry has field ``data`` holding the whole CloudEvent JSON
(and optionally ``metadata``, a JSON object of strings); a subscriber's consumer group is its
app id, created at ``0``. A Dapr sidecar and stockctl can therefore publish to and consume
from each other with no adapter.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.client import CaseInsensitiveDict
from redis.cluster import RedisCluster

from stockctl.core.ports import OutboxEntry
from stockctl.core.worker_ports import Delivery
from stockctl.errors import CacheUnavailable
from stockctl.redis.stream_base import (
    TRANSIENT,
    Client,
    _deliveries,
    _fields,
    _first_line,
    _guard,
    _nogroup,
    _text,
    is_cluster,
)
from stockctl.redis.stream_waiter import StreamWaiter

log = logging.getLogger("stockctl.events")


class StreamPublisher:
    """Publishes outbox rows: one pipelined round trip per batch."""

    def __init__(self, client: Client, maxlen: int = 0, target: str = "redis") -> None:
        self.client = client
        self.maxlen = maxlen or None
        self.target = target
        self._lineage_refused = False

    def publish(self, entries: Sequence[OutboxEntry]) -> None:
        if not entries:
            return
        pipe = self.client.pipeline(transaction=False)
        for e in entries:
            pipe.xadd(e.topic, {"data": e.payload}, maxlen=self.maxlen, approximate=True)
        _guard(pipe.execute, self.target)

    def lineage(self) -> frozenset[str]:
        """The replication ids of the masters the entries go to (``INFO replication``'s
        ``master_replid``). A failover (the promoted replica starts a new one) or a restart
        changes them; a reshard does not."""

        def read() -> frozenset[str]:
            if isinstance(self.client, RedisCluster):
                replies = self.client.info("replication", target_nodes=RedisCluster.PRIMARIES)
                infos = list(replies.values()) if "master_replid" not in replies else [replies]
            else:
                infos = [self.client.info("replication")]
            return frozenset(str(i.get("master_replid", "")) for i in infos)

        try:
            result: frozenset[str] = _guard(read, self.target)
        except redis.ResponseError as exc:  # INFO refused (renamed or ACL'd on a managed Redis)
            if not self._lineage_refused:
                log.warning("cannot watch for failovers (INFO refused: %s)", _first_line(exc))
                self._lineage_refused = True
            return frozenset()  # the same every time: nothing is sent again
        return result

    def publish_raw(self, topic: str, data: str, metadata: dict[str, str] | None = None) -> str:
        fields = {"data": data}
        if metadata:
            fields["metadata"] = json.dumps(metadata)
        return _text(_guard(lambda: self.client.xadd(topic, fields), self.target))  # type: ignore[arg-type]


class StreamGroup:
    """What the consumers of one group in one process share: putting the group back when Redis
    lost it (one warning per recovery however many threads notice), and, when they read stream
    by stream, the waiter that tells them new entries came."""

    QUIET_SECONDS = 1.0  # groups missing again this soon are the same recovery's: no 2nd line

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._told = float("-inf")
        self._waiter: StreamWaiter | None = None
        self.ready = False  # the groups were created (or found) once
        self.recoveries = 0

    def ensure(self, consumer: StreamConsumer) -> None:
        with self._lock:
            if not self.ready:
                consumer.ensure_groups()
                self.ready = True

    def recreate(self, consumer: StreamConsumer, exc: BaseException) -> None:
        """Create the missing groups; say so unless another thread just did (it found none
        missing) or this is the same recovery's tail (within ``QUIET_SECONDS``)."""
        with self._lock:
            made = consumer.ensure_groups()
            if not made or time.monotonic() - self._told < self.QUIET_SECONDS:
                return
            self._told = time.monotonic()
            self.recoveries += 1
        text = _first_line(exc)
        log.warning(
            "consumer group %s was missing on %s (Redis restarted empty, or failed over to a "
            "replica without it: %s); created it again from 0 on %d of %d topic(s): entries "
            "still on those streams are read again (a replay changes nothing)",
            consumer.group,
            consumer.target,
            text[max(text.find("NOGROUP"), text.find("UNBLOCKED"), 0) :][:160],
            made,
            len(consumer.topics),
        )

    def waiter(self, client: Any, topics: Sequence[str]) -> StreamWaiter:
        with self._lock:
            if self._waiter is None:
                self._waiter = StreamWaiter(client, topics)
            return self._waiter

    def close(self) -> None:
        with self._lock:
            if self._waiter is not None:
                self._waiter.close()


class StreamConsumer:
    """One consumer of a group over many topics, with pending recovery and a dead-letter stream.

    Standalone and sentinel: one XREADGROUP over all topics, blocking. Redis Cluster (the
    topics live in different slots): one XREADGROUP per topic, all pipelined (one round trip
    per node); when they find nothing, a ``StreamWaiter`` waits for the next entry on any topic.
    A lost group (NOGROUP: Redis restarted empty, or failed over to a replica without it) is
    created again and the command repeated."""

    def __init__(
        self,
        client: Client,
        group: str,
        consumer: str,
        topics: Sequence[str],
        dead_letter: str,
        target: str = "redis",
        shared: StreamGroup | None = None,
        per_stream: bool | None = None,
    ) -> None:
        self.client = client
        self.group = group
        self.consumer = consumer
        self.topics = list(topics)
        self.dead_letter_stream = dead_letter
        self.target = target
        self.shared = shared or StreamGroup()
        self.cluster = is_cluster(client)
        # One XREADGROUP per stream: required on a cluster; elsewhere only to measure it.
        self.per_stream = self.cluster if per_stream is None else per_stream
        self._acks: dict[str, list[str]] = {}  # stream -> entry ids to ack with the next read
        self._idle = False  # (per stream) the last read found nothing
        # Standalone and sentinel: XREADGROUP replies as Redis sends them (lists), without
        # redis-py's reshaping into a dict per entry, which _deliveries would undo at once
        # (a quarter of the processor's CPU per event went to reading a batch).
        self._callbacks: Any = None
        if not self.cluster and hasattr(client, "response_callbacks"):
            self._callbacks = CaseInsensitiveDict(client.response_callbacks)
            self._callbacks.pop("XREADGROUP", None)

    def ensure_groups(self) -> int:
        """Create the group on every topic (at 0, making the stream if need be); how many were
        missing."""

        def create() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for topic in self.topics:
                pipe.xgroup_create(topic, self.group, id="0", mkstream=True)
            return list(pipe.execute(raise_on_error=False))

        made = 0
        for reply in _guard(create, self.target):
            if isinstance(reply, TRANSIENT):
                raise CacheUnavailable(f"redis unavailable at {self.target}: {_first_line(reply)}")
            if isinstance(reply, Exception):
                if "BUSYGROUP" in str(reply):
                    continue
                raise reply
            made += 1
        return made

    def read(self, count: int, block_ms: int | None) -> list[Delivery]:
        """New entries across all topics (blocks up to ``block_ms`` when there are none;
        None: does not block)."""
        if not self.per_stream:
            streams: dict[Any, Any] = dict.fromkeys(self.topics, ">")
            (reply,) = self._exchange(
                lambda pipe: pipe.xreadgroup(
                    self.group, self.consumer, streams, count=count, block=block_ms
                )
            )
            return self._deliveries(reply)
        got, marks = self.read_each(count, ">", marks=self._idle and bool(block_ms))
        if not got and block_ms and marks is None:  # nothing, after a busy spell: see where
            got, marks = self.read_each(count, ">", marks=True)  # each stream ends, to wait
        if not got and block_ms and marks is not None:
            woken = self.shared.waiter(self.client, self.topics).wait(marks, block_ms / 1000)
            if woken:  # read those now; the next read reads every topic again
                got, _ = self.read_each(count, ">", marks=False, topics=woken)
        self._idle = not got
        return got

    def read_pending(self, count: int) -> list[Delivery]:
        """This consumer's own delivered-but-unacked entries (after a failure or a restart)."""
        if self.per_stream:
            return self.read_each(count, "0", marks=False)[0]
        streams: dict[Any, Any] = dict.fromkeys(self.topics, "0")
        (reply,) = self._exchange(
            lambda pipe: pipe.xreadgroup(self.group, self.consumer, streams, count=count)
        )
        return self._deliveries(reply)

    def read_each(
        self, count: int, from_id: str, *, marks: bool, topics: Sequence[str] | None = None
    ) -> tuple[list[Delivery], dict[str, str] | None]:
        """One XREADGROUP per topic, pipelined; with ``marks``, each stream's last entry id
        first (taken before its read: an entry added after it is past the mark)."""
        topics = self.topics if topics is None else topics

        def add(pipe: Any) -> None:
            for topic in topics:
                if marks:
                    pipe.xrevrange(topic, count=1)
                read = ("GROUP", self.group, self.consumer, "COUNT", count, "STREAMS", topic)
                pipe.execute_command("XREADGROUP", *read, from_id, **self._route(topic))

        replies = self._exchange(add)
        if not marks:
            return [d for r in replies for d in self._deliveries(r)], None
        reads = replies[1::2]
        ends = {
            t: _text(tail[0][0]) if tail else "0-0"
            for t, tail in zip(topics, replies[0::2], strict=True)
        }
        return [d for r in reads for d in self._deliveries(r)], ends

    def _route(self, stream: str) -> dict[str, Any]:
        """For a command whose keys redis-py cannot find by itself (XREADGROUP, XREAD): the
        node of the stream's slot; without it RedisCluster asks a node (COMMAND GETKEYS) for
        every such command, a round trip each. A stale slot map gets MOVED, and redis-py
        resends the command where it now belongs."""
        if not isinstance(self.client, RedisCluster):
            return {}
        return {"target_nodes": self.client.get_node_from_key(stream)}  # type: ignore[no-untyped-call]

    def claim_idle(self, min_idle_ms: int, count: int) -> list[Delivery]:
        """Take over entries another consumer left pending longer than ``min_idle_ms``."""

        def add(pipe: Any) -> None:
            for topic in self.topics:
                pipe.xautoclaim(topic, self.group, self.consumer, min_idle_ms, "0-0", count=count)

        replies = self._exchange(add)
        return [d for t, r in zip(self.topics, replies, strict=True) for d in _deliveries(t, r[1])]

    def _deliveries(self, reply: Any) -> list[Delivery]:
        """The entries of an XREADGROUP reply. Pending entries trimmed off their stream come
        back without fields: they are acked with the next command, or they would stay pending
        for ever."""
        out: list[Delivery] = []
        add = out.append
        for stream, entries in reply.items() if isinstance(reply, dict) else reply or []:
            name = _text(stream)
            for entry_id, fields in entries or []:
                if fields is None:
                    self._acks.setdefault(name, []).append(_text(entry_id))
                elif type(fields) is list and len(fields) == 2 and type(fields[1]) is bytes:
                    # a Dapr entry as hiredis hands it over: [b"data", b"{...}"]
                    f = {fields[0].decode(): fields[1].decode()}
                    add(Delivery(name, entry_id.decode(), f))
                else:
                    add(Delivery(name, _text(entry_id), _fields(fields)))
        return out

    def ack(self, deliveries: Sequence[Delivery], *, with_next_read: bool = False) -> None:
        """Acknowledge entries now, or (``with_next_read``) in the same round trip as this
        consumer's next read, before it: a busy processor then spends two round trips per batch
        instead of three. Until then they stay pending; a crash before that redelivers them and
        the de-duplication markers make the replay a no-op."""
        for d in deliveries:
            self._acks.setdefault(d.stream, []).append(d.entry_id)
        if not with_next_read:
            self.flush_acks()

    def flush_acks(self) -> None:
        if self._acks:
            self._exchange(lambda pipe: None)

    def close(self) -> None:
        """Send the acks owed, and stop the waiter's threads (the client is the app's)."""
        try:
            self.flush_acks()
        finally:
            self.shared.close()

    def _exchange(self, add: Callable[[Any], None]) -> list[Any]:
        """The acks owed, then the commands ``add(pipe)`` queues, in one round trip (on a
        cluster: one per node, all sent before any is read); the latter's replies."""

        def send() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            if self._callbacks is not None:
                pipe.response_callbacks = self._callbacks
            for stream, ids in self._acks.items():
                pipe.xack(stream, self.group, *ids)
            owed = len(self._acks)
            add(pipe)
            return list(pipe.execute())[owed:]

        replies: list[Any] = self._call(send)
        self._acks = {}  # kept on failure: XACK is idempotent, the next call sends them again
        return replies

    def _call(self, fn: Callable[[], Any]) -> Any:
        """``fn()``; on NOGROUP the group is created again and ``fn`` run once more. The
        first call creates the groups if need be."""
        if not self.shared.ready:
            self.shared.ensure(self)
        try:
            return _guard(fn, self.target)
        except redis.ResponseError as exc:
            if not _nogroup(exc):
                raise
            self.shared.recreate(self, exc)
        return _guard(fn, self.target)

    def delivery_count(self, d: Delivery) -> int:
        reply = self._call(
            lambda: self.client.xpending_range(
                d.stream, self.group, min=d.entry_id, max=d.entry_id, count=1
            )
        )
        return int(reply[0]["times_delivered"]) if reply else 0

    def dead_letter(self, d: Delivery, reason: str) -> None:
        """Move an entry to the dead-letter stream with why, then ack it. On a cluster the two
        streams live in different slots: the XADD first, then the XACK (a crash between them
        dead-letters the entry twice, never loses it)."""
        fields: dict[Any, Any] = {
            **d.fields,
            "topic": d.stream,
            "entry_id": d.entry_id,
            "reason": reason[:1000],
            "failed_at": str(time.time()),
            "consumer": self.consumer,
        }
        if self.cluster:
            self._call(lambda: self.client.xadd(self.dead_letter_stream, fields))
            self._call(lambda: self.client.xack(d.stream, self.group, d.entry_id))
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.dead_letter_stream, fields)
        pipe.xack(d.stream, self.group, d.entry_id)
        _guard(pipe.execute, self.target)


def default_consumer_name() -> str:
    import os

    return f"{socket.gethostname()}-{os.getpid()}"
