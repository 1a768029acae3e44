"""Idempotency keys and compare-and-set: a retry changes nothing more, a stale write nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

import stockctl
from stockctl.core.model import utcnow
from stockctl.errors import IdempotencyConflict, VersionConflict
from stockctl.library import Stockctl
from stockctl.store.tables import idempotency_keys
from tests import dbutil
from tests.conftest import new_id


def stocked(sc: Stockctl, available: int = 20) -> tuple[str, str, str]:
    p, a, b = new_id("P"), new_id("W"), new_id("W")
    sc.add_product(p)
    sc.add_warehouse(a)
    sc.add_warehouse(b)
    sc.receive(p, a, available)
    return p, a, b


def test_same_key_same_receive_returns_the_first_result_once(sc: Stockctl) -> None:
    p, a, _ = stocked(sc)
    key = new_id("key")
    first = sc.receive(p, a, 5, idempotency_key=key)
    before = dbutil.snapshot(sc)
    again = sc.receive(p, a, 5, idempotency_key=key)
    assert again == first
    assert (again.on_hand, again.version) == (25, 2)
    assert dbutil.snapshot(sc) == before


@pytest.mark.parametrize("operation", ["set", "adjust", "transfer"])
def test_same_key_same_request_is_applied_once(sc: Stockctl, operation: str) -> None:
    p, a, b = stocked(sc)
    key = new_id("key")

    def call() -> object:
        if operation == "set":
            return sc.set_stock(p, a, 3, idempotency_key=key)
        if operation == "adjust":
            return sc.adjust(p, a, -2, reason="damage", idempotency_key=key)
        return sc.transfer(p, a, b, 4, idempotency_key=key)

    first = call()
    before = dbutil.snapshot(sc)
    assert call() == first
    assert call() == first
    assert dbutil.snapshot(sc) == before
    assert len(dbutil.ledger(sc, p)) == (3 if operation == "transfer" else 2)


def test_same_key_different_request_is_a_conflict_and_changes_nothing(sc: Stockctl) -> None:
    p, a, b = stocked(sc)
    key = new_id("key")
    sc.receive(p, a, 5, idempotency_key=key)
    before = dbutil.snapshot(sc)
    with pytest.raises(IdempotencyConflict, match=key):
        sc.receive(p, a, 6, idempotency_key=key)
    with pytest.raises(IdempotencyConflict):
        sc.receive(p, b, 5, idempotency_key=key)
    with pytest.raises(IdempotencyConflict, match="receive"):
        sc.adjust(p, a, 5, reason="found", idempotency_key=key)
    assert dbutil.snapshot(sc) == before


def test_reason_is_part_of_the_request(sc: Stockctl) -> None:
    p, a, _ = stocked(sc)
    key = new_id("key")
    sc.adjust(p, a, -1, reason="damage", idempotency_key=key)
    with pytest.raises(IdempotencyConflict):
        sc.adjust(p, a, -1, reason="theft", idempotency_key=key)


def test_different_keys_apply_twice(sc: Stockctl) -> None:
    p, a, _ = stocked(sc)
    sc.receive(p, a, 5, idempotency_key=new_id("key"))
    row = sc.receive(p, a, 5, idempotency_key=new_id("key"))
    assert row.on_hand == 30


def test_a_refused_write_does_not_burn_its_key(sc: Stockctl) -> None:
    p, a, _ = stocked(sc, available=3)
    key = new_id("key")
    with pytest.raises(VersionConflict):
        sc.set_stock(p, a, 10, expect_version=7, idempotency_key=key)
    assert dbutil.idempotency_rows(sc) == []
    row = sc.set_stock(p, a, 10, expect_version=1, idempotency_key=key)
    assert (row.on_hand, row.version) == (10, 2)


def test_key_is_stored_with_the_response(sc: Stockctl) -> None:
    p, a, _ = stocked(sc)
    key = new_id("key")
    sc.receive(p, a, 1, idempotency_key=key)
    [stored] = dbutil.idempotency_rows(sc)
    assert (stored["key"], stored["operation"]) == (key, "receive")
    assert len(stored["request_hash"]) == 64
    assert stored["response"] is not None and p in stored["response"]


def test_an_expired_key_can_be_used_for_a_new_request(database_url: str) -> None:
    with stockctl.connect(database_url, idempotency_window_seconds=60) as sc:
        sc.init()
        p, a, _ = stocked(sc)
        key = new_id("key")
        sc.receive(p, a, 5, idempotency_key=key)
        t = idempotency_keys
        with dbutil.engine_of(sc).begin() as conn:  # age the key past the 60 s window
            conn.execute(
                update(t).where(t.c.key == key).values(created_at=utcnow() - timedelta(minutes=5))
            )
        row = sc.receive(p, a, 9, idempotency_key=key)
        assert row.on_hand == 34
        [stored] = dbutil.idempotency_rows(sc)
        assert stored["created_at"] > utcnow() - timedelta(minutes=1)


# compare-and-set ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stale", [0, 2, 99])
def test_stale_expect_version_is_refused_and_changes_nothing(sc: Stockctl, stale: int) -> None:
    p, a, _ = stocked(sc)  # the row is at version 1
    before = dbutil.snapshot(sc)
    with pytest.raises(VersionConflict) as caught:
        sc.set_stock(p, a, 1, expect_version=stale)
    assert caught.value.context["current_version"] == 1
    assert "version 1" in str(caught.value)
    assert dbutil.snapshot(sc) == before


def test_two_writers_with_the_same_version_only_one_wins(sc: Stockctl) -> None:
    p, a, _ = stocked(sc)
    seen = sc.stock(p, a).rows[0].version
    sc.set_stock(p, a, 11, expect_version=seen)
    with pytest.raises(VersionConflict):
        sc.set_stock(p, a, 12, expect_version=seen)
    stored = dbutil.row(sc, p, a)
    assert stored is not None and (stored["quantity_available"], stored["version"]) == (11, 2)
