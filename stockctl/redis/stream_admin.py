"""Reading the streams without consuming them: ``stockctl events tail`` (``StreamTail``), and
lag, dead letters and their replay for the CLI, ``top`` and diagnose (``StreamAdmin``).

The layout is Dapr's (``stockctl.redis.bus``): the stream key is the topic, a
subscriber's consumer group is its app id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.cluster import RedisCluster

from stockctl.core.worker_ports import Delivery
from stockctl.redis.stream_base import Client, _deliveries, _guard, _text, is_cluster
from stockctl.redis.stream_waiter import StreamWaiter


class StreamTail:
    """Follows topics with no consumer group (``stockctl events tail``): one XREAD over all of
    them on standalone and sentinel; on a cluster one per topic, pipelined, and a
    ``StreamWaiter`` while nothing comes."""

    def __init__(self, client: Client, topics: Sequence[str], target: str) -> None:
        self.client = client
        self.topics = list(topics)
        self.target = target
        self.last: dict[str, str] = {}  # topic -> the id of the last entry seen
        self._waiter: StreamWaiter | None = None

    def history(self, count: int) -> list[Delivery]:
        """The last ``count`` entries of each topic, oldest first; following starts after
        each topic's newest entry (an entry added meanwhile is not missed)."""
        pipe = self.client.pipeline(transaction=False)
        for topic in self.topics:
            pipe.xrevrange(topic, count=max(count, 1))
        out: list[Delivery] = []
        for topic, recent in zip(self.topics, _guard(pipe.execute, self.target), strict=True):
            self.last[topic] = _text(recent[0][0]) if recent else "0-0"
            out += reversed(_deliveries(topic, recent[:count]))
        return out

    def follow(self, block_ms: int) -> list[Delivery]:
        """The entries after the last seen, waiting up to ``block_ms`` for one."""
        if not is_cluster(self.client):
            streams: dict[Any, Any] = dict(self.last)
            reply = _guard(lambda: self.client.xread(streams, block=block_ms), self.target)
            return self._seen([d for s, e in reply or [] for d in _deliveries(s, e)])
        got = self._read(self.topics)
        if not got:
            if self._waiter is None:
                self._waiter = StreamWaiter(self.client, self.topics)
            woken = self._waiter.wait(self.last, block_ms / 1000)
            got = self._read(woken) if woken else []
        return got

    def _read(self, topics: Sequence[str]) -> list[Delivery]:
        assert isinstance(self.client, RedisCluster)
        pipe = self.client.pipeline(transaction=False)  # type: ignore[no-untyped-call]
        for t in topics:
            node = self.client.get_node_from_key(t)  # type: ignore[no-untyped-call]
            pipe.execute_command("XREAD", "STREAMS", t, self.last[t], target_nodes=node)
        replies = _guard(pipe.execute, self.target)
        return self._seen([d for r in replies for s, e in r or [] for d in _deliveries(s, e)])

    def _seen(self, got: list[Delivery]) -> list[Delivery]:
        for d in got:
            self.last[d.stream] = d.entry_id
        return got


@dataclass(frozen=True, slots=True)
class TopicLag:
    topic: str
    length: int
    pending: int
    lag: int | None
    consumers: dict[str, int]  # consumer -> idle ms


class StreamAdmin:
    """Inspection and dead-letter handling for the CLI and diagnose."""

    def __init__(self, client: Client, group: str, dead_letter: str, target: str) -> None:
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
        fields: dict[Any, Any] = {"data": found.fields.get("data", "")}
        if "metadata" in found.fields:
            fields["metadata"] = found.fields["metadata"]
        topic = found.fields.get("topic", "")
        if is_cluster(self.client):  # two slots: the XADD first, so a failure loses nothing
            new_id = _guard(lambda: self.client.xadd(topic, fields), self.target)
            _guard(lambda: self.client.xdel(self.dead_letter_stream, entry_id), self.target)
            return _text(new_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(topic, fields)
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
