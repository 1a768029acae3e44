"""The reservation expiry sweeper as a worker job."""

from __future__ import annotations

import threading

from stockctl.core import lifecycle
from stockctl.core.context import Context

SWEEP_LIMIT = 1000


class ExpirySweeper:
    name = "expiry"

    def __init__(self, ctx: Context, interval_seconds: float) -> None:
        self.ctx = ctx
        self.interval = interval_seconds
        self.processed = 0

    def step(self) -> int:
        expired = lifecycle.expire_due(self.ctx, limit=SWEEP_LIMIT)
        self.processed += expired
        return expired if expired == SWEEP_LIMIT else 0  # a full sweep: go again at once

    def idle(self, stop: threading.Event) -> None:
        stop.wait(self.interval)

    def close(self) -> None:
        """Nothing of its own to close."""
