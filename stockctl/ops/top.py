"""What ``stockctl top`` shows: rates from two samples a second apart, and current state."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.table import Table

from stockctl.bootstrap import App
from stockctl.core.heartbeat import decode_all


@dataclass
class Frame:
    at: float
    outbox_rows: int
    processed: int
    backlog: int
    lag: dict[str, tuple[int, int]] = field(default_factory=dict)
    hit_rate: float | None = None
    holding: int = 0
    expiring: int = 0
    low_stock: int = 0
    workers: dict[str, float] = field(default_factory=dict)
    rate_in: float = 0.0
    rate_out: float = 0.0


class Sampler:
    def __init__(self, app: App) -> None:
        self.app = app
        self.previous: Frame | None = None

    def sample(self) -> Frame:
        from datetime import timedelta

        app = self.app
        backlog, _ = app.store.outbox_backlog()
        beats = decode_all(app.cache().heartbeats(f"{app.settings.app_id}:"))
        processed = sum(b.jobs.get("processor", 0) for b in beats.values())
        now = app.ctx.clock()
        stats = app.store.reservation_stats(now, now + timedelta(minutes=1))
        cache_stats = app.cache().stats()
        frame = Frame(
            at=time.monotonic(),
            outbox_rows=app.store.outbox_max_id(),
            processed=processed,
            backlog=backlog,
            hit_rate=_float(cache_stats.get("stock_hit_rate")),
            holding=stats["holding"],
            expiring=stats["expiring_soon"],
            low_stock=sum(t.low_stock + t.out_of_stock for t in app.store.warehouse_totals()),
            workers={k: b.age(time.time()) for k, b in beats.items()},
        )
        if app.uses_redis:
            from stockctl.core.catalog import TOPICS

            admin = app.stream_admin()
            frame.lag = {t.topic: (t.lag or 0, t.pending) for t in admin.lag(TOPICS) if t.length}
        if self.previous is not None:
            dt = max(frame.at - self.previous.at, 1e-6)
            frame.rate_in = (frame.outbox_rows - self.previous.outbox_rows) / dt
            frame.rate_out = max(frame.processed - self.previous.processed, 0) / dt
        self.previous = frame
        return frame


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def render(f: Frame) -> Group:
    head = Table.grid(padding=(0, 3))
    head.add_row(
        f"events in [bold]{f.rate_in:,.0f}/s[/]",
        f"processed [bold]{f.rate_out:,.0f}/s[/]",
        f"outbox backlog [bold]{f.backlog:,}[/]",
        "hit rate [bold]" + ("-" if f.hit_rate is None else f"{f.hit_rate:.1%}") + "[/]",
    )
    head.add_row(
        f"reservations holding [bold]{f.holding:,}[/]",
        f"expiring < 1 min [bold]{f.expiring:,}[/]",
        f"low/out-of-stock rows [bold]{f.low_stock:,}[/]",
        f"workers [bold]{len(f.workers)}[/]",
    )
    parts: list[Any] = [head]
    if f.lag:
        lag = Table(title="lag per topic", title_justify="left")
        for col in ("topic", "undelivered", "pending"):
            lag.add_column(col)
        for topic, (undelivered, pending) in sorted(f.lag.items()):
            lag.add_row(topic, str(undelivered), str(pending))
        parts.append(lag)
    if f.workers:
        workers = Table(title="worker heartbeats", title_justify="left")
        workers.add_column("worker")
        workers.add_column("last beat")
        for name, age in sorted(f.workers.items()):
            workers.add_row(name, f"{age:.1f} s ago")
        parts.append(workers)
    return Group(*parts)
