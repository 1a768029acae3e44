"""``reserve``, ``confirm``, ``release``, ``extend``, ``fulfil``, ``checkout``,
``reservations list|show|expire`` and ``stock verify``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stockctl.commands._common import (
    Output,
    OutputOpt,
    console,
    emit_json,
    handled,
    new_table,
    state,
    when,
)
from stockctl.core.mappings import drift_fields, reservation_fields
from stockctl.core.values import parse_whole
from stockctl.errors import InvalidInput

if TYPE_CHECKING:
    from stockctl.core.model import Reservation

app = typer.Typer(help="List, show and sweep reservations.", no_args_is_help=True)

_DURATION = re.compile(r"^\s*([0-9]{1,9})\s*([smhd]?)\s*$")  # at most 999999999 days
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

Ttl = Annotated[
    str | None, typer.Option("--ttl", help="hold time: 90s, 15m, 2h (default: settings)")
]
OrderOpt = Annotated[str | None, typer.Option("--order", help="order id the hold belongs to")]
IdemKey = Annotated[
    str | None,
    typer.Option("--idempotency-key", help="same key + same request = the first result (24 h)"),
]


def _reservation_id(text: Any) -> int:
    from stockctl.core.lifecycle import check_reservation_id

    if isinstance(text, int) and not isinstance(text, bool):
        return text
    try:
        return check_reservation_id(text)
    except InvalidInput as exc:
        raise typer.BadParameter(exc.message) from None


ReservationId = Annotated[
    int,
    typer.Argument(
        help="reservation id (a whole number)",
        show_default=False,
        parser=_reservation_id,
        metavar="RESERVATION_ID",
    ),
]


def parse_duration(text: str | None) -> timedelta | None:
    if text is None:
        return None
    m = _DURATION.match(text)
    if not m:
        raise InvalidInput(f"malformed duration {text!r}: use e.g. 90s, 15m, 2h")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def show(title: str, items: list[Reservation], output: Output, single: bool = True) -> None:
    if output is Output.json:
        data = [reservation_fields(r) for r in items]
        emit_json(data[0] if single and len(data) == 1 else data)
        return
    table = new_table(
        title, "reservation", "product", "warehouse", "qty", "status", "order", "expires", "updated"
    )
    for r in items:
        table.add_row(
            str(r.id),
            r.product_id,
            r.warehouse_id,
            str(r.quantity),
            r.status.value,
            r.order_id or "",
            when(r.expires_at),
            when(r.updated_at),
        )
    console().print(table)


@handled
def reserve(
    ctx: typer.Context,
    product: Annotated[str, typer.Argument(help="product id", show_default=False)],
    warehouse_or_qty: Annotated[
        str, typer.Argument(metavar="[WAREHOUSE]", help="warehouse id (optional) or QTY")
    ],
    quantity: Annotated[str | None, typer.Argument(metavar="QTY", help="units to hold")] = None,
    ttl: Ttl = None,
    order: OrderOpt = None,
    idempotency_key: IdemKey = None,
    output: OutputOpt = Output.table,
) -> None:
    """Hold units of a product; without WAREHOUSE the allocation strategy picks one."""
    warehouse, qty_text = (warehouse_or_qty, quantity) if quantity else (None, warehouse_or_qty)
    r = (
        state(ctx)
        .ops()
        .reserve(
            product,
            warehouse,
            parse_whole(qty_text, "quantity"),
            ttl=parse_duration(ttl),
            order_id=order,
            idempotency_key=idempotency_key,
        )
    )
    show("Reserved", [r], output)


@handled
def checkout(
    ctx: typer.Context,
    item: Annotated[
        list[str], typer.Option("--item", "-i", help="PRODUCT:QTY or PRODUCT:WAREHOUSE:QTY")
    ],
    order: OrderOpt = None,
    ttl: Ttl = None,
    allow_split: Annotated[
        bool, typer.Option("--allow-split", help="spread a line over warehouses if needed")
    ] = False,
    idempotency_key: IdemKey = None,
    output: OutputOpt = Output.table,
) -> None:
    """Reserve every item or none (all-or-nothing checkout)."""
    from stockctl.core.lines import Line

    lines = [Line.parse(spec) for spec in item]
    made = (
        state(ctx)
        .ops()
        .checkout(
            lines,
            ttl=parse_duration(ttl),
            order_id=order,
            allow_split=allow_split,
            idempotency_key=idempotency_key,
        )
    )
    show("Checkout reserved", made, output, single=False)


@handled
def confirm(
    ctx: typer.Context, reservation_id: ReservationId, output: OutputOpt = Output.table
) -> None:
    """The order committed: the hold stops expiring."""
    show("Confirmed", [state(ctx).ops().confirm(reservation_id)], output)


@handled
def release(
    ctx: typer.Context,
    reservation_id: Annotated[
        int | None,
        typer.Argument(help="reservation id", parser=_reservation_id, metavar="[RESERVATION_ID]"),
    ] = None,
    order: Annotated[str | None, typer.Option("--order", help="release all of an order")] = None,
    reason: Annotated[str, typer.Option(help="why, kept in the ledger")] = "released",
    output: OutputOpt = Output.table,
) -> None:
    """Give held units back (one reservation, or every hold of --order). Safe to retry."""
    if (reservation_id is None) == (order is None):
        raise InvalidInput("give one of: a reservation id, or --order ORDER")
    ops = state(ctx).ops()
    if order is not None:
        released = ops.release_order(order, reason)
        if not released and output is Output.table:
            console().print(f"order {order} holds nothing: nothing to release")
            return
        show(f"Released for order {order}", released, output, single=False)
    else:
        assert reservation_id is not None
        show("Released", [ops.release(reservation_id, reason)], output)


@handled
def extend(
    ctx: typer.Context,
    reservation_id: ReservationId,
    ttl: Annotated[str, typer.Option("--ttl", help="new hold time from now: 90s, 15m, 2h")],
    output: OutputOpt = Output.table,
) -> None:
    """Push an ACTIVE hold's expiry to now + TTL."""
    duration = parse_duration(ttl)
    assert duration is not None
    show("Extended", [state(ctx).ops().extend(reservation_id, duration)], output)


@handled
def fulfil(
    ctx: typer.Context, reservation_id: ReservationId, output: OutputOpt = Output.table
) -> None:
    """Shipped: available and reserved both drop by the held quantity."""
    show("Fulfilled", [state(ctx).ops().fulfil(reservation_id)], output)


@app.command("list")
@handled
def list_(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="ACTIVE, CONFIRMED, FULFILLED, ...")] = None,
    product: Annotated[str | None, typer.Option(help="product id")] = None,
    order: Annotated[str | None, typer.Option(help="order id")] = None,
    expired: Annotated[
        bool, typer.Option("--expired", help="ACTIVE holds past expiry, not yet swept")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="at most N, newest first")] = 100,
    output: OutputOpt = Output.table,
) -> None:
    """List reservations, newest first."""
    items = (
        state(ctx)
        .ops()
        .list_reservations(
            status=status, product_id=product, order_id=order, expired=expired, limit=limit
        )
    )
    show("Reservations", items, output, single=False)


@app.command("show")
@handled
def show_one(
    ctx: typer.Context, reservation_id: ReservationId, output: OutputOpt = Output.table
) -> None:
    """One reservation."""
    show("Reservation", [state(ctx).ops().get_reservation(reservation_id)], output)


@app.command("expire")
@handled
def expire(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="at most N per sweep")] = 1000,
    output: OutputOpt = Output.table,
) -> None:
    """Sweep now: expire overdue ACTIVE holds and give their units back."""
    from stockctl.core import lifecycle

    count = lifecycle.expire_due(state(ctx).app().ctx, limit=limit)
    if output is Output.json:
        emit_json({"expired": count})
    else:
        console().print(f"expired {count} reservation(s)")


@handled
def verify(
    ctx: typer.Context,
    repair: Annotated[bool, typer.Option("--repair", help="fix drift, with a ledger line")] = False,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="at most N rows")] = 1000,
    output: OutputOpt = Output.table,
) -> None:
    """Check every reserved counter against its holds; exit 1 if drift remains."""
    from stockctl.core import consistency

    results = consistency.verify_reserved(state(ctx).app().ctx, repair=repair, limit=limit)
    remaining = [r for r in results if not r.repaired]
    if output is Output.json:
        emit_json([_drift(r) for r in results])
    elif not results:
        console().print("[green]consistent[/]: every reserved counter matches its holds")
    else:
        table = new_table(
            "Reserved drift",
            "product",
            "warehouse",
            "available",
            "reserved",
            "expected",
            "repaired",
            "note",
        )
        for r in results:
            d = r.drift
            table.add_row(
                d.product_id,
                d.warehouse_id,
                str(d.on_hand),
                str(d.reserved),
                str(d.expected_reserved),
                "yes" if r.repaired else "no",
                r.note,
            )
        console().print(table)
    if remaining:
        raise typer.Exit(code=1)


def _drift(r: Any) -> dict[str, Any]:
    return {**drift_fields(r.drift), "repaired": r.repaired, "note": r.note}
