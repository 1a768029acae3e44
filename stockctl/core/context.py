"""What every use case needs besides its arguments, and the write path they all share."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from stockctl.core.events import change_events
from stockctl.core.hot_rows import HotRows
from stockctl.core.model import Inventory, Movement, MovementKind, utcnow
from stockctl.core.ports import StoreTx, UseCaseStore
from stockctl.core.values import check_idempotency_key as check_idempotency_key
from stockctl.errors import IdempotencyConflict, RetryableConflict

T = TypeVar("T")

MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Context:
    store: UseCaseStore
    source: str = "stockctl/warehouse"
    actor: str = "stockctl"
    reservation_ttl: timedelta = timedelta(minutes=15)
    reservation_max_ttl: timedelta = timedelta(days=1)
    idempotency_window: timedelta = timedelta(hours=24)
    allocation_strategy: str = "priority"
    clock: Callable[[], datetime] = field(default=utcnow)
    # Merges concurrent reserves of one hot row (``stockctl.core.reserve_merge``); None: off.
    hot_rows: HotRows[Any, Any] | None = None


def request_hash(operation: str, request: dict[str, Any]) -> str:
    canonical = json.dumps([operation, request], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def write(
    ctx: Context,
    operation: str,
    request: dict[str, Any],
    idempotency_key: str | None,
    apply: Callable[[StoreTx, datetime], T],
    encode: Callable[[T], Any],
    decode: Callable[[Any], T],
) -> T:
    """Run ``apply`` in one transaction, once per idempotency key.

    The key is claimed first inside the same transaction, so a concurrent duplicate waits for
    this one to commit and then returns its result; a rolled-back attempt frees the key.
    A deadlock or serialization failure reruns the whole transaction, a bounded number of times.
    """
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return _write_once(ctx, operation, request, idempotency_key, apply, encode, decode)
        except RetryableConflict:
            if attempt == MAX_ATTEMPTS:
                raise
            time.sleep(random.uniform(0, 0.005 * 2**attempt))  # jittered backoff
    raise AssertionError("unreachable")


def _write_once(
    ctx: Context,
    operation: str,
    request: dict[str, Any],
    idempotency_key: str | None,
    apply: Callable[[StoreTx, datetime], T],
    encode: Callable[[T], Any],
    decode: Callable[[Any], T],
) -> T:
    now = ctx.clock()
    with ctx.store.transaction() as tx:
        if idempotency_key is None:
            return apply(tx, now)
        digest = request_hash(operation, request)
        cutoff = now - ctx.idempotency_window
        earlier = tx.claim_idempotency_key(idempotency_key, operation, digest, now, cutoff)
        if earlier is None:
            result = apply(tx, now)
            tx.store_idempotent_response(idempotency_key, json.dumps(encode(result)))
            return result
    if earlier.operation != operation or earlier.request_hash != digest:
        raise IdempotencyConflict(
            f"idempotency key {idempotency_key!r} was used for a different request "
            f"({earlier.operation} at {earlier.created_at:%Y-%m-%d %H:%M:%S}Z)"
        )
    if earlier.response is None:
        raise IdempotencyConflict(f"request with idempotency key {idempotency_key!r} is in flight")
    return decode(json.loads(earlier.response))


def record_change(
    ctx: Context,
    tx: StoreTx,
    before: Inventory,
    after: Inventory,
    *,
    kind: MovementKind,
    event_type: str,
    created: bool = False,
    reason: str | None = None,
    reference: str | None = None,
    reservation_id: int | None = None,
    **event_context: Any,
) -> None:
    """Persist one row change with its ledger line and its events, in ``tx``."""
    if created:
        tx.insert_inventory(after)
    else:
        tx.update_inventory(after)
    tx.add_movements(
        [
            Movement.between(
                before,
                after,
                kind,
                reason=reason,
                reference=reference,
                reservation_id=reservation_id,
                actor=ctx.actor,
            )
        ]
    )
    tx.add_events(
        change_events(
            event_type,
            before,
            after,
            ctx.source,
            reason=reason or kind.value,
            reference=reference,
            reservation_id=reservation_id,
            **event_context,
        )
    )
