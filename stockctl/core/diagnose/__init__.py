"""The guide's troubleshooting runbooks as checks: each measures one thing, compares it with a
threshold and says what to do. A dependency that cannot be reached is a failed check, never a
crash.

The checks read through a ``Probe`` (``probe``); ``stockctl.ops.diagnostics`` wires it to the
real database, cache and streams. One module per runbook holds its checks; this one says which
check belongs to which runbook and runs them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from stockctl.core.diagnose.cache_misses import hit_rate, ttls, uncached
from stockctl.core.diagnose.consistency import cache_sample, overdue, reserved
from stockctl.core.diagnose.events import (
    backlog,
    dead_letters,
    dedupe_mode,
    group_lag,
    heartbeat,
    product_event,
    product_values,
)
from stockctl.core.diagnose.probe import Check, Probe, Runbook, Status
from stockctl.core.diagnose.queues import stream_lengths, stream_overflow, workers_alive
from stockctl.core.diagnose.slow import (
    database,
    processing_time,
    queue_fill,
    redis_latency,
    reserve_merging,
)
from stockctl.errors import StockctlError

RUNBOOKS: dict[str, list[Callable[[Probe, Runbook], Check | list[Check]]]] = {
    "stock-not-updating": [backlog, group_lag, heartbeat, dead_letters, dedupe_mode],
    "slow": [processing_time, queue_fill, database, reserve_merging, redis_latency],
    "cache-misses": [hit_rate, ttls, uncached],
    "queue-overflow": [stream_lengths, stream_overflow, queue_fill, dead_letters, workers_alive],
    "consistency": [reserved, overdue, cache_sample],
}


def run(probe: Probe, names: Sequence[str], product_id: str | None = None) -> list[Check]:
    """Run the runbooks; a check whose dependency fails becomes a failed check."""
    results: list[Check] = []
    for name in names:
        rb = Runbook(name, list(RUNBOOKS[name]), product_id)
        if name == "stock-not-updating" and product_id is not None:
            rb.checks = [product_values, product_event, *rb.checks]
        for check in rb.checks:
            results += _safe(check, probe, rb)
    return results


def _safe(
    check: Callable[[Probe, Runbook], Check | list[Check]], probe: Probe, rb: Runbook
) -> list[Check]:
    label = check.__name__.replace("_", " ")
    try:
        found = check(probe, rb)
    except StockctlError as exc:
        return [
            rb.check(
                label,
                Status.FAIL,
                f"unreachable: {exc}",
                remedy="stockctl health: bring the dependency back",
            )
        ]
    except Exception as exc:  # a broken check must not hide the others
        return [rb.check(label, Status.FAIL, f"check error {type(exc).__name__}: {exc}")]
    return found if isinstance(found, list) else [found]


def exit_code(checks: Sequence[Check]) -> int:
    if any(c.status is Status.FAIL for c in checks):
        return 2
    return 1 if any(c.status is Status.WARN for c in checks) else 0
