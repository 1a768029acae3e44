"""``observe_many`` leaves a histogram exactly as one ``observe`` per value does."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram

from stockctl.daemons.metrics import LATENCY_BUCKETS, observe_many


def _samples(h: Histogram) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), s.value)
        for m in h.collect()
        for s in m.samples
        if not s.name.endswith("_created")
    ]


def test_observe_many_equals_observe_one_by_one() -> None:
    rnd = random.Random(3)
    values = [0.0, 0.001, 0.0025, 5.0, 7.5, *(rnd.expovariate(50) for _ in range(500))]
    one = Histogram("one", "x", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    many = Histogram("one", "x", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    for v in values:
        one.observe(v)
    observe_many(many, values)
    observe_many(many, [])
    got, want = _samples(many), _samples(one)
    assert [(n, lab) for n, lab, _ in got] == [(n, lab) for n, lab, _ in want]
    for (_, _, a), (_, _, b) in zip(got, want, strict=True):
        assert abs(a - b) < 1e-9
