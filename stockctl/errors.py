"""Every refusal stockctl makes, as one exception tree.

::

    StockctlError                        exit 1, HTTP 500 (base; never raised bare)
    ├── StockRuleViolation               exit 1, HTTP 409   refused by a stock rule
    │   ├── InsufficientStock            exit 1, HTTP 409   not enough sellable / available units
    │   ├── BelowReserved                exit 1, HTTP 409   available would drop below reserved
    │   ├── VersionConflict              exit 1, HTTP 409   stale expect_version (compare-and-set)
    │   ├── IdempotencyConflict          exit 1, HTTP 409   same key, different request
    │   ├── ReservationExpired           exit 1, HTTP 410   confirm/extend of an expired hold
    │   └── InvalidTransition            exit 1, HTTP 409   e.g. fulfil a released reservation
    ├── NotFound                         exit 2, HTTP 404   unknown id: bad input for the CLI
    │   ├── ProductNotFound
    │   ├── WarehouseNotFound
    │   ├── InventoryNotFound
    │   └── ReservationNotFound
    ├── InvalidInput                     exit 2, HTTP 422   bad ids, quantities, missing reason
    │   ├── AlreadyExists                exit 2, HTTP 409   product / warehouse id taken
    │   └── LocalOnly                    exit 2             a local-only command run with --api-url
    └── DependencyUnavailable            exit 3, HTTP 503
        ├── DatabaseUnavailable          database unreachable or refused the login
        ├── DatabaseNotInitialised       reachable, but no schema: run `stockctl init`
        ├── RetryableConflict            deadlock / serialization failure, retries exhausted
        ├── CacheUnavailable             Redis unreachable
        └── WarehouseUnavailable         remote warehouse API down / circuit open

An unexpected failure (a bug) exits 4 with a one-line message.

Each class carries its CLI exit code and HTTP status, so the CLI and the HTTP daemon map errors
the same way. Messages are one line and never contain a password.
"""

from __future__ import annotations

from typing import Any, ClassVar


class StockctlError(Exception):
    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500
    slug: ClassVar[str] = "error"

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def __str__(self) -> str:
        return self.message


class StockRuleViolation(StockctlError):
    http_status = 409
    slug = "stock-rule"


class InsufficientStock(StockRuleViolation):
    slug = "insufficient-stock"


class BelowReserved(StockRuleViolation):
    slug = "below-reserved"


class VersionConflict(StockRuleViolation):
    slug = "version-conflict"


class IdempotencyConflict(StockRuleViolation):
    slug = "idempotency-conflict"


class ReservationExpired(StockRuleViolation):
    http_status = 410
    slug = "reservation-expired"


class InvalidTransition(StockRuleViolation):
    slug = "invalid-transition"


class NotFound(StockctlError):
    exit_code = 2
    http_status = 404
    slug = "not-found"


class ProductNotFound(NotFound):
    slug = "product-not-found"


class WarehouseNotFound(NotFound):
    slug = "warehouse-not-found"


class InventoryNotFound(NotFound):
    slug = "inventory-not-found"


class ReservationNotFound(NotFound):
    slug = "reservation-not-found"


class InvalidInput(StockctlError):
    exit_code = 2
    http_status = 422
    slug = "invalid-input"


class AlreadyExists(InvalidInput):
    http_status = 409
    slug = "already-exists"


class LocalOnly(InvalidInput):
    """A command that works on the local database, Redis or files only, run with an API URL
    set: it refuses rather than act on a different place than the remote commands."""

    slug = "local-only"


class DependencyUnavailable(StockctlError):
    exit_code = 3
    http_status = 503
    slug = "dependency-unavailable"


class DatabaseUnavailable(DependencyUnavailable):
    slug = "database-unavailable"


class DatabaseNotInitialised(DependencyUnavailable):
    slug = "database-not-initialised"


class RetryableConflict(DependencyUnavailable):
    slug = "retryable-conflict"


class CacheUnavailable(DependencyUnavailable):
    slug = "cache-unavailable"


class WarehouseUnavailable(DependencyUnavailable):
    slug = "warehouse-unavailable"
