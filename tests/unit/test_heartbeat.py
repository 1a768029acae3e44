"""``stockctl.core.heartbeat``: one encoding of a worker's heartbeat, read back by every
reader; an unreadable one is a typed refusal, never a crash of the reader."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockctl.core.heartbeat import Heartbeat, InvalidHeartbeat, JobState, decode_all
from stockctl.daemons.workers.health import assess

names = st.text("abcdefgh", min_size=1, max_size=8)
seconds = st.floats(0, 2e9, allow_nan=False)
beats = st.builds(
    Heartbeat,
    consumer=names,
    pid=st.integers(1, 2**22),
    host=names,
    at=seconds,
    jobs=st.dictionaries(names, st.integers(0, 10**9), max_size=4),
    workers=st.integers(0, 256),
    last_batch_seconds=st.floats(0, 1e4, allow_nan=False),
    health=st.dictionaries(
        names,
        st.builds(JobState, st.none() | seconds, st.none() | seconds, st.none() | names),
        max_size=4,
    ),
)


@given(beats)
def test_a_heartbeat_round_trips(beat: Heartbeat) -> None:
    assert Heartbeat.decode(beat.encode()) == beat


@pytest.mark.parametrize("raw", ["", "not json", "[1, 2]", '{"at": "soon"}', '{"jobs": 3}'])
def test_an_unreadable_heartbeat_is_refused_by_type(raw: str) -> None:
    with pytest.raises(InvalidHeartbeat):
        Heartbeat.decode(raw)
    assert decode_all({"w1": raw}) == {}


def test_a_beat_from_an_older_worker_without_the_newer_fields_still_reads() -> None:
    beat = Heartbeat.decode('{"consumer": "c1", "pid": 7, "host": "h", "at": 100.5}')
    assert (beat.consumer, beat.at, beat.jobs, beat.health) == ("c1", 100.5, {}, {})


def test_assess_reads_the_same_encoding() -> None:
    now = 1000.0
    stuck = Heartbeat("c1", 1, "h", now - 1, health={"relay": JobState(None, now - 90, "boom")})
    old = Heartbeat("c2", 2, "h", now - 100)
    problems = assess({"a:c1": stuck.encode(), "a:c2": old.encode(), "a:c3": "?"}, now, 60, 30)
    assert problems == [
        "a:c1: relay failing for 90 s: boom",
        "a:c2: heartbeat 100 s old",
        "a:c3: heartbeat is not JSON",
    ]
