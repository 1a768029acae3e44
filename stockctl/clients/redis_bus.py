"""Redis Streams laid out as Dapr's pub/sub lays them out.

The stream key is the topic; each entry has field ``data`` holding the whole CloudEvent JSON
(and optionally ``metadata``, a JSON object of strings); a subscriber's consumer group is its
app id, created at ``0``. A Dapr sidecar and stockctl can therefore publish to and consume
from each other with no adapter.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from stockctl.core.ports import OutboxEntry
from stockctl.errors import CacheUnavailable


@dataclass(frozen=True, slots=True)
class Delivery:
    stream: str
    entry_id: str
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def data(self) -> str | None:
        return self.fields.get("data")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _deliveries(stream: Any, entries: Any) -> list[Delivery]:
    out = []
    for entry_id, fields in entries or []:
        if fields is None:  # trimmed away while pending
            continue
        decoded = {_text(k): _text(v) for k, v in fields.items()}
        out.append(Delivery(_text(stream), _text(entry_id), decoded))
    return out


class StreamPublisher:
    """Publishes outbox rows: one pipelined round trip per batch."""

    def __init__(self, client: redis.Redis, maxlen: int = 0, target: str = "redis") -> None:
        self.client = client
        self.maxlen = maxlen or None
        self.target = target

    def publish(self, entries: Sequence[OutboxEntry]) -> None:
        if not entries:
            return
        pipe = self.client.pipeline(transaction=False)
        for e in entries:
            pipe.xadd(e.topic, {"data": e.payload}, maxlen=self.maxlen, approximate=True)
        _guard(pipe.execute, self.target)

    def publish_raw(self, topic: str, data: str, metadata: dict[str, str] | None = None) -> str:
        fields = {"data": data}
        if metadata:
            fields["metadata"] = json.dumps(metadata)
        return _text(_guard(lambda: self.client.xadd(topic, fields), self.target))  # type: ignore[arg-type]


class StreamConsumer:
    """One consumer of a group over many topics, with pending recovery and a dead-letter stream."""

    def __init__(
        self,
        client: redis.Redis,
        group: str,
        consumer: str,
        topics: Sequence[str],
        dead_letter: str,
        target: str = "redis",
    ) -> None:
        self.client = client
        self.group = group
        self.consumer = consumer
        self.topics = list(topics)
        self.dead_letter_stream = dead_letter
        self.target = target
        self._acks: dict[str, list[str]] = {}  # stream -> entry ids to ack with the next read

    def ensure_groups(self) -> None:
        for topic in self.topics:
            try:
                _guard(
                    lambda t=topic: self.client.xgroup_create(t, self.group, id="0", mkstream=True),
                    self.target,
                )
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read(self, count: int, block_ms: int | None) -> list[Delivery]:
        """New entries across all topics (blocks up to ``block_ms`` when there are none;
        None: does not block)."""
        streams: dict[Any, Any] = dict.fromkeys(self.topics, ">")
        reply = self._after_acks(
            lambda pipe: pipe.xreadgroup(
                self.group, self.consumer, streams, count=count, block=block_ms
            )
        )
        return [d for stream, entries in (reply or []) for d in _deliveries(stream, entries)]

    def read_pending(self, count: int) -> list[Delivery]:
        """This consumer's own delivered-but-unacked entries (after a failure or a restart)."""
        streams: dict[Any, Any] = dict.fromkeys(self.topics, "0")
        reply = self._after_acks(
            lambda pipe: pipe.xreadgroup(self.group, self.consumer, streams, count=count)
        )
        return [d for stream, entries in (reply or []) for d in _deliveries(stream, entries)]

    def claim_idle(self, min_idle_ms: int, count: int) -> list[Delivery]:
        """Take over entries another consumer left pending longer than ``min_idle_ms``."""
        self.flush_acks()
        out: list[Delivery] = []
        for topic in self.topics:
            reply = _guard(
                lambda t=topic: self.client.xautoclaim(
                    t, self.group, self.consumer, min_idle_ms, "0-0", count=count
                ),
                self.target,
            )
            out += _deliveries(topic, reply[1])
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
            self._after_acks(None)

    def _after_acks(self, command: Any) -> Any:
        """Run the acks owed, then ``command(pipe)`` if given, in one round trip; its reply."""
        if not self._acks:
            if command is None:
                return None
            return _guard(lambda: command(self.client), self.target)
        pipe = self.client.pipeline(transaction=False)
        for stream, ids in self._acks.items():
            pipe.xack(stream, self.group, *ids)
        if command is not None:
            command(pipe)
        replies = _guard(pipe.execute, self.target)
        self._acks = {}  # kept on failure: XACK is idempotent, the next call sends them again
        return replies[-1]

    def delivery_count(self, d: Delivery) -> int:
        reply = _guard(
            lambda: self.client.xpending_range(
                d.stream, self.group, min=d.entry_id, max=d.entry_id, count=1
            ),
            self.target,
        )
        return int(reply[0]["times_delivered"]) if reply else 0

    def dead_letter(self, d: Delivery, reason: str) -> None:
        """Move an entry to the dead-letter stream with why, then ack it."""
        fields = {
            **d.fields,
            "topic": d.stream,
            "entry_id": d.entry_id,
            "reason": reason[:1000],
            "failed_at": str(time.time()),
            "consumer": self.consumer,
        }
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.dead_letter_stream, fields)  # type: ignore[arg-type]
        pipe.xack(d.stream, self.group, d.entry_id)
        _guard(pipe.execute, self.target)


def default_consumer_name() -> str:
    import os

    return f"{socket.gethostname()}-{os.getpid()}"


def _guard(fn: Any, target: str) -> Any:
    try:
        return fn()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise CacheUnavailable(f"redis unavailable at {target}: {exc}") from None


@dataclass(frozen=True, slots=True)
class TopicLag:
    topic: str
    length: int
    pending: int
    lag: int | None
    consumers: dict[str, int]  # consumer -> idle ms


class StreamAdmin:
    """Inspection and dead-letter handling for the CLI and diagnose."""

    def __init__(self, client: redis.Redis, group: str, dead_letter: str, target: str) -> None:
        self.client = client
        self.group = group
        self.dead_letter_stream = dead_letter
        self.target = target

    def lag(self, topics: Sequence[str]) -> list[TopicLag]:
        return [self._topic_lag(t) for t in topics]

    def _topic_lag(self, topic: str) -> TopicLag:
        length = int(_guard(lambda: self.client.xlen(topic), self.target))
        if not length and not _guard(lambda: self.client.exists(topic), self.target):
            return TopicLag(topic, 0, 0, 0, {})
        groups = _guard(lambda: self.client.xinfo_groups(topic), self.target)
        mine = next((g for g in groups if _text(g["name"]) == self.group), None)
        if mine is None:
            return TopicLag(topic, length, 0, None, {})
        consumers = _guard(lambda: self.client.xinfo_consumers(topic, self.group), self.target)
        lag = mine.get("lag")
        return TopicLag(
            topic,
            length,
            int(mine["pending"]),
            int(lag) if lag is not None else None,
            {_text(c["name"]): int(c["idle"]) for c in consumers},
        )

    def dead_letters(self, count: int) -> list[Delivery]:
        reply = _guard(
            lambda: self.client.xrange(self.dead_letter_stream, count=count), self.target
        )
        return _deliveries(self.dead_letter_stream, reply)

    def dead_letter_count(self) -> int:
        return int(_guard(lambda: self.client.xlen(self.dead_letter_stream), self.target))

    def replay(self, entry_id: str) -> str | None:
        """Put a dead letter back on its topic; returns the new entry id (None if unknown)."""
        found = self._dead_letter(entry_id)
        if found is None:
            return None
        fields = {"data": found.fields.get("data", "")}
        if "metadata" in found.fields:
            fields["metadata"] = found.fields["metadata"]
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(found.fields.get("topic", ""), fields)  # type: ignore[arg-type]
        pipe.xdel(self.dead_letter_stream, entry_id)
        new_id, _ = _guard(pipe.execute, self.target)
        return _text(new_id)

    def drop(self, entry_id: str) -> bool:
        return bool(
            _guard(lambda: self.client.xdel(self.dead_letter_stream, entry_id), self.target)
        )

    def _dead_letter(self, entry_id: str) -> Delivery | None:
        reply = _guard(
            lambda: self.client.xrange(self.dead_letter_stream, entry_id, entry_id), self.target
        )
        found = _deliveries(self.dead_letter_stream, reply)
        return found[0] if found else None
