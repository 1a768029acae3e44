"""What the database's failures mean to stockctl: a lost connection is ``DatabaseUnavailable``
naming the host (never the password), a missing schema ``DatabaseNotInitialised``, a deadlock or
serialization failure ``RetryableConflict``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from stockctl.errors import DatabaseNotInitialised, DatabaseUnavailable, RetryableConflict
from stockctl.store.engine import describe_target

RETRYABLE_SQLSTATES = ("40P01", "40001")  # deadlock detected, serialization failure


@contextmanager
def guard(engine: Engine) -> Iterator[None]:
    """Connection failures become ``DatabaseUnavailable`` naming the host, not the password."""
    try:
        yield
    except IntegrityError:
        raise
    except (OperationalError, DBAPIError) as exc:
        if getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES:
            raise RetryableConflict(f"transaction aborted by the database: {exc.orig}") from None
        target = describe_target(engine.url.render_as_string(hide_password=True))
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        if _is_missing_schema(detail):
            raise DatabaseNotInitialised(
                f"database at {target} has no stockctl schema: run `stockctl init`"
            ) from None
        if exc.connection_invalidated or _is_connect_error(detail):
            raise DatabaseUnavailable(
                f"database unavailable at {target}: {_scrub(detail, engine)}"
            ) from None
        raise


def _is_missing_schema(detail: str) -> bool:
    text = detail.lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def _is_connect_error(detail: str) -> bool:
    text = detail.lower()
    needles = (
        "connection",
        "connect",
        "password authentication",
        "database",
        "unable to open",
        "timeout",
        "timed out",
        "name or service not known",
        "server closed",
    )
    return any(n in text for n in needles)


def _scrub(text: str, engine: Engine) -> str:
    password = engine.url.password
    return text.replace(str(password), "***") if password else text
