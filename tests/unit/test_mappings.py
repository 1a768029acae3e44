"""``stockctl.core.mappings``: each model to its edge names and back, losslessly, whether the
times travel as datetimes (CLI, API models) or as ISO text (idempotent answers, HTTP JSON)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from stockctl.core import mappings as mp
from stockctl.core.model import Inventory, Movement, MovementKind, Reservation, ReservationStatus

ids = st.from_regex(r"[A-Z][A-Z0-9]{0,9}", fullmatch=True)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
counts = st.integers(0, 10**9)


@st.composite
def rows(draw: st.DrawFn) -> Inventory:
    on_hand = draw(counts)
    return Inventory(
        draw(ids),
        draw(ids),
        on_hand,
        draw(st.integers(0, on_hand)),
        draw(st.integers(0, 10**6)),
        draw(st.integers(0, 10**9)),
        draw(st.none() | times),
        id=draw(st.none() | st.integers(1, 2**62)),
    )


reservations = st.builds(
    Reservation,
    id=st.integers(1, 2**63 - 1),
    product_id=ids,
    warehouse_id=ids,
    quantity=st.integers(1, 10**6),
    status=st.sampled_from(list(ReservationStatus)),
    created_at=times,
    expires_at=times,
    updated_at=times,
    order_id=st.none() | ids,
)
movements = st.builds(
    Movement,
    product_id=ids,
    warehouse_id=ids,
    kind=st.sampled_from(list(MovementKind)),
    delta_on_hand=st.integers(-(10**9), 10**9),
    delta_reserved=st.integers(-(10**9), 10**9),
    on_hand=counts,
    reserved=counts,
    version=st.integers(1, 10**9),
    created_at=times,
    reason=st.none() | st.text(max_size=20),
    reference=st.none() | st.text(max_size=20),
    reservation_id=st.none() | st.integers(1, 2**63 - 1),
    actor=st.none() | st.text(max_size=20),
    id=st.none() | st.integers(1, 2**62),
)


def over_the_wire(fields: dict[str, object]) -> dict[str, object]:
    decoded: dict[str, object] = json.loads(json.dumps(mp.to_json(fields)))
    return decoded


@given(rows())
def test_a_row_round_trips_and_carries_its_derived_fields(row: Inventory) -> None:
    fields = mp.row_fields(row)
    assert fields["sellable"] == row.sellable and fields["status"] == row.status.value
    assert mp.row_from(fields) == row
    assert mp.row_from(over_the_wire(fields)) == row


@given(reservations)
def test_a_reservation_round_trips(r: Reservation) -> None:
    assert mp.reservation_from(mp.reservation_fields(r)) == r
    assert mp.reservation_from(over_the_wire(mp.reservation_fields(r))) == r


@given(movements)
def test_a_ledger_line_round_trips(m: Movement) -> None:
    assert mp.movement_from(mp.movement_fields(m)) == m
    assert mp.movement_from(over_the_wire(mp.movement_fields(m))) == m


def test_the_edge_names_are_the_seeds() -> None:
    row = Inventory("P1", "W1", 5, 2, 1, 3, None, id=7)
    assert list(mp.row_fields(row)) == [
        "id",
        "product_id",
        "warehouse_id",
        "quantity_available",
        "quantity_reserved",
        "sellable",
        "low_stock_threshold",
        "status",
        "version",
        "last_movement_at",
    ]
