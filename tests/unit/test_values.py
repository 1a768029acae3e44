"""The one definition of a valid value per kind (stockctl.core.values)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from stockctl.core import values as v
from stockctl.errors import InvalidInput

FORBIDDEN = ["\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\x9f", "\xad", "\u061c",
             "\u200b", "\u200e", "\u200f", "\u2028", "\u2029", "\u202a", "\u202e", "\u2066",
             "\u2069", "\u2060", "\ufeff", "\ud800", "\udfff"]  # fmt: skip


@pytest.mark.parametrize("bad", [True, False, 5.0, 1.5, "5", " 5", None, [5], 0, -1, 2**31])
def test_a_quantity_is_an_int_in_range_and_nothing_else(bad: Any) -> None:
    with pytest.raises(InvalidInput):
        v.check_quantity(bad)


def test_quantities_deltas_and_ttls_take_their_bounds() -> None:
    assert v.check_quantity(1) == 1 and v.check_quantity(v.MAX_QUANTITY) == v.MAX_QUANTITY
    assert v.check_quantity(0, allow_zero=True) == 0
    assert v.check_delta(-v.MAX_QUANTITY) == -v.MAX_QUANTITY
    assert v.check_ttl_seconds(v.MAX_TTL_SECONDS) == v.MAX_TTL_SECONDS
    for bad in (0, True, "5", 5.0, v.MAX_QUANTITY + 1):
        with pytest.raises(InvalidInput):
            v.check_delta(bad)
    for bad in (0, "60", 60.0, True, v.MAX_TTL_SECONDS + 1):
        with pytest.raises(InvalidInput):
            v.check_ttl_seconds(bad)


@pytest.mark.parametrize("text", ["12", "-5", "0", "999999999999"])
def test_whole_numbers_typed_on_the_command_line(text: str) -> None:
    assert v.parse_whole(text, "quantity") == int(text)


@pytest.mark.parametrize("bad", [" 5", "5 ", "+5", "5.0", "1_000", "²", "٥", "", "-", "1e3",
                                 "0x10", "1234567890123"])  # fmt: skip
def test_whole_numbers_refuse_what_int_would_take(bad: str) -> None:
    with pytest.raises(InvalidInput, match="whole number"):
        v.parse_whole(bad, "quantity")


@pytest.mark.parametrize("char", FORBIDDEN)
def test_text_refuses_control_invisible_and_bidi_characters(char: str) -> None:
    for check in (
        lambda t: v.check_reason(t, required=True),
        v.check_reference,
        v.check_order_id,
        v.check_actor,
        v.check_name,
        v.check_idempotency_key,
    ):
        with pytest.raises(InvalidInput, match="control or invisible") as info:
            check(f"a{char}b")
        assert "\n" not in str(info.value)


def test_text_takes_any_language_and_emoji() -> None:
    for ok in ("Schäden", "破损", "تلف", "👩‍👩‍👧", "क्‍ष", "R-2024/07 #3"):
        assert v.check_reason(ok, required=True) == ok


def test_text_bounds_and_blanks() -> None:
    assert v.check_reason("  x  ", required=True) == "x"
    assert v.check_reference("   ") is None and v.check_reason(None, required=False) is None
    with pytest.raises(InvalidInput, match="required"):
        v.check_reason(" ", required=True)
    for check, most in ((v.check_order_id, 128), (v.check_idempotency_key, 200)):
        with pytest.raises(InvalidInput):
            check(" ")
        with pytest.raises(InvalidInput, match=f"1-{most}"):
            check("x" * (most + 1))
    with pytest.raises(InvalidInput, match="text"):
        v.check_reference(5)


def test_the_text_pattern_of_the_openapi_document_agrees_with_the_check() -> None:
    import re

    pattern = re.compile(v.TEXT_PATTERN)
    for char in FORBIDDEN:
        assert not pattern.match(f"a{char}b")
    assert pattern.match("Schäden 👩‍👩‍👧")


@pytest.mark.parametrize(
    "good", ["2024-11-09T00:00:00Z", "2024-11-09T01:02:03.5+01:00", "2024-11-09t00:00:00z"]
)
def test_timestamps_are_rfc_3339_with_a_zone(good: str) -> None:
    assert v.check_timestamp(good).tzinfo is not None


@pytest.mark.parametrize(
    "bad",
    [0, 1700000000, 1.5, True, None, "0", "2024-11-09", "2024-11-09T00:00:00", "20241109T000000Z",
     "2024-13-01T00:00:00Z", "2024-02-30T00:00:00Z", " 2024-11-09T00:00:00Z", "yesterday",
     datetime(2024, 1, 1)],
)  # fmt: skip
def test_timestamps_refuse_numbers_naive_and_loose_times(bad: Any) -> None:
    with pytest.raises(InvalidInput, match="since"):
        v.check_timestamp(bad)


def test_an_aware_datetime_is_a_timestamp() -> None:
    now = datetime.now(UTC)
    assert v.check_timestamp(now) is now


@pytest.mark.parametrize(
    "bad",
    ["", "  ", "postgresql://u:pw@127.0.0.1:abc/x", "postgresql://u:pw@127.0.0.1:1:2/x",
     "postgresql://u:pw@h:0/x", "postgresql://u:pw@h:65536/x", "postgresql://u:pw@[::1]:x/d",
     "mysql://u@h/x", "http://h/x", "postgresql://u:pw@h/x\x00", "postgresql://u:pw@h /x",
     "postgresql://u:pw@[::1/x", "sqlite:///x\u202e.db"],
)  # fmt: skip
def test_database_urls_are_checked_before_anything_connects(bad: str) -> None:
    with pytest.raises(InvalidInput) as info:
        v.check_database_url(bad)
    assert "pw" not in str(info.value)


@pytest.mark.parametrize(
    "good",
    ["sqlite:////tmp/x.db", "postgresql://u:pw@h:5432/x", "postgres://h/x",
     "postgresql+psycopg://u@[::1]:5433/x", "postgresql://h/x?sslmode=require", "sqlite:///a b.db"],
)  # fmt: skip
def test_good_database_urls(good: str) -> None:
    assert v.check_database_url(good) == good
