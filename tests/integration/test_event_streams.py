"""Redis Streams on a cluster, and through the faults of each topology: the consumer reads stream
by stream on a cluster (one XREADGROUP per topic, pipelined per node), waits on all topics at
once without spinning, claims a dead consumer's entries, dead-letters across slots; a lost
consumer group is created again by the running worker with one warning; a reshard, a killed
cluster master and a sentinel failover lose nothing and hang nothing.

On the shared test cluster every test uses topic, group and dead-letter names of its own and
deletes only those; faults are injected on private servers (tests/redisutil.py). Real servers,
no mocks.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import RedisCluster

import stockctl
from stockctl.core.catalog import TOPICS
from stockctl.core.ports import OutboxEntry
from stockctl.errors import CacheUnavailable
from stockctl.redis.bus import Delivery, StreamConsumer, StreamPublisher
from stockctl.redis.stream_admin import StreamAdmin
from tests.conftest import REDIS_CLUSTER_URL, redis_client
from tests.eventutil import (
    EVENTS_REDIS_URLS,
    Background,
    Lane,
    cli,
    drain,
    seed_stock,
    spawn,
    text_of,
    topology_lane,
    wait_until,
)
from tests.redisutil import PrivateCluster, PrivateRedis, PrivateSentinel

pytestmark = pytest.mark.redis

PER_MASTER = 3  # topics per cluster master


def topics_on_every_master(client: RedisCluster, prefix: str) -> list[str]:
    """``PER_MASTER`` topic names served by each master of the cluster, interleaved."""
    by_node: dict[str, list[str]] = {n.name: [] for n in client.get_primaries()}  # type: ignore[no-untyped-call]
    i = 0
    while any(len(names) < PER_MASTER for names in by_node.values()):
        name = f"{prefix}.topic{i}"
        i += 1
        names = by_node[client.get_node_from_key(name).name]  # type: ignore[no-untyped-call]
        if len(names) < PER_MASTER:
            names.append(name)
    return [t for group in zip(*by_node.values(), strict=True) for t in group]


@dataclass
class Streams:
    """A test's own topics, group and dead-letter stream on a cluster."""

    client: RedisCluster
    topics: list[str]
    group: str
    dead_letter: str

    def consumer(self, name: str, cls: type[StreamConsumer] = StreamConsumer) -> StreamConsumer:
        return cls(self.client, self.group, name, self.topics, self.dead_letter, "test")

    def admin(self) -> StreamAdmin:
        return StreamAdmin(self.client, self.group, self.dead_letter, "test")

    def publish(self, first: int, n: int) -> None:
        """Entries ``first`` .. ``first + n - 1`` round-robin over the topics (``data``: the
        number), in one pipelined call, grouped per node by redis-py."""
        now = datetime.now(UTC)
        StreamPublisher(self.client).publish(
            [
                OutboxEntry(i, str(i), self.topics[i % len(self.topics)], json.dumps(i), now, None)
                for i in range(first, first + n)
            ]
        )

    def pending_and_lag(self) -> tuple[int, int]:
        lags = self.admin().lag(self.topics)
        return sum(t.pending for t in lags), sum(t.lag or 0 for t in lags)


@pytest.fixture
def streams(redis_topologies: None) -> Iterator[Streams]:
    client = redis_client(REDIS_CLUSTER_URL)
    assert isinstance(client, RedisCluster)
    prefix = f"streams-{uuid.uuid4().hex[:10]}"
    made = Streams(client, topics_on_every_master(client, prefix), prefix, f"{prefix}.dead")
    try:
        yield made
    finally:
        client.delete(*made.topics, made.dead_letter)  # only this test's keys
        client.close()


def numbers(deliveries: list[Delivery]) -> list[int]:
    return sorted(int(json.loads(d.data or "")) for d in deliveries)


def read_all(consumer: StreamConsumer, count: int = 50) -> list[Delivery]:
    """Non-blocking reads until one finds nothing, each batch acked with the next read."""
    seen: list[Delivery] = []
    while got := consumer.read(count, None):
        seen += got
        consumer.ack(got, with_next_read=True)
    consumer.flush_acks()
    return seen


# -- the shared cluster: reading stream by stream


def test_a_cluster_consumer_reads_every_topic_and_acks_them_all(streams: Streams) -> None:
    streams.publish(0, 450)  # 50 on each of 9 topics, 3 topics on each master
    seen = read_all(streams.consumer("c1"))
    assert numbers(seen) == list(range(450))
    assert {d.stream for d in seen} == set(streams.topics)
    lags = streams.admin().lag(streams.topics)
    assert [(t.length, t.pending, t.lag) for t in lags] == [(50, 0, 0)] * len(streams.topics)
    assert all(set(t.consumers) == {"c1"} for t in lags)


class CountingConsumer(StreamConsumer):
    """Counts round trips (the acks owed and a read go in one)."""

    exchanges = 0

    def _exchange(self, add: Callable[[Any], None]) -> list[Any]:
        self.exchanges += 1
        return super()._exchange(add)


def test_a_waiting_cluster_consumer_wakes_for_any_topic_and_idles_without_spinning(
    streams: Streams,
) -> None:
    consumer = streams.consumer("waiter", CountingConsumer)
    assert isinstance(consumer, CountingConsumer)
    assert consumer.read(10, None) == []  # creates the groups
    for topic in streams.topics:  # an entry on any topic, on any node, wakes the wait
        later = threading.Timer(0.1, lambda t=topic: streams.client.xadd(t, {"data": '"x"'}))
        started = time.monotonic()
        later.start()
        got = consumer.read(10, 5000)
        waited = time.monotonic() - started
        later.join()
        assert [d.stream for d in got] == [topic]
        assert 0.09 < waited < 1.0, f"woke after {waited:.3f} s"
        consumer.ack(got)
    # Nothing comes: each read waits out its block, one round trip each, no busy loop.
    consumer.exchanges = 0
    started, reads = time.monotonic(), 0
    while time.monotonic() - started < 1.0:
        assert consumer.read(10, 200) == []
        reads += 1
    assert 4 <= reads <= 6 and consumer.exchanges <= reads + 1
    watchers = consumer.shared.waiter(streams.client, streams.topics).watchers
    assert len(watchers) == len(streams.topics)
    consumer.close()  # as the processor does when the worker stops: the threads end
    wait_until(lambda: not any(t.is_alive() for t in watchers), 5, "the waiter's threads")


def test_an_entry_added_between_the_empty_read_and_the_wait_is_not_missed(
    streams: Streams,
) -> None:
    consumer = streams.consumer("racer")
    got, marks = consumer.read_each(10, ">", marks=True)  # the read before a wait
    assert got == [] and marks is not None
    streams.client.xadd(streams.topics[4], {"data": '"raced"'})  # lands before the XREADs
    started = time.monotonic()
    woken = consumer.shared.waiter(streams.client, streams.topics).wait(marks, 5.0)
    assert woken == [streams.topics[4]] and time.monotonic() - started < 1.0
    assert [d.data for d in consumer.read(10, None)] == ['"raced"']


def test_an_entry_seen_by_a_watcher_of_an_earlier_wait_still_wakes_the_next_one(
    streams: Streams,
) -> None:
    """Topic A ends a wait while B's watcher still blocks; an entry on B lands after the next
    empty read but before the next wait: that wait returns at once, not after its timeout."""
    consumer = streams.consumer("racer")
    waiter = consumer.shared.waiter(streams.client, streams.topics)
    a, b = streams.topics[0], streams.topics[1]
    _, marks = consumer.read_each(10, ">", marks=True)
    assert marks is not None
    threading.Timer(0.2, lambda: streams.client.xadd(a, {"data": '"a"'})).start()
    assert waiter.wait(marks, 5.0) == [a]  # b's watcher blocks on
    assert [d.data for d in consumer.read(10, None)] == ['"a"']
    _, marks = consumer.read_each(10, ">", marks=True)
    assert marks is not None
    streams.client.xadd(b, {"data": '"b"'})  # b's watcher of the first wait sees it ...
    time.sleep(0.2)  # ... and fires, with nobody waiting
    started = time.monotonic()
    assert waiter.wait(marks, 3.0) == [b]
    assert time.monotonic() - started < 1.0
    assert [d.data for d in consumer.read(10, None)] == ['"b"']


def test_a_dead_consumers_entries_are_claimed_on_every_node(streams: Streams) -> None:
    streams.publish(0, 90)
    dead = streams.consumer("dead")
    taken = read_all_unacked(dead)
    assert numbers(taken) == list(range(90))
    assert numbers(dead.read_pending(100)) == list(range(90))  # its own, per stream
    time.sleep(0.15)
    rescuer = streams.consumer("rescuer")
    claimed = rescuer.claim_idle(100, 100)
    assert numbers(claimed) == list(range(90))
    assert {d.stream for d in claimed} == set(streams.topics)
    assert dead.read_pending(100) == []  # they are the rescuer's now
    rescuer.ack(claimed)
    assert streams.pending_and_lag() == (0, 0)


def read_all_unacked(consumer: StreamConsumer) -> list[Delivery]:
    seen: list[Delivery] = []
    while got := consumer.read(100, None):
        seen += got
    return seen


def test_dead_letters_replay_and_drop_across_slots_on_the_cluster(streams: Streams) -> None:
    streams.publish(0, 9)  # one per topic: on every master, the dead-letter stream on one
    consumer = streams.consumer("dlq")
    got = consumer.read(10, None)
    assert len(got) == 9
    for d in got:
        consumer.dead_letter(d, f"bad {d.data}")
    assert streams.pending_and_lag() == (0, 0)
    admin = streams.admin()
    letters = admin.dead_letters(100)
    assert admin.dead_letter_count() == 9
    assert {(d.fields["topic"], d.fields["entry_id"]) for d in letters} == {
        (d.stream, d.entry_id) for d in got
    }
    assert all(d.fields["consumer"] == "dlq" and "bad" in d.fields["reason"] for d in letters)
    first, second = letters[0], letters[1]
    new_id = admin.replay(first.entry_id)
    assert new_id is not None
    replayed: Any = streams.client.xrange(first.fields["topic"], new_id)
    assert [text_of(i) for i, _ in replayed] == [new_id]
    assert admin.drop(second.entry_id) and not admin.drop(second.entry_id)
    assert admin.dead_letter_count() == 7
    assert [d.data for d in consumer.read(10, None)] == [first.data]  # the replayed entry


# -- events tail, on each topology


def test_events_tail_follows_topics_on_each_topology(
    redis_topology_url: str, tmp_path: Path
) -> None:
    client = redis_client(redis_topology_url)
    prefix = f"tail-{uuid.uuid4().hex[:10]}"
    topics = [f"{prefix}.a", f"{prefix}.b", f"{prefix}.c"]  # different slots on a cluster
    env = {
        **os.environ,
        "STOCKCTL_DATABASE_URL": f"sqlite:///{tmp_path / 'tail.db'}",
        "STOCKCTL_REDIS_URL": redis_topology_url,
    }
    try:
        client.xadd(topics[0], {"data": envelope("old")})
        client.xadd(topics[1], {"data": envelope("older")})
        args = [f"--topic={t}" for t in topics]
        tail = spawn(env, "events", "tail", *args, "--history", "1", "--count", "4")
        try:
            assert tail.stdout is not None
            history = [tail.stdout.readline() for _ in range(2)]  # then it follows
            client.xadd(topics[2], {"data": envelope("new-c")})
            client.xadd(topics[0], {"data": envelope("new-a")})
            out, err = tail.communicate(timeout=20)
        finally:
            tail.kill()
        assert tail.returncode == 0, err
        lines = [(line.split()[1], line.split()[-1]) for line in history + out.splitlines()]
        assert lines[:2] == [(topics[0], "reason=old"), (topics[1], "reason=older")]
        # one after the other, on different topics: in either order
        assert sorted(lines[2:]) == [(topics[0], "reason=new-a"), (topics[2], "reason=new-c")]
    finally:
        client.delete(*topics)
        client.close()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://127.0.0.1:1,127.0.0.1:2", "Redis Cluster cannot be connected"),
        ("redis+sentinel://127.0.0.1:1/nobody", "No master found for 'nobody'"),
    ],
)
def test_events_commands_on_an_unreachable_topology_say_so_in_one_line(
    url: str, says: str, tmp_path: Path
) -> None:
    env = {**os.environ, "STOCKCTL_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    done = cli({**env, "STOCKCTL_REDIS_URL": url}, "events", "tail", "--count", "1")
    assert done.code == 3, done.err
    assert done.err.startswith(f"error: redis unavailable at {url}: {says}"), done.err
    assert len(done.err.splitlines()) == 1 and "<redis" not in done.err


@pytest.fixture(params=list(EVENTS_REDIS_URLS))
def lane(request: pytest.FixtureRequest) -> Iterator[Lane]:
    yield from topology_lane(request)


def test_lag_top_and_diagnose_read_the_streams_on_each_topology(lane: Lane, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ops.db'}"
    sc = stockctl.connect(db, **lane.settings())
    try:
        sc.init()
        (p,), _ = seed_stock(sc, 1, 2, 7)
        drain(sc.app)
    finally:
        sc.close()
    env = lane.env(db)
    lag = cli(env, "events", "lag", "-o", "json")
    assert lag.code == 0, lag.err
    topics = {t["topic"]: t for t in json.loads(lag.out)["topics"]}
    assert set(topics) == set(TOPICS)
    assert topics["warehouse.stock.updated"]["length"] == 2
    assert all((t["pending"], t["lag"]) == (0, 0) for t in topics.values() if t["length"])
    top = cli(env, "top", "--once")
    assert top.code == 0, top.err
    assert "warehouse.stock.updated" in top.out  # its lag line
    found = cli(env, "diagnose", "stock-not-updating", "--product", p, "-o", "json")
    checks = {c["name"]: c for c in json.loads(found.out)["checks"]}
    assert checks["last event in stream"]["status"] == "ok", checks


def envelope(reason: str) -> str:
    return json.dumps(
        {"id": str(uuid.uuid4()), "type": "test", "time": "t", "data": {"reason": reason}}
    )


# -- a lost consumer group, on a Redis of the test's own


def warnings_of(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


def test_a_running_worker_recreates_a_lost_group_once_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The group deleted under the running worker, then Redis restarted empty (no persistence):
    each time the worker creates the groups again by itself, with one warning line, and the
    changes made meanwhile reach the cache. The outage costs a handful of lines, no
    traceback."""
    caplog.set_level(logging.INFO, logger="stockctl")
    with PrivateRedis() as redis_server:
        sc = stockctl.connect(
            f"sqlite:///{tmp_path / 'nogroup.db'}",
            redis_url=redis_server.url,
            app_id="nogroup",
            worker_batch_timeout_ms=20,
            relay_poll_interval_ms=20,
        )
        try:
            sc.init()
            (p,), (w,) = seed_stock(sc, 1, 1, 10)
            app = sc.app
            key = app.cache().keys.warehouse(p, w)
            direct = redis_server.client()
            with Background(app, workers=2, consumer="w"):
                wait_until(lambda: direct.get(key) == "10", 20, "the first change in the cache")
                gone = direct.pipeline()  # someone deletes the group under the running worker
                for topic in TOPICS:
                    gone.xgroup_destroy(topic, "nogroup")
                gone.execute()
                sc.adjust(p, w, 5, reason="after the group went")
                wait_until(lambda: direct.get(key) == "15", 20, "the change after NOGROUP")
                assert len(warnings_of(caplog, "consumer group nogroup was missing")) == 1

                before = len(caplog.records)
                redis_server.kill()  # Redis restarts empty
                sc.adjust(p, w, 1, reason="while Redis is down")
                time.sleep(1.0)
                redis_server.start()
                direct = redis_server.client()
                sc.adjust(p, w, 1, reason="after the restart")
                wait_until(lambda: direct.get(key) == "17", 30, "the changes after the restart")
            outage = caplog.records[before:]
            assert len(warnings_of(caplog, "consumer group nogroup was missing")) == 2
            noisy = [r for r in outage if r.levelno >= logging.WARNING]
            assert len(noisy) <= 8, "\n".join(r.getMessage() for r in noisy)
            assert not [r for r in outage if r.exc_info], "a traceback was logged"
        finally:
            sc.close()


# -- reshard, failover: nothing lost, nothing hangs (private servers)


@dataclass
class Flow:
    """A publisher and a consumer on their own threads, each retrying after CacheUnavailable
    the way the worker's job loop does; anything else is a failure of the test."""

    client: Any
    topics: list[str]
    total: int
    published_at: dict[int, float] = field(default_factory=dict)  # number -> when acked
    seen: set[int] = field(default_factory=set)
    unavailable: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.consumer = StreamConsumer(self.client, "flow", "c", self.topics, "flow.dead", "t")
        self.threads = [
            threading.Thread(target=self._guarded, args=(f,), daemon=True)
            for f in (self._publish, self._consume)
        ]

    def __enter__(self) -> Flow:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)
        assert not any(t.is_alive() for t in self.threads), "a flow thread hangs"

    def _guarded(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # the test fails on it
            self.failures.append(f"{type(exc).__name__}: {exc}")

    def _retrying(self, fn: Callable[[], Any]) -> Any:
        while not self.stop.is_set():
            try:
                return fn()
            except CacheUnavailable:
                self.unavailable += 1
                time.sleep(0.1)
        return None

    def _publish(self) -> None:
        publisher = StreamPublisher(self.client, target="t")
        now = datetime.now(UTC)
        for first in range(0, self.total, 10):
            batch = [
                OutboxEntry(i, str(i), self.topics[i % len(self.topics)], str(i), now, None)
                for i in range(first, min(first + 10, self.total))
            ]
            self._retrying(partial(publisher.publish, batch))
            self.published_at.update(dict.fromkeys((e.id for e in batch), time.monotonic()))
            time.sleep(0.01)

    def _consume(self) -> None:
        recover_at = 0.0
        while not self.stop.is_set():
            got = self._retrying(lambda: self.consumer.read(100, 50)) or []
            if time.monotonic() > recover_at:  # as the processor does, every so often
                recover_at = time.monotonic() + 0.5
                got += self._retrying(lambda: self.consumer.read_pending(100)) or []
                got += self._retrying(lambda: self.consumer.claim_idle(1000, 100)) or []
            self.seen.update(int(d.data or "-1") for d in got)
            self._retrying(partial(self.consumer.ack, got, with_next_read=True))

    def read_up_to(self, until: float) -> bool:
        """Every entry published by ``until`` has been read."""
        return all(i in self.seen for i, at in list(self.published_at.items()) if at <= until)

    def caught_up(self, since: float) -> bool:
        """Everything published, and every entry published after ``since`` read."""
        if len(self.published_at) < self.total:
            return False
        return all(i in self.seen for i, at in self.published_at.items() if at > since)

    def lost(self, start: float, end: float) -> list[int]:
        """Published entries never read, but for those a master acked within a second before
        the fault began or during it: with asynchronous replication those may be gone."""
        published = list(self.published_at.items())
        return sorted(i for i, at in published if i not in self.seen and not start - 1 <= at <= end)


def product_client(tmp_path: Path, url: str) -> Any:
    """The Redis client stockctl makes for ``url`` (``App.redis()``), and its app."""
    sc = stockctl.connect(f"sqlite:///{tmp_path / 'flow.db'}", redis_url=url)
    return sc, sc.app.redis()


def test_streams_go_on_through_a_reshard_and_a_killed_master_on_a_cluster(tmp_path: Path) -> None:
    with PrivateCluster() as cluster:
        sc, client = product_client(tmp_path, cluster.url)
        topics = topics_on_every_master(client, "flow")
        with Flow(client, topics, 3000) as flow:
            wait_until(lambda: len(flow.seen) > 300, 30, "the flow to start")
            a, b, c = cluster.masters()
            cluster.reshard(2000, a, b)  # slots move under the readers and writers: MOVED, ASK
            resharded = time.monotonic()
            # A reshard loses nothing: every entry published until it ended is read.
            wait_until(lambda: flow.read_up_to(resharded), 30, "the flow after the reshard")
            killed_at = time.monotonic()
            cluster.kill_master(cluster.masters().index(c))  # its replica takes over
            cluster.wait_failover()
            failed_over = time.monotonic()
            wait_until(lambda: flow.caught_up(failed_over), 60, "the flow after the failover")
        assert not flow.failures, flow.failures
        assert not flow.lost(killed_at, failed_over)
        assert flow.unavailable > 0  # the failover was noticed, and retried
        sc.close()


def test_streams_go_on_through_a_sentinel_failover(tmp_path: Path) -> None:
    with PrivateSentinel() as group:
        sc, client = product_client(tmp_path, group.url)
        with Flow(client, ["flow.a", "flow.b"], 1500) as flow:
            wait_until(lambda: len(flow.seen) > 300, 30, "the flow to start")
            started = time.monotonic()
            group.failover()  # the old master is demoted: READONLY, then the new one is found
            ended = time.monotonic()
            wait_until(lambda: flow.caught_up(ended), 60, "the flow after the failover")
        assert not flow.failures, flow.failures
        assert not flow.lost(started, ended)
        sc.close()
