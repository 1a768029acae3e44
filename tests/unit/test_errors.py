"""The error tree: each refusal maps to one CLI exit code and one HTTP status."""

from __future__ import annotations

import pytest

import stockctl
from stockctl import errors
from stockctl.core.context import check_idempotency_key, request_hash


@pytest.mark.parametrize(
    ("cls", "parent", "exit_code", "http_status"),
    [
        (errors.InsufficientStock, errors.StockRuleViolation, 1, 409),
        (errors.BelowReserved, errors.StockRuleViolation, 1, 409),
        (errors.VersionConflict, errors.StockRuleViolation, 1, 409),
        (errors.IdempotencyConflict, errors.StockRuleViolation, 1, 409),
        (errors.ReservationExpired, errors.StockRuleViolation, 1, 410),
        (errors.ProductNotFound, errors.NotFound, 2, 404),
        (errors.WarehouseNotFound, errors.NotFound, 2, 404),
        (errors.InventoryNotFound, errors.NotFound, 2, 404),
        (errors.InvalidInput, errors.StockctlError, 2, 422),
        (errors.AlreadyExists, errors.InvalidInput, 2, 409),
        (errors.DatabaseUnavailable, errors.DependencyUnavailable, 3, 503),
        (errors.DatabaseNotInitialised, errors.DependencyUnavailable, 3, 503),
        (errors.CacheUnavailable, errors.DependencyUnavailable, 3, 503),
    ],
)
def test_error_codes(
    cls: type[errors.StockctlError],
    parent: type[errors.StockctlError],
    exit_code: int,
    http_status: int,
) -> None:
    assert issubclass(cls, parent) and issubclass(cls, errors.StockctlError)
    assert (cls.exit_code, cls.http_status) == (exit_code, http_status)


def test_error_keeps_message_and_context() -> None:
    exc = errors.VersionConflict("stale", current_version=3)
    assert (str(exc), exc.message, exc.context) == ("stale", "stale", {"current_version": 3})


def test_errors_are_reachable_from_the_package() -> None:
    assert stockctl.errors.InsufficientStock is errors.InsufficientStock


def test_slugs_are_unique() -> None:
    def walk(cls: type[errors.StockctlError]) -> list[type[errors.StockctlError]]:
        return [cls, *(c for sub in cls.__subclasses__() for c in walk(sub))]

    slugs = [c.slug for c in walk(errors.StockctlError)]
    assert len(slugs) == len(set(slugs))


@pytest.mark.parametrize("key", ["", "   ", "k" * 201, "tab\there", "new\nline"])
def test_bad_idempotency_keys_are_refused(key: str) -> None:
    with pytest.raises(errors.InvalidInput):
        check_idempotency_key(key)


def test_good_idempotency_keys_pass() -> None:
    assert check_idempotency_key(None) is None
    assert check_idempotency_key("order-1:line-2") == "order-1:line-2"
    assert check_idempotency_key("k" * 200) == "k" * 200


def test_request_hash_depends_on_operation_and_request_not_key_order() -> None:
    a = request_hash("receive", {"p": "P", "q": 1})
    assert a == request_hash("receive", {"q": 1, "p": "P"})
    assert a != request_hash("receive", {"p": "P", "q": 2})
    assert a != request_hash("adjust", {"p": "P", "q": 1})
