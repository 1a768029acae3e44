"""The checks of runbook cache-misses: the hit rate, the keys' TTLs, the share of products not in
the cache."""

from __future__ import annotations

from stockctl.core.diagnose.probe import Check, Probe, Runbook, Status, level


def hit_rate(p: Probe, rb: Runbook) -> list[Check]:
    t = p.thresholds
    rate, reads = p.hit_rate()
    out = []
    if rate is None:
        out.append(rb.check("hit rate", Status.OK, "no reads counted yet"))
    else:
        out.append(
            rb.check(
                "hit rate",
                level(rate, t.hit_rate_warn, t.hit_rate_fail, higher_is_worse=False),
                f"{rate:.1%} of {reads:,} reads",
                f"warn < {t.hit_rate_warn:.0%}",
                "warm it: stockctl warm-cache; raise cache_ttl_seconds",
            )
        )
    if p.uses_redis:
        info = p.redis_info()
        hits, misses = int(info.get("keyspace_hits") or 0), int(info.get("keyspace_misses") or 0)
        if hits + misses:
            r = hits / (hits + misses)
            out.append(
                rb.check(
                    "redis keyspace hit rate",
                    level(r, t.hit_rate_warn, t.hit_rate_fail, False),
                    f"{r:.1%}",
                    f"warn < {t.hit_rate_warn:.0%}",
                    "stockctl warm-cache",
                )
            )
        evicted = int(info.get("evicted_keys") or 0)
        out.append(
            rb.check(
                "evicted keys",
                Status.WARN if evicted else Status.OK,
                evicted,
                "0",
                "Redis is evicting: raise maxmemory",
            )
        )
    return out


def ttls(p: Probe, rb: Runbook) -> Check:
    t = p.thresholds
    sample = p.ttl_sample()
    if not sample:
        return rb.check(
            "stock key TTLs", Status.WARN, "no stock keys cached", remedy="stockctl warm-cache"
        )
    short = sum(1 for s in sample if 0 <= s < t.ttl_warn_s)
    frac = short / len(sample)
    return rb.check(
        "stock key TTLs",
        Status.WARN if frac > 0.5 else Status.OK,
        f"{frac:.0%} of {len(sample)} sampled keys expire within {t.ttl_warn_s} s "
        f"(min {min(sample)} s)",
        "most keys longer",
        "raise cache_ttl_seconds (0 = no expiry); keep the sync job running",
    )


def uncached(p: Probe, rb: Runbook) -> list[Check]:
    t = p.thresholds
    frac, sampled = p.uncached_fraction()
    since = p.seconds_since_warm()
    return [
        rb.check(
            "products with no cache entry",
            level(frac, t.uncached_warn, 0.5),
            f"{frac:.0%} of {sampled} sampled",
            f"warn {t.uncached_warn:.0%}",
            "stockctl warm-cache",
        ),
        rb.check(
            "last warm",
            Status.OK if since is not None else Status.WARN,
            "never" if since is None else f"{since / 60:.0f} min ago",
            remedy="stockctl warm-cache (or set warm_on_start)",
        ),
    ]
