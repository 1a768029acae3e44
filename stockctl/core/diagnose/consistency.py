"""The checks of runbook consistency: reserved quantities against the holds, overdue holds, the
cache against the database."""

from __future__ import annotations

from stockctl.core.diagnose.probe import Check, Probe, Runbook, Status


def reserved(p: Probe, rb: Runbook) -> Check:
    drift = p.reserved_drift()
    return rb.check(
        "reserved counters vs holds",
        Status.FAIL if drift else Status.OK,
        ", ".join(drift[:5]) + (" ..." if len(drift) > 5 else "") or "consistent",
        "0 rows",
        "stockctl stock verify --repair",
    )


def overdue(p: Probe, rb: Runbook) -> Check:
    n = p.overdue_reservations()
    return rb.check(
        "expired but still ACTIVE",
        Status.WARN if n else Status.OK,
        n,
        "0",
        "run the sweeper: stockctl reservations expire (or worker --only expiry)",
    )


def cache_sample(p: Probe, rb: Runbook) -> Check:
    drift = p.cache_drift_sample()
    return rb.check(
        "cache vs database (sample)",
        Status.FAIL if drift else Status.OK,
        ", ".join(drift[:5]) + (" ..." if len(drift) > 5 else "") or "no drift",
        "0",
        "stockctl cache verify --all --repair",
    )
