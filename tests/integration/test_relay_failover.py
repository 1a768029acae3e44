"""After a Redis failover or restart (its masters' replication ids change) the relay publishes
again what it sent in the last ``REPUBLISH_WINDOW``: entries the old master took but never
handed to its replica are not lost. Older ones are not resent; no change, no resend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from stockctl.bootstrap import App, bootstrap
from stockctl.core.ports import OutboxEntry
from stockctl.daemons.workers import relay as relay_mod
from stockctl.daemons.workers.relay import OutboxRelay
from stockctl.settings import load_settings
from tests.conftest import new_id


@pytest.fixture
def app(database_url: str) -> Iterator[App]:
    built = bootstrap(load_settings(database_url=database_url))
    built.store.upgrade_schema()
    try:
        yield built
    finally:
        built.close()


def test_a_new_master_gets_the_last_window_again(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_mod, "LINEAGE_EVERY_SECONDS", 0.0)
    now = [datetime.now().astimezone()]
    masters = [frozenset({"replid-a"})]
    sent: list[str] = []

    def publish(entries: list[OutboxEntry]) -> None:
        sent.extend(e.event_id for e in entries)

    relay = OutboxRelay(
        app.store,
        publish,
        batch_size=100,
        poll_seconds=0.01,
        retention=timedelta(hours=1),
        clock=lambda: now[0],
        lineage=lambda: masters[0],
    )
    ctx, p, w = app.ctx, new_id("P"), new_id("W")
    from stockctl.core import inventory

    inventory.add_product(ctx, p)
    inventory.add_warehouse(ctx, w)
    inventory.receive(ctx, p, w, 5)  # published long ago (an hour before the failover)
    relay.step()
    old = list(sent)
    now[0] += timedelta(hours=1)
    inventory.receive(ctx, p, w, 1)  # published within the window
    relay.step()
    recent = sent[len(old) :]
    assert old and recent
    relay.step()  # the same masters: nothing again
    assert sent == old + recent and relay.republished == 0

    masters[0] = frozenset({"replid-b"})  # a failover promoted the replica
    now[0] += timedelta(seconds=5)
    relay.step()
    assert sent == old + recent + recent  # only the last window, once, in order
    assert relay.republished == len(recent)
    assert app.store.outbox_backlog()[0] == 0
    relay.step()
    assert sent == old + recent + recent


def test_a_redis_that_refuses_info_disables_the_watch_not_the_relay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A managed Redis may refuse INFO (renamed, or by ACL): the relay then cannot notice a
    failover, says so once, and goes on publishing."""
    import redis

    from stockctl.redis.bus import StreamPublisher
    from tests.redisutil import PrivateRedis

    with PrivateRedis() as server:
        admin = redis.Redis(port=server.port)
        admin.execute_command("ACL", "SETUSER", "noinfo", "on", ">pw", "~*", "+@all", "-info")
        full = StreamPublisher(admin, target="private")
        assert len(full.lineage()) == 1
        limited = StreamPublisher(
            redis.Redis(port=server.port, username="noinfo", password="pw"), target="private"
        )
        assert limited.lineage() == limited.lineage() == frozenset()
        warned = [r for r in caplog.records if "cannot watch for failovers" in r.getMessage()]
        assert len(warned) == 1
        limited.publish_raw("t-noinfo", "{}")  # publishing is unaffected
        assert admin.xlen("t-noinfo") == 1
        admin.close()
