"""The event pipeline on real PostgreSQL and Redis: outbox → relay → Redis Streams (Dapr layout)
→ processor → stock cache, under concurrency, crashes, poison entries, an unreachable Redis, and
Dapr-written entries.

Streams live in the events test database of Redis (see ``tests/eventutil.py`` for isolation);
every test runs on each topology: standalone, Redis Cluster, Sentinel.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import event, func, select

import stockctl
from stockctl.bootstrap import App
from stockctl.core import catalog
from stockctl.core import events as ev
from stockctl.core.catalog import TOPICS
from stockctl.core.model import ReservationStatus
from stockctl.daemons.workers.processor import ReadTurn, StreamProcessor
from stockctl.errors import DependencyUnavailable, StockRuleViolation
from stockctl.library import Stockctl
from stockctl.redis.bus import Delivery, StreamConsumer
from stockctl.store.tables import outbox, stock_movements
from tests.conftest import new_id
from tests.eventutil import (
    DEAD_LETTER,
    EVENTS_REDIS_URLS,
    Background,
    Lane,
    all_product_ids,
    assert_cache_matches_db,
    cli,
    drain,
    outbox_event_ids,
    seed_stock,
    settled,
    text_of,
    topology_lane,
    wait_until,
)

# The proof uses 200,000 changes; the default keeps the suite quick on a 2-core box
# (about 3-4 ms per change here with the worker running). STOCKCTL_TEST_EVENTS=200000 for the
# full figure.
CHANGES = int(os.environ.get("STOCKCTL_TEST_EVENTS", "5000"))
WRITERS = 8


@pytest.fixture(params=list(EVENTS_REDIS_URLS))
def lane(request: pytest.FixtureRequest) -> Iterator[Lane]:
    """The test's lane on each Redis topology in turn: standalone, cluster, sentinel."""
    yield from topology_lane(request)


@pytest.fixture
def pipeline(pg_url: str, lane: Lane) -> Iterator[Stockctl]:
    """stockctl on a fresh PostgreSQL database and the test's Redis lane."""
    sc = stockctl.connect(
        pg_url,
        **lane.settings(
            worker_claim_idle_ms=100,
            worker_max_deliveries=3,
            relay_poll_interval_ms=50,
            worker_batch_timeout_ms=20,
        ),
    )
    sc.init()
    try:
        yield sc
    finally:
        sc.close()


def check_converged(sc: Stockctl, lane: Lane) -> None:
    app = sc.app
    products = all_product_ids(app)
    assert_cache_matches_db(app, app.cache(), lane.get, app.cache().keys, products)


def assert_published_exactly_once(app: App, lane: Lane) -> None:
    committed = outbox_event_ids(app)
    published = lane.published_event_ids()
    repeats = [e for e, n in Counter(published).items() if n > 1]
    assert not repeats, f"{len(repeats)} events published twice"
    assert set(published) == set(committed)


# -- the proof under load


@dataclass
class Tally:
    movements: int = 0  # ledger rows the committed changes wrote
    refused: int = 0
    failed: int = 0


def writer(sc: Stockctl, ps: Sequence[str], ws: Sequence[str], n: int, seed_: int) -> Tally:
    rnd = random.Random(seed_)
    tally = Tally()
    holds: list[str] = []
    for _ in range(n):
        if rnd.random() < 0.3:
            time.sleep(rnd.random() * 0.002)  # before the change
        p, w = rnd.choice(ps), rnd.choice(ws)
        op = rnd.random()
        try:
            if op < 0.30:
                sc.receive(p, w, rnd.randint(1, 6))
                tally.movements += 1
            elif op < 0.55:
                sc.adjust(p, w, -rnd.randint(1, 6), reason="cycle count")
                tally.movements += 1
            elif op < 0.70:
                other = rnd.choice([x for x in ws if x != w])
                sc.transfer(p, w, other, rnd.randint(1, 4))
                tally.movements += 2
            elif op < 0.85 or not holds:
                holds.append(sc.reserve(p, w, rnd.randint(1, 3), order_id=new_id("O")).id)
                tally.movements += 1
            else:
                sc.release(holds.pop(rnd.randrange(len(holds))))
                tally.movements += 1
        except StockRuleViolation:
            tally.refused += 1
        except DependencyUnavailable:  # e.g. deadlock retries exhausted: rolled back
            tally.failed += 1
    return tally


def test_concurrent_changes_all_reach_the_cache(pg_url: str, lane: Lane) -> None:
    """8 writers with random delays before and inside their transactions, the worker running at
    the same time: every committed change is published exactly once and the cache equals the
    database for every product."""
    writers = stockctl.connect(pg_url, db_pool_max_idle=WRITERS, relay_poll_interval_ms=50)
    writers.init()
    worker = stockctl.connect(
        pg_url, **lane.settings(relay_poll_interval_ms=50, worker_batch_timeout_ms=20)
    )
    try:
        ps, ws = seed_stock(writers, 40, 4, 50)

        @event.listens_for(writers.app.store.engine, "commit")
        def _delay_commit(conn: object) -> None:  # inside the transaction, just before COMMIT
            if random.random() < 0.2:
                time.sleep(random.random() * 0.003)

        per = CHANGES // WRITERS
        with (
            ThreadPoolExecutor(WRITERS) as pool,
            Background(worker.app, workers=2, consumer="load"),
        ):
            tallies = list(pool.map(lambda k: writer(writers, ps, ws, per, k), range(WRITERS)))
            wait_until(lambda: settled(worker.app, lane), 120, "the worker to catch up")
        with writers.app.store.engine.connect() as conn:
            movements = conn.execute(select(func.count()).select_from(stock_movements)).scalar()
        made = sum(t.movements for t in tallies)
        assert movements == made + len(ps) * len(ws)  # + the seeding receipts
        assert made > CHANGES // 2, tallies  # most changes went through
        assert_published_exactly_once(worker.app, lane)
        # Transactions committed out of id order, and those rows were published all the same
        # (with a few thousand changes and the commit delays, out-of-order commits always occur).
        if CHANGES >= 1000:
            assert published_out_of_id_order(worker.app, lane) > 0
        check_converged(worker, lane)
    finally:
        writers.close()
        worker.close()


def test_a_drained_relay_waits_for_notify_and_misses_no_commit(pipeline: Stockctl) -> None:
    """After a claim that took every row, the relay waits for the next NOTIFY instead of
    claiming again; a change committed while it was publishing still wakes it at once (its
    NOTIFY is queued), with the poll fallback 20 s away."""
    from datetime import timedelta

    from stockctl.daemons.workers.relay import OutboxRelay

    app = pipeline.app
    ps, ws = seed_stock(pipeline, 1, 1, 50)
    published: list[list[str]] = []

    def publish(entries: list[Any]) -> None:
        published.append([e.event_id for e in entries])
        if len(published) == 1:  # a commit lands while the first batch is being published
            pipeline.adjust(ps[0], ws[0], 1, reason="test")

    def relay_of(batch_size: int) -> OutboxRelay:
        return OutboxRelay(
            app.store,
            publish,
            batch_size=batch_size,
            poll_seconds=20,
            retention=timedelta(hours=1),
            clock=app.ctx.clock,
        )

    relay, full = relay_of(100), relay_of(1)
    stop = threading.Event()
    try:
        relay.waiter.wait(0.01, stop)  # LISTEN before the first claim, as the runner's loop
        waiting, _ = app.store.outbox_backlog()
        assert relay.step() == waiting > 0
        assert relay.drained
        started = time.monotonic()
        relay.idle(stop)  # returns on the queued NOTIFY of the adjust, not after 20 s
        assert time.monotonic() - started < 5
        assert relay.step() == 1 and relay.drained
        pipeline.adjust(ps[0], ws[0], 1, reason="test")
        pipeline.adjust(ps[0], ws[0], 1, reason="test")
        assert full.step() == 1 and not full.drained  # a full batch: more may be waiting
        assert full.step() == 1
    finally:
        relay.close()
        full.close()
    assert sum(len(b) for b in published) == waiting + 3
    assert app.store.outbox_backlog()[0] == 0


def published_out_of_id_order(app: App, lane: Lane) -> int:
    """How many stream entries carry an event with a smaller outbox id than the entry before."""
    with app.store.engine.connect() as conn:
        ids = {r.event_id: r.id for r in conn.execute(select(outbox.c.event_id, outbox.c.id))}
    inversions = 0
    for topic in TOPICS:
        order = [ids[json.loads(f["data"])["id"]] for _, f in lane.entries(topic)]
        inversions += sum(1 for a, b in zip(order, order[1:], strict=False) if b < a)
    return inversions


# -- crash between the cache write and the ack


class Killed(Exception):
    """The process died here."""


class DiesBeforeAck(StreamConsumer):
    def ack(self, deliveries: Sequence[Delivery], *, with_next_read: bool = False) -> None:
        raise Killed()  # before the acks are sent, now or with the next read


def test_a_batch_written_to_the_cache_but_not_acked_is_finished_by_another_consumer(
    pipeline: Stockctl, lane: Lane
) -> None:
    app = pipeline.app
    ps, ws = seed_stock(pipeline, 12, 3, 50)
    drain(app)  # the cache holds every product
    for i in range(160):
        p, w = ps[i % len(ps)], ws[i % len(ws)]
        pipeline.receive(p, w, 1 + i % 3) if i % 2 else pipeline.adjust(p, w, -1, reason="x")
    drain_relay_only(app)
    # A consumer reads and writes its batches to the cache, and dies before each ack.
    doomed = StreamProcessor(
        app.store,
        app.cache(),
        DiesBeforeAck(app.redis(), lane.app_id, "doomed", TOPICS, DEAD_LETTER),
        pipeline.release_order,
        batch_size=10,
        block_ms=10,
        max_deliveries=3,
        claim_idle_ms=60_000,
    )
    for _ in range(4):
        with pytest.raises(Killed):
            doomed.step()
    pending, unread = lane.pending_and_lag()
    assert pending > 0 and unread > 0
    # More changes after the crash.
    for i in range(60):
        pipeline.receive(ps[i % len(ps)], ws[0], 2)
    # A second consumer takes over the dead one's entries (XAUTOCLAIM) and reads the rest.
    time.sleep(0.15)
    with Background(app, consumer="rescuer") as rescue:
        wait_until(lambda: settled(app, lane), 30, "the rescuer to finish")
    processors = [j for j in rescue.runner.jobs if isinstance(j, StreamProcessor)]
    # Each entry the dead consumer wrote to the cache was recognised as applied, not re-applied:
    # its version is there already (stale; a newer one may have overtaken a few others too).
    assert sum(j.totals.duplicates + j.totals.stale for j in processors) >= pending
    assert lane.pending_and_lag() == (0, 0)
    assert_published_exactly_once(app, lane)
    check_converged(pipeline, lane)


def test_a_restarted_consumer_in_burst_mode_takes_back_all_its_pending_entries(
    pipeline: Stockctl, lane: Lane
) -> None:
    """`worker run --burst --consumer NAME` after a crash that left several batches pending
    under NAME: it exits only when none is left."""
    app = pipeline.app
    ps, ws = seed_stock(pipeline, 6, 2, 50)
    drain(app)
    for i in range(120):
        pipeline.receive(ps[i % len(ps)], ws[i % len(ws)], 1)
    drain_relay_only(app)
    doomed = StreamProcessor(
        app.store,
        app.cache(),
        DiesBeforeAck(app.redis(), lane.app_id, "again", TOPICS, DEAD_LETTER),
        pipeline.release_order,
        batch_size=10,
        block_ms=10,
        max_deliveries=3,
        claim_idle_ms=60_000,
    )
    for _ in range(5):
        with pytest.raises(Killed):
            doomed.step()
    assert lane.pending_and_lag()[0] == 50
    # Restarted under the same name, in burst mode, with batches of 10 as before.
    from stockctl.daemons.workers.runner import Runner, WorkerOptions

    Runner(
        app,
        WorkerOptions(only=["processor"], workers=1, batch_size=10, consumer="again", burst=True),
    ).run(handle_signals=False)
    assert lane.pending_and_lag() == (0, 0)
    check_converged(pipeline, lane)


def test_processors_take_turns_to_read_and_a_trickle_lingers_into_one_batch(
    pipeline: Stockctl, lane: Lane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The processors of a worker share a ReadTurn: after a read that found less than a batch,
    the next reader first lingers, and what arrives meanwhile joins its batch; a processor that
    has to wait for its turn first sends the acks it owes; after a full batch nobody waits."""
    app = pipeline.app
    ps, ws = seed_stock(pipeline, 4, 1, 50)
    drain(app)
    turn = ReadTurn()

    def processor(name: str) -> StreamProcessor:
        consumer = StreamConsumer(app.redis(), lane.app_id, name, TOPICS, DEAD_LETTER)
        return StreamProcessor(
            app.store,
            app.cache(),
            consumer,
            pipeline.release_order,
            batch_size=50,
            block_ms=50,
            max_deliveries=3,
            claim_idle_ms=60_000,
            turn=turn,
            linger_ms=5,
        )

    def owed(name: str) -> int:
        client, group = app.redis(), lane.app_id
        return sum(
            len(client.xpending_range(t, group, "-", "+", 100, consumername=name)) for t in TOPICS
        )

    a, b = processor("a"), processor("b")
    pipeline.adjust(ps[0], ws[0], 1, reason="one change")
    drain_relay_only(app)
    assert a.step() == 1 and turn.trickle  # a trickle: the next read lingers
    assert owed("a") == 1  # its ack goes with its next read

    lingered: list[float] = []

    def arrivals_during(seconds: float) -> None:
        lingered.append(seconds)
        for p in ps[1:]:
            pipeline.adjust(p, ws[0], 1, reason="during the linger")
        drain_relay_only(app)

    monkeypatch.setattr("stockctl.daemons.workers.processor.time.sleep", arrivals_during)
    assert b.step() == 3 and lingered == [0.005]  # one batch of the three that arrived
    monkeypatch.undo()

    with turn.lock:  # another thread is waiting on the streams
        assert a.step() == 0  # no turn within block_ms ...
        assert owed("a") == 0  # ... but its ack went out first
    assert owed("b") == 3
    b.close()  # a stopping processor sends what it owes
    assert owed("b") == 0 and lane.pending_and_lag() == (0, 0)

    # A backlog: after a full batch, reads no longer wait for their turn.
    for i in range(60):
        pipeline.adjust(ps[i % len(ps)], ws[0], 1, reason="backlog")
    drain_relay_only(app)
    assert a.step() == 50 and turn.backlog and not turn.trickle
    with turn.lock:
        assert b.step() == 10  # read at once although another thread holds the turn
    assert not turn.backlog and turn.trickle
    a.close()
    b.close()
    assert lane.pending_and_lag() == (0, 0)
    check_converged(pipeline, lane)


def drain_relay_only(app: App) -> None:
    from stockctl.daemons.workers.runner import Runner, WorkerOptions

    Runner(app, WorkerOptions(only=["relay"], burst=True)).run(handle_signals=False)


# -- poison entries and the dead-letter stream


def test_malformed_entries_are_dead_lettered_after_n_attempts(
    pipeline: Stockctl, lane: Lane, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "stockctl.daemons.workers.processor.RECOVER_EVERY_SECONDS", 0.1
    )  # retry sooner
    app = pipeline.app
    ps, ws = seed_stock(pipeline, 2, 1, 50)
    drain(app)
    bad = {  # (topic, entry id) -> why
        (ev.STOCK_UPDATED, lane.xadd(ev.STOCK_UPDATED, "not json")): "not JSON",
        (ev.STOCK_UPDATED, text_of(lane.client.xadd(ev.STOCK_UPDATED, {"x": "{}"}))): "no 'data'",
        (ev.STOCK_ADJUSTED, lane.xadd(ev.STOCK_ADJUSTED, '{"specversion": "1.0"}')): "attribute",
        (
            ev.ORDER_CANCELLED,
            lane.xadd(ev.ORDER_CANCELLED, envelope(ev.ORDER_CANCELLED, {"order_id": "a\tb"})),
        ): "order_id",
        (
            ev.STOCK_UPDATED,
            lane.xadd(
                ev.STOCK_UPDATED,
                envelope(ev.STOCK_UPDATED, {"product_id": ps[0], "warehouse_id": ws[0]}),
            ),
        ): "lacks",
    }
    pipeline.receive(ps[1], ws[0], 5)  # a good change beside them
    with Background(app, consumer="dlq", workers=1) as bg:
        wait_until(lambda: lane.client.xlen(DEAD_LETTER) >= len(bad), 20, "the dead letters")
        wait_until(lambda: settled(app, lane), 10, "pending to return to 0")
    processors = [j for j in bg.runner.jobs if isinstance(j, StreamProcessor)]
    assert sum(j.dead_lettered for j in processors) == len(bad)
    assert lane.pending_and_lag() == (0, 0)
    check_converged(pipeline, lane)  # the good change went through
    letters = {(f["topic"], f["entry_id"]): (i, f) for i, f in lane.entries(DEAD_LETTER)}
    assert set(letters) == set(bad)
    for key, why in bad.items():
        _, fields = letters[key]
        assert why in fields["reason"], fields
        assert fields["consumer"] == "dlq"
    not_json = letters[next(iter(bad))]
    assert not_json[1]["data"] == "not json"

    env = lane.env(pg_url)
    listed = cli(env, "events", "dlq", "list", "-o", "json")
    assert listed.code == 0, listed.err
    assert {(d["topic"], d["entry_id"]) for d in json.loads(listed.out)} == set(bad)
    # Replay puts an entry back on its topic; drop deletes one for good.
    first, second = (letters[k][0] for k in list(bad)[:2])
    replay = cli(env, "events", "dlq", "replay", first)
    assert replay.code == 0, replay.err
    assert lane.entries(ev.STOCK_UPDATED)[-1][1]["data"] == "not json"
    assert cli(env, "events", "dlq", "drop", second).code == 0
    assert cli(env, "events", "dlq", "drop", second).code == 2  # gone
    assert lane.client.xlen(DEAD_LETTER) == len(bad) - 2
    topics = {t.topic: t for t in lane.admin().lag(TOPICS)}
    assert topics[ev.STOCK_UPDATED].lag == 1  # the replayed entry, not read yet
    assert all(t.pending == 0 for t in topics.values())


def envelope(type_: str, data: dict[str, object], **extra: object) -> str:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "test",
            "type": type_,
            "datacontenttype": "application/json",
            "data": data,
            **extra,
        }
    )


# -- Redis unreachable


def test_changes_keep_committing_while_redis_is_unreachable_and_the_relay_catches_up(
    pg_url: str, pipeline: Stockctl, lane: Lane
) -> None:
    app = pipeline.app
    ps, ws = seed_stock(pipeline, 6, 2, 50)
    drain(app)
    # The relay pointed at a Redis that is not there; changes go on meanwhile.
    cut_off = stockctl.connect(pg_url, redis_url="redis://127.0.0.1:1/0", relay_poll_interval_ms=20)
    try:
        with Background(cut_off.app, only=["relay"], consumer="cut-off") as relay:
            backlog = []
            for wave in range(3):
                for i in range(40):
                    pipeline.receive(ps[i % len(ps)], ws[wave % 2], 1)
                time.sleep(0.2)
                backlog.append(app.store.outbox_backlog()[0])
            assert relay.runner.jobs[0].processed == 0
        assert backlog[0] >= 40 and backlog[0] < backlog[1] < backlog[2]
        for i in range(10):  # and the writers still commit after the relay gave up
            pipeline.adjust(ps[i % len(ps)], ws[1], -1, reason="x")
        assert app.store.outbox_backlog()[0] >= backlog[2] + 10
    finally:
        cut_off.close()
    # Redis back (the real URL): the relay catches up and the cache converges.
    drain(app)
    assert app.store.outbox_backlog() == (0, None)
    assert_published_exactly_once(app, lane)
    check_converged(pipeline, lane)


# -- what Dapr writes


def test_an_entry_written_the_way_dapr_writes_it_is_processed(
    pipeline: Stockctl, lane: Lane
) -> None:
    app = pipeline.app
    (p,), (w,) = seed_stock(pipeline, 1, 1, 10)
    drain(app)
    version = pipeline.stock(p, w).rows[0].version
    dapr = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "warehouse-service",
        "type": "com.dapr.event.sent",
        "topic": ev.STOCK_UPDATED,
        "pubsubname": "pubsub-redis",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "tracestate": "",
        "datacontenttype": "application/json",
        "data": {
            "product_id": p,
            "warehouse_id": w,
            "quantity_available": 77,
            "quantity_reserved": 7,
            "low_stock_threshold": 3,
            "version": version + 1,
        },
    }
    lane.xadd(ev.STOCK_UPDATED, json.dumps(dapr), metadata=json.dumps({"rawPayload": "false"}))
    drain(app)
    keys = app.cache().keys
    assert lane.get(keys.warehouse(p, w)) == "70"
    assert lane.get(keys.total(p)) == "77"
    assert lane.get(keys.status(p)) == "in_stock"
    cached = app.cache().get_products([p])[p]
    assert cached is not None and cached.rows[0].version == version + 1
    # A stock event's version guards it: no de-duplication marker (event_dedupe_markers).
    assert app.cache().processed([str(dapr["id"])]) == [False]
    assert lane.pending_and_lag() == (0, 0)


# -- order events release reservations


def test_order_cancelled_and_payment_failed_release_the_orders_reservations(
    pipeline: Stockctl, lane: Lane
) -> None:
    app = pipeline.app
    ps, ws = seed_stock(pipeline, 2, 2, 10)
    cancelled, failed, kept = new_id("O"), new_id("O"), new_id("O")
    held = {
        cancelled: [pipeline.reserve(ps[0], ws[0], 3, order_id=cancelled)],
        failed: [
            pipeline.reserve(ps[1], ws[1], 2, order_id=failed),
            pipeline.reserve(ps[0], ws[1], 1, order_id=failed),
        ],
        kept: [pipeline.reserve(ps[1], ws[0], 4, order_id=kept)],
    }
    pipeline.confirm(held[failed][0].id)  # a confirmed hold is released too
    drain(app)
    # Through the outbox, as a runbook would; and raw on the stream, as the order service would.
    catalog.publish(app.ctx, ev.ORDER_CANCELLED, {"order_id": cancelled})
    raw = envelope(ev.PAYMENT_FAILED, {"order_id": failed, "reason": "card declined"})
    lane.xadd(ev.PAYMENT_FAILED, raw)
    lane.xadd(ev.PAYMENT_FAILED, raw)  # delivered twice: released once
    drain(app)  # releases, which publish their own events ...
    drain(app)  # ... which reach the cache
    for order, holds in held.items():
        want = ReservationStatus.ACTIVE if order == kept else ReservationStatus.RELEASED
        for r in holds:
            assert pipeline.get_reservation(r.id).status is want, (order, r.id)
    assert pipeline.stock(ps[0]).total_reserved == 0
    assert pipeline.stock(ps[1]).total_reserved == 4  # the kept order's hold
    assert lane.pending_and_lag() == (0, 0)
    check_converged(pipeline, lane)
