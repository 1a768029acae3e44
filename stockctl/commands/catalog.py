"""``stockctl product ...`` and ``stockctl warehouse ...``."""

from __future__ import annotations

from typing import Annotated

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
from stockctl.core.mappings import totals_fields

products = typer.Typer(help="Products.", no_args_is_help=True)
warehouses = typer.Typer(help="Warehouses.", no_args_is_help=True)

Name = Annotated[str | None, typer.Option(help="display name (default: the id)")]


@products.command("add")
@handled
def product_add(
    ctx: typer.Context,
    product_id: Annotated[str, typer.Argument(help="product id (letters, digits, _ . -)")],
    name: Name = None,
    output: OutputOpt = Output.table,
) -> None:
    """Register a product."""
    from stockctl.core import inventory

    p = inventory.add_product(state(ctx).app().ctx, product_id, name)
    if output is Output.json:
        emit_json({"id": p.id, "name": p.name, "created_at": p.created_at})
    else:
        console().print(f"added product [bold]{p.id}[/] ({p.name})")


@products.command("list")
@handled
def product_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="at most N products")] = 100,
    offset: Annotated[int, typer.Option(min=0, help="skip the first N")] = 0,
    output: OutputOpt = Output.table,
) -> None:
    """List products by id."""
    items = state(ctx).app().store.list_products(limit, offset)
    if output is Output.json:
        emit_json([{"id": p.id, "name": p.name, "created_at": p.created_at} for p in items])
        return
    table = new_table("Products", "product", "name", "created")
    for p in items:
        table.add_row(p.id, p.name, when(p.created_at))
    console().print(table)


@warehouses.command("add")
@handled
def warehouse_add(
    ctx: typer.Context,
    warehouse_id: Annotated[str, typer.Argument(help="warehouse code (letters, digits, _ . -)")],
    name: Name = None,
    priority: Annotated[int, typer.Option(help="allocation order, lower first")] = 100,
    inactive: Annotated[bool, typer.Option("--inactive", help="never allocate from it")] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Register a warehouse."""
    from stockctl.core import inventory

    w = inventory.add_warehouse(state(ctx).app().ctx, warehouse_id, name, priority, not inactive)
    if output is Output.json:
        emit_json({"id": w.id, "name": w.name, "priority": w.priority, "active": w.active})
    else:
        console().print(f"added warehouse [bold]{w.id}[/] ({w.name}, priority {w.priority})")


@warehouses.command("list")
@handled
def warehouse_list(ctx: typer.Context, output: OutputOpt = Output.table) -> None:
    """List warehouses with their stock totals."""
    rows = state(ctx).app().store.warehouse_totals()
    if output is Output.json:
        emit_json([totals_fields(r) for r in rows])
        return
    table = new_table(
        "Warehouses",
        "warehouse",
        "name",
        "priority",
        "active",
        "products",
        "available",
        "reserved",
        "low",
        "out",
    )
    for r in rows:
        table.add_row(
            r.warehouse_id,
            r.name,
            str(r.priority),
            "yes" if r.active else "no",
            str(r.products),
            str(r.on_hand),
            str(r.reserved),
            str(r.low_stock),
            str(r.out_of_stock),
        )
    console().print(table)
