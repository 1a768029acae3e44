"""The checks of runbook slow: batch processing time, the worker queue, the database's pool and
locks, hot-row merging, Redis latency and memory."""

from __future__ import annotations

from stockctl.core.diagnose.probe import Check, Probe, Runbook, Status, level


def processing_time(p: Probe, rb: Runbook) -> Check:
    t = p.thresholds
    times = [b.last_batch_seconds for b in p.heartbeats().values()]
    worst = max(times, default=0.0)
    return rb.check(
        "batch processing time",
        level(worst, t.batch_warn_s, t.batch_fail_s),
        f"{worst * 1000:.1f} ms (slowest worker's last batch)",
        f"warn {t.batch_warn_s:g} s, fail {t.batch_fail_s:g} s",
        "check Redis latency and database load below; lower --batch-size",
    )


def queue_fill(p: Probe, rb: Runbook) -> Check:
    pending = sum(int(x.get("pending") or 0) for x in p.topic_lag()) if p.uses_redis else 0
    cap = max(p.queue_capacity, 1)
    status = level(pending / cap, 0.8, 1.0)
    return rb.check(
        "in-flight entries vs queue",
        status,
        f"{pending} of {cap}",
        "warn 80%, fail 100%",
        "add workers or raise worker_queue_size",
    )


def database(p: Probe, rb: Runbook) -> list[Check]:
    t = p.thresholds
    act = p.db_activity()
    out = [
        rb.check(
            "database connections",
            level(act["used"] / max(act["max"], 1), t.pool_warn, 0.98),
            f"{act['used']} of {act['max']}",
            f"warn {t.pool_warn:.0%}",
            "raise max_connections or db_pool_max_open; look for leaks",
        )
    ]
    if "long_queries" in act:
        n = act["long_queries"]
        out.append(
            rb.check(
                f"queries running > {t.long_query_s:g} s",
                Status.WARN if n else Status.OK,
                n,
                "0",
                "inspect pg_stat_activity; check indexes and locks",
            )
        )
    return out


def reserve_merging(p: Probe, rb: Runbook) -> Check:
    """Merged reservations of hot rows, and sessions queued on a row lock (a hot row's sign)."""
    t = p.thresholds
    waits = p.db_activity().get("row_lock_waits")
    shown = p.reserve_merging
    if waits is not None:
        shown += f"; {waits} database sessions waiting on a row lock"
    off = not p.reserve_merging.startswith("on")
    hot = waits is not None and waits >= t.row_lock_waits_warn
    return rb.check(
        "reserve merging",
        Status.WARN if hot and off else Status.OK,
        shown,
        f"warn {t.row_lock_waits_warn} waiting while merging is off",
        "hot rows: set reserve_merge: true (merges concurrent reserves of one row)",
    )


def redis_latency(p: Probe, rb: Runbook) -> list[Check]:
    if not p.uses_redis:
        return [rb.check("redis", Status.OK, "not configured (embedded default)")]
    t = p.thresholds
    out = [rb.check("redis topology", Status.OK, p.redis_topology())]
    ms = p.redis_ping_ms()
    info = p.redis_info()
    used, cap = int(info.get("used_memory") or 0), int(info.get("maxmemory") or 0)
    out += [
        rb.check(
            "redis ping",
            level(ms, t.redis_ping_warn_ms, t.redis_ping_fail_ms),
            f"{ms:.2f} ms",
            f"warn {t.redis_ping_warn_ms:g} ms",
            "check Redis CPU (slowlog) and the network",
        )
    ]
    if cap:
        out.append(
            rb.check(
                "redis memory",
                level(used / cap, t.redis_memory_warn, t.redis_memory_fail),
                f"{used / cap:.0%} of maxmemory",
                f"warn {t.redis_memory_warn:.0%}",
                "raise maxmemory or lower cache_ttl_seconds",
            )
        )
    else:
        out.append(rb.check("redis memory", Status.OK, f"{used:,} bytes (no maxmemory)"))
    return out
