"""The checks of runbook stock-not-updating: is the outbox relayed, are the consumer groups keeping
up, are the workers beating, did a product's last event reach the cache?"""

from __future__ import annotations

from stockctl.core.diagnose.probe import Check, Probe, Runbook, Status, level


def backlog(p: Probe, rb: Runbook) -> Check:
    count, age = p.outbox_backlog()
    t = p.thresholds
    status = level(age, t.backlog_age_warn_s, t.backlog_age_fail_s) if count else Status.OK
    remedy = (
        "start the relay: stockctl worker run --only relay"
        if p.uses_redis  # embedded: the processor job reads the outbox itself (no relay)
        else "start the worker (it reads the outbox): stockctl worker run, or stockctl up"
    )
    return rb.check(
        "outbox backlog",
        status,
        f"{count} rows, oldest {age:.1f} s",
        f"warn {t.backlog_age_warn_s:g} s, fail {t.backlog_age_fail_s:g} s",
        remedy,
    )


def group_lag(p: Probe, rb: Runbook) -> list[Check]:
    if not p.uses_redis:
        return [rb.check("consumer lag", Status.OK, "embedded: the outbox backlog is the lag")]
    t = p.thresholds
    out = []
    for topic in p.topic_lag():
        if topic.get("lag") is None and topic.get("length"):
            out.append(
                rb.check(
                    f"group on {topic['topic']}",
                    Status.FAIL,
                    f"{topic['length']} entries and no consumer group reading them",
                    "a group",
                    "start a worker (it creates the group at 0): stockctl worker run",
                )
            )
            continue
        lag = int(topic.get("lag") or 0) + int(topic.get("pending") or 0)
        if lag == 0 and not topic.get("length"):
            continue
        status = level(lag, t.lag_warn, t.lag_fail)
        idle = topic.get("consumers") or {}
        out.append(
            rb.check(
                f"lag {topic['topic']}",
                status,
                f"{topic.get('lag')} undelivered, {topic.get('pending')} pending, "
                f"{len(idle)} consumer(s)",
                f"warn {t.lag_warn}, fail {t.lag_fail}",
                "add workers: stockctl worker run --only processor (processes share the group)",
            )
        )
    return out or [rb.check("consumer lag", Status.OK, "0 on every topic")]


def heartbeat(p: Probe, rb: Runbook) -> Check:
    beats = p.heartbeats()
    fresh = len(beats)
    status = Status.OK if fresh else Status.FAIL
    return rb.check(
        "worker heartbeat",
        status,
        f"{fresh} live worker(s)",
        "at least 1",
        "start a worker: stockctl worker run",
    )


def dead_letters(p: Probe, rb: Runbook) -> Check:
    if not p.uses_redis:
        return rb.check("dead letters", Status.OK, "embedded: none kept")
    n = p.dead_letters()
    return rb.check(
        "dead letters",
        Status.WARN if n else Status.OK,
        n,
        "0",
        "inspect: stockctl events dlq list; then replay or drop each",
    )


def product_values(p: Probe, rb: Runbook) -> list[Check]:
    assert rb.product_id is not None
    out = []
    for row in p.db_vs_cache(rb.product_id):
        same = row["cache"] == row["db"]
        out.append(
            rb.check(
                f"{rb.product_id}@{row['warehouse_id']}",
                Status.OK if same else Status.FAIL,
                f"database {row['db']}, cache {row['cache']}",
                "equal",
                f"repair: stockctl cache verify --products {rb.product_id} --repair",
            )
        )
    return out or [
        rb.check(
            f"{rb.product_id} rows",
            Status.FAIL,
            "no inventory rows",
            remedy=f"check the id: stockctl stock show {rb.product_id}",
        )
    ]


def product_event(p: Probe, rb: Runbook) -> list[Check]:
    assert rb.product_id is not None
    last = p.last_event(rb.product_id)
    if last is None:
        return [
            rb.check(
                "last event",
                Status.WARN,
                "no event in the outbox for this product",
                remedy="a change that committed always writes one: check the writer",
            )
        ]
    out = [
        rb.check(
            "last event in outbox",
            Status.OK if last["published"] else Status.WARN,
            f"{last['type']} {last['id']} ({'published' if last['published'] else 'unpublished'})",
            remedy="start the relay: stockctl worker run --only relay",
        )
    ]
    if p.uses_redis and last["published"]:
        seen = p.event_in_stream(rb.product_id, last["id"])
        out.append(
            rb.check(
                "last event in stream",
                Status.OK if seen else Status.WARN,
                "found" if seen else "not among the stream's recent entries",
                remedy="stockctl events tail to watch; stream may be trimmed",
            )
        )
    processed = p.event_processed(last["id"])
    out.append(
        rb.check(
            "event applied",
            Status.OK if processed else Status.FAIL,
            "yes" if processed else "no",
            remedy="the processor has not applied it: stockctl worker run",
        )
    )
    return out


def dedupe_mode(p: Probe, rb: Runbook) -> Check:
    """Which events get a catalog:event:processed:{id} marker (informational)."""
    if p.dedupe_markers == "all":
        shown = "every event gets a 24 h marker (event_dedupe_markers: all, the guide's way)"
    else:
        shown = (
            "markers only for events without a row version; stock events are de-duplicated "
            "by their version (event_dedupe_markers: unversioned)"
        )
    return rb.check("event de-duplication", Status.OK, shown)
