"""``stockctl stock ...``: show, receive, set, adjust, transfer, history, overview."""

from __future__ import annotations

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
    whole_number,
)
from stockctl.core.mappings import movement_fields, row_fields

if TYPE_CHECKING:
    from stockctl.core.model import Inventory, StockSummary

app = typer.Typer(help="Show and change stock per product and warehouse.", no_args_is_help=True)

Product = Annotated[str, typer.Argument(help="product id", show_default=False)]
WarehouseArg = Annotated[str, typer.Argument(help="warehouse id", show_default=False)]
Reason = Annotated[str | None, typer.Option(help="why (kept in the ledger and the event)")]
Reference = Annotated[str | None, typer.Option(help="reference such as an order or PO id")]
IdemKey = Annotated[
    str | None,
    typer.Option("--idempotency-key", help="same key + same request = the first result (24 h)"),
]


def summary_data(summary: StockSummary) -> dict[str, Any]:
    return {
        "product_id": summary.product_id,
        "warehouses": [row_fields(r) for r in summary.rows],
        "total_available": summary.total_on_hand,
        "total_reserved": summary.total_reserved,
        "total_sellable": summary.total_sellable,
    }


def show_rows(title: str, rows: list[Inventory], output: Output, totals: bool = False) -> None:
    if output is Output.json:
        emit_json(
            row_fields(rows[0]) if len(rows) == 1 and not totals else [row_fields(r) for r in rows]
        )
        return
    table = new_table(
        title,
        "id",
        "product",
        "warehouse",
        "available",
        "reserved",
        "sellable",
        "threshold",
        "status",
        "version",
        "last movement",
    )
    for r in rows:
        table.add_row(
            str(r.id) if r.id is not None else "-",
            r.product_id,
            r.warehouse_id,
            str(r.on_hand),
            str(r.reserved),
            str(r.sellable),
            str(r.low_stock_threshold),
            r.status.value,
            str(r.version),
            when(r.last_movement_at),
        )
    if totals and len(rows) > 1:
        table.add_section()
        table.add_row(
            "",
            "total",
            f"{len(rows)} warehouses",
            str(sum(r.on_hand for r in rows)),
            str(sum(r.reserved for r in rows)),
            str(sum(max(r.sellable, 0) for r in rows)),
            "",
            "",
            "",
            "",
        )
    console().print(table)


@app.command("show")
@handled
def show(
    ctx: typer.Context,
    product: Product,
    warehouse: Annotated[
        str | None, typer.Option("--warehouse", "-w", help="one warehouse")
    ] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Stock of a product per warehouse, with totals."""
    summary = state(ctx).ops().stock(product, warehouse)
    if output is Output.json:
        emit_json(summary_data(summary))
        return
    show_rows(f"Stock of {product}", summary.rows, output, totals=True)


@app.command("receive")
@handled
def receive(
    ctx: typer.Context,
    product: Product,
    warehouse: WarehouseArg,
    quantity: Annotated[
        int, typer.Argument(help="units received (> 0)", parser=whole_number("quantity"))
    ],
    reason: Reason = None,
    reference: Reference = None,
    idempotency_key: IdemKey = None,
    output: OutputOpt = Output.table,
) -> None:
    """Book received units into a warehouse (creates the stock row if needed)."""
    row = (
        state(ctx)
        .ops()
        .receive(
            product,
            warehouse,
            quantity,
            reason=reason,
            reference=reference,
            idempotency_key=idempotency_key,
        )
    )
    show_rows("Received", [row], output)


@app.command("set", context_settings={"ignore_unknown_options": True})
@handled
def set_(
    ctx: typer.Context,
    product: Product,
    warehouse: WarehouseArg,
    quantity: Annotated[
        int, typer.Argument(help="new quantity_available (>= 0)", parser=whole_number("quantity"))
    ],
    expect_version: Annotated[
        int | None,
        typer.Option(
            help="refuse unless the row is at this version", parser=whole_number("expect_version")
        ),
    ] = None,
    threshold: Annotated[
        int | None,
        typer.Option(help="new low-stock threshold", parser=whole_number("threshold")),
    ] = None,
    reason: Reason = None,
    idempotency_key: IdemKey = None,
    output: OutputOpt = Output.table,
) -> None:
    """Set the available count (a stock take); optionally compare-and-set on the version."""
    row = (
        state(ctx)
        .ops()
        .set_stock(
            product,
            warehouse,
            quantity,
            expect_version=expect_version,
            low_stock_threshold=threshold,
            reason=reason,
            idempotency_key=idempotency_key,
        )
    )
    show_rows("Set", [row], output)


@app.command("adjust", context_settings={"ignore_unknown_options": True})
@handled
def adjust(
    ctx: typer.Context,
    product: Product,
    warehouse: WarehouseArg,
    delta: Annotated[
        int, typer.Argument(help="signed change, e.g. -5 or 12", parser=whole_number("delta"))
    ],
    reason: Annotated[str, typer.Option(help="why (required): damage, recount, found, ...")],
    reference: Reference = None,
    idempotency_key: IdemKey = None,
    output: OutputOpt = Output.table,
) -> None:
    """Correct available by a signed delta, with a required reason."""
    row = (
        state(ctx)
        .ops()
        .adjust(
            product,
            warehouse,
            delta,
            reason=reason,
            reference=reference,
            idempotency_key=idempotency_key,
        )
    )
    show_rows("Adjusted", [row], output)


@app.command("transfer")
@handled
def transfer(
    ctx: typer.Context,
    product: Product,
    from_warehouse: Annotated[str, typer.Argument(help="source warehouse id")],
    to_warehouse: Annotated[str, typer.Argument(help="destination warehouse id")],
    quantity: Annotated[
        int, typer.Argument(help="units to move (> 0)", parser=whole_number("quantity"))
    ],
    reason: Reason = None,
    reference: Reference = None,
    idempotency_key: IdemKey = None,
    output: OutputOpt = Output.table,
) -> None:
    """Move sellable units between two warehouses, atomically."""
    src, dst = (
        state(ctx)
        .ops()
        .transfer(
            product,
            from_warehouse,
            to_warehouse,
            quantity,
            reason=reason,
            reference=reference,
            idempotency_key=idempotency_key,
        )
    )
    show_rows("Transferred", [src, dst], output, totals=output is Output.json)


@app.command("history")
@handled
def history(
    ctx: typer.Context,
    product: Product,
    warehouse: Annotated[
        str | None, typer.Option("--warehouse", "-w", help="one warehouse")
    ] = None,
    limit: Annotated[
        int, typer.Option(help="newest N movements (1-10000)", parser=whole_number("limit"))
    ] = 50,
    output: OutputOpt = Output.table,
) -> None:
    """The ledger of a product: every movement, newest first."""
    moves = state(ctx).ops().history(product, warehouse, limit)
    if output is Output.json:
        emit_json([movement_fields(m) for m in moves])
        return
    table = new_table(
        f"History of {product}",
        "id",
        "time",
        "warehouse",
        "kind",
        "Δ available",
        "Δ reserved",
        "available",
        "reserved",
        "version",
        "reason",
        "reference",
        "actor",
    )
    for m in moves:
        table.add_row(
            str(m.id),
            when(m.created_at),
            m.warehouse_id,
            m.kind.value,
            f"{m.delta_on_hand:+d}",
            f"{m.delta_reserved:+d}",
            str(m.on_hand),
            str(m.reserved),
            str(m.version),
            m.reason or "",
            m.reference or (str(m.reservation_id) if m.reservation_id else ""),
            m.actor or "",
        )
    console().print(table)
