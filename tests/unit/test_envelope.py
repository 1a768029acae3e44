"""Incoming CloudEvents: what ``stockctl.core.envelope`` accepts, and everything it refuses.

Every refusal is an ``InvalidEvent`` (the processor dead-letters those); nothing else may escape
``parse``, whatever bytes arrive on a stream.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockctl.core.envelope import (
    DAPR_WRAPPED,
    MAX_ENVELOPE_BYTES,
    MAX_ID_LENGTH,
    Incoming,
    InvalidEvent,
    from_dict,
    parse,
)
from stockctl.core.events import CloudEvent


def envelope(**changes: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "specversion": "1.0",
        "id": "3f1c1f3e-0d7b-4e36-9d4f-3c5d0f1f8a10",
        "source": "stockctl/warehouse",
        "type": "warehouse.stock.updated",
        "time": "2024-05-01T10:00:00Z",
        "datacontenttype": "application/json",
        "subject": "P1",
        "data": {"product_id": "P1", "warehouse_id": "W1", "version": 3},
    }
    for key, value in changes.items():
        if value is _DROP:
            env.pop(key)
        else:
            env[key] = value
    return env


_DROP = object()


def raw(**changes: Any) -> str:
    return json.dumps(envelope(**changes))


def test_a_valid_envelope_is_parsed_from_text_and_from_bytes() -> None:
    for payload in (raw(), raw().encode()):
        event = parse(payload)
        assert event == Incoming(
            id="3f1c1f3e-0d7b-4e36-9d4f-3c5d0f1f8a10",
            type="warehouse.stock.updated",
            source="stockctl/warehouse",
            data={"product_id": "P1", "warehouse_id": "W1", "version": 3},
            subject="P1",
            time=datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
        )


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("2024-05-01T10:00:00.250+02:00", datetime(2024, 5, 1, 8, 0, 0, 250_000, tzinfo=UTC)),
        ("2024-05-01T10:00:00", None),  # no offset: not a point in time
        ("yesterday", None),
        (1714557600, None),
        (None, None),
    ],
)
def test_the_optional_time_is_read_when_it_is_a_timestamp(value: Any, parsed: Any) -> None:
    assert parse(raw(time=value)).time == parsed


def test_our_own_cloudevent_round_trips() -> None:
    ours = CloudEvent(
        id="e-1",
        type="order.cancelled",
        source="shop/orders",
        subject="O-7",
        time=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        data={"order_id": "O-7"},
    )
    event = parse(ours.to_json())
    assert (event.id, event.type, event.source, event.subject) == (
        "e-1",
        "order.cancelled",
        "shop/orders",
        "O-7",
    )
    assert event.data == {"order_id": "O-7"}


def test_optional_attributes_may_be_absent_and_extra_ones_are_ignored() -> None:
    event = parse(raw(subject=_DROP, data=_DROP, time=_DROP, traceparent="00-ab-cd-01", x=1))
    assert event.subject is None and event.data is None
    assert event.type == "warehouse.stock.updated"


@pytest.mark.parametrize("attr", ["id", "source", "type"])
@pytest.mark.parametrize("bad", [_DROP, "", None, 7, ["x"], {"a": 1}, "x" * (MAX_ID_LENGTH + 1)])
def test_required_attributes_must_be_short_non_empty_strings(attr: str, bad: Any) -> None:
    with pytest.raises(InvalidEvent, match=attr):
        parse(raw(**{attr: bad}))


@pytest.mark.parametrize("attr", ["id", "source", "type"])
def test_required_attributes_may_be_as_long_as_the_limit(attr: str) -> None:
    value = "x" * MAX_ID_LENGTH
    assert getattr(parse(raw(**{attr: value})), attr) == value


@pytest.mark.parametrize("version", [_DROP, None, "0.3", "1", 1.0, 1, "1.0 "])
def test_only_specversion_1_0_is_accepted(version: Any) -> None:
    with pytest.raises(InvalidEvent, match="specversion"):
        parse(raw(specversion=version))


@pytest.mark.parametrize("subject", [5, ["P1"], {"p": 1}, True])
def test_a_subject_must_be_a_string(subject: Any) -> None:
    with pytest.raises(InvalidEvent, match="subject"):
        parse(raw(subject=subject))


@pytest.mark.parametrize("payload", ["[]", '"text"', "42", "null", "true", '[{"id": "x"}]'])
def test_an_envelope_must_be_a_json_object(payload: str) -> None:
    with pytest.raises(InvalidEvent, match="not a JSON object"):
        parse(payload)


@pytest.mark.parametrize("payload", ["not json", "", "{", b"\xff\xfe\x00garbage", "{'id': 1}"])
def test_text_that_is_not_json_is_refused(payload: str | bytes) -> None:
    with pytest.raises(InvalidEvent, match="not JSON"):
        parse(payload)


def test_deeply_nested_json_is_refused_not_a_crash() -> None:
    # A poison entry: json.loads raises RecursionError on it, which must not escape.
    for payload in ("[" * 100_000, '{"a":' * 100_000):
        with pytest.raises(InvalidEvent):
            parse(payload)


def test_an_envelope_over_the_size_limit_is_refused() -> None:
    pad = "x" * MAX_ENVELOPE_BYTES
    with pytest.raises(InvalidEvent, match="larger"):
        parse(raw(data={"pad": pad}))
    with pytest.raises(InvalidEvent, match="larger"):
        parse(raw(data={"pad": pad}).encode())


def test_the_size_limit_counts_bytes_not_characters() -> None:
    # 700,000 two-byte characters: under the limit in characters, 1.4 MB on the wire.
    text = json.dumps(envelope(data={"pad": "é" * 700_000}), ensure_ascii=False)
    assert len(text) < MAX_ENVELOPE_BYTES < len(text.encode())
    with pytest.raises(InvalidEvent, match="larger"):
        parse(text)
    with pytest.raises(InvalidEvent):  # lone surrogates cannot even be encoded: still refused
        parse('"' + "\ud800" * 300_000 + '"')


def test_an_envelope_just_under_the_limit_is_accepted() -> None:
    base = len(raw(data={"pad": ""}).encode())
    text = raw(data={"pad": "x" * (MAX_ENVELOPE_BYTES - base)})
    assert len(text.encode()) == MAX_ENVELOPE_BYTES
    assert parse(text).data["pad"].startswith("x")


def dapr(**changes: Any) -> dict[str, Any]:
    """An envelope as a Dapr sidecar writes it when an app publishes plain data."""
    env = envelope(
        type=DAPR_WRAPPED,
        source="warehouse-service",
        topic="warehouse.stock.updated",
        pubsubname="pubsub-redis",
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        tracestate="",
        subject=_DROP,
    )
    env.update(changes)
    return env


def test_a_dapr_wrapped_event_is_typed_as_its_topic() -> None:
    event = parse(json.dumps(dapr()), topic="warehouse.stock.updated")
    assert event.type == "warehouse.stock.updated"
    assert event.source == "warehouse-service"
    assert event.data == {"product_id": "P1", "warehouse_id": "W1", "version": 3}


def test_the_dapr_topic_attribute_wins_over_the_stream_name() -> None:
    event = from_dict(dapr(topic="order.cancelled"), topic="warehouse.stock.updated")
    assert event.type == "order.cancelled"


def test_a_dapr_event_without_topic_attribute_takes_the_stream_name() -> None:
    env = dapr()
    del env["topic"]
    assert from_dict(env, topic="payment.failed").type == "payment.failed"


@pytest.mark.parametrize("topic", [None, "", 5])
def test_a_dapr_event_without_any_topic_is_refused(topic: Any) -> None:
    with pytest.raises(InvalidEvent, match="topic"):
        from_dict(dapr(topic=topic))


def test_a_non_dapr_event_keeps_its_own_type_whatever_the_stream() -> None:
    event = from_dict(envelope(type="warehouse.stock.reserved"), topic="warehouse.stock.updated")
    assert event.type == "warehouse.stock.reserved"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(payload=st.one_of(st.binary(max_size=200), st.text(max_size=200), _json.map(json.dumps)))
def test_anything_on_the_wire_parses_or_is_invalid(payload: str | bytes) -> None:
    try:
        event = parse(payload)
    except InvalidEvent:
        return
    assert isinstance(event.id, str) and isinstance(event.type, str)


@settings(max_examples=100, deadline=None)
@given(
    changes=st.dictionaries(
        st.sampled_from(["specversion", "id", "source", "type", "subject", "topic", "data"]),
        _json,
        max_size=4,
    )
)
def test_mutated_envelopes_parse_or_are_invalid(changes: dict[str, Any]) -> None:
    try:
        event = from_dict(dapr(**changes) if "topic" in changes else envelope(**changes))
    except InvalidEvent:
        return
    assert event.type and event.id and event.source
