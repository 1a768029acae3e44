"""The checks of runbook queue-overflow: stream lengths against their cap, trimmed events, live
workers (with ``slow``'s queue fill and ``events``' dead letters)."""

from __future__ import annotations

from stockctl.core.diagnose.probe import Check, Probe, Runbook, Status, level


def stream_lengths(p: Probe, rb: Runbook) -> list[Check]:
    if not p.uses_redis:
        return [rb.check("streams", Status.OK, "embedded: the outbox is the log")]
    out = []
    for topic in p.topic_lag():
        length = int(topic.get("length") or 0)
        if p.stream_maxlen:
            status = level(length / p.stream_maxlen, 0.9, 1.0)
            out.append(
                rb.check(
                    f"length {topic['topic']}",
                    status,
                    f"{length} of MAXLEN {p.stream_maxlen}",
                    "warn 90%",
                    "entries beyond MAXLEN are trimmed unread: add workers",
                )
            )
        for consumer, idle_ms in (topic.get("consumers") or {}).items():
            if idle_ms > 60_000 and topic.get("pending"):
                out.append(
                    rb.check(
                        f"consumer {consumer}",
                        Status.WARN,
                        f"idle {idle_ms / 1000:.0f} s with entries pending",
                        remedy="a live worker reclaims them (XAUTOCLAIM)",
                    )
                )
    return out or [rb.check("streams", Status.OK, "no MAXLEN set; nothing trimmed")]


def stream_overflow(p: Probe, rb: Runbook) -> Check:
    """Fail when a stream is at MAXLEN and its group still lags (unread entries get trimmed)."""
    if not p.uses_redis or not p.stream_maxlen:
        return rb.check("overflow", Status.OK, "no MAXLEN trimming configured")
    full = [
        t["topic"]
        for t in p.topic_lag()
        if int(t.get("length") or 0) >= p.stream_maxlen and (t.get("lag") or 0)
    ]
    return rb.check(
        "overflow",
        Status.FAIL if full else Status.OK,
        ", ".join(full) or "none",
        "no stream full while lagging",
        "add workers now; raise stream_maxlen",
    )


def workers_alive(p: Probe, rb: Runbook) -> Check:
    alive = len(p.heartbeats())
    return rb.check(
        "workers alive",
        Status.OK if alive else Status.FAIL,
        alive,
        "at least 1",
        "stockctl worker run",
    )
