"""One place that wires adapters from settings. Nothing is created at import time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from stockctl.core.context import Context
from stockctl.settings import Settings
from stockctl.store.engine import create_store_engine
from stockctl.store.sql import SqlStore


@dataclass
class App:
    settings: Settings
    store: SqlStore
    ctx: Context

    def close(self) -> None:
        self.store.close()


def build_store(settings: Settings) -> SqlStore:
    engine = create_store_engine(settings.database_url.get_secret_value(), settings)
    replica = None
    if settings.database_replica_url is not None:
        replica = create_store_engine(settings.database_replica_url.get_secret_value(), settings)
    return SqlStore(engine, replica)


def bootstrap(settings: Settings) -> App:
    store = build_store(settings)
    ctx = Context(
        store=store,
        source=settings.event_source,
        actor=settings.actor,
        reservation_ttl=timedelta(seconds=settings.reservation_ttl_seconds),
        reservation_max_ttl=timedelta(seconds=settings.reservation_max_ttl_seconds),
        idempotency_window=timedelta(seconds=settings.idempotency_window_seconds),
        allocation_strategy=settings.allocation_strategy,
    )
    return App(settings=settings, store=store, ctx=ctx)
