"""``stockctl init``, ``db upgrade|current``, ``seed``, ``overview`` and ``config show``."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from stockctl.commands._common import (
    Output,
    OutputOpt,
    console,
    emit_json,
    handled,
    new_table,
    state,
)
from stockctl.core.mappings import totals_fields

db = typer.Typer(help="Database schema.", no_args_is_help=True)
config = typer.Typer(help="Effective settings.", no_args_is_help=True)


@db.command("upgrade")
@handled
def db_upgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
) -> None:
    """Apply migrations up to REVISION (default: the latest)."""

    current = state(ctx).app().store.upgrade_schema(revision)
    console().print(f"database at revision [bold]{current}[/]")


@db.command("current")
@handled
def db_current(ctx: typer.Context, output: OutputOpt = Output.table) -> None:
    """Show the applied and the latest revision."""
    app = state(ctx).app()
    data = {"current": app.store.schema_revision(), "head": app.store.head_revision()}
    if output is Output.json:
        emit_json(data)
    else:
        status = "up to date" if data["current"] == data["head"] else "needs `stockctl db upgrade`"
        console().print(f"current {data['current']}, head {data['head']}: {status}")


def init_database(ctx: typer.Context) -> dict[str, Any]:
    app = state(ctx).app()
    revision = app.store.upgrade_schema()
    app.store.ping()
    if app.settings.database_replica_url is not None:
        app.store.ping(replica=True)
    head = app.store.head_revision()
    if revision != head:
        from stockctl.errors import DatabaseNotInitialised

        raise DatabaseNotInitialised(f"schema at {revision}, expected {head}")
    return {"database": app.database_target, "revision": revision, **app.store.count_rows()}


def init(ctx: typer.Context, output: OutputOpt = Output.table) -> None:
    """Create or upgrade the schema, then check the database answers."""
    data = handled(init_database)(ctx)
    if output is Output.json:
        emit_json(data)
    else:
        console().print(f"[green]ready[/]: {data['database']} at revision {data['revision']}")


@handled
def seed(
    ctx: typer.Context,
    products: Annotated[int, typer.Option(help="number of demo products")] = 100,
    warehouses: Annotated[int, typer.Option(help="number of demo warehouses")] = 5,
    random_seed: Annotated[int, typer.Option("--seed", help="random seed")] = 42,
    if_empty: Annotated[
        bool, typer.Option("--if-empty", help="do nothing (exit 0) if there are products")
    ] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Load demo data (products x warehouses rows) into an empty database."""
    from stockctl.core import seed as demo

    plan = demo.SeedPlan(products, warehouses, random_seed)
    app = state(ctx).app()
    if if_empty and app.store.has_products():
        if output is Output.json:
            emit_json({"skipped": "database has products"})
        else:
            console().print("database has products: demo data not loaded")
        return
    started = time.perf_counter()
    demo.load(app.store, plan, app.ctx.clock(), app.ctx.actor)
    elapsed = time.perf_counter() - started
    data = {
        "products": products,
        "warehouses": warehouses,
        "rows": plan.rows,
        "seconds": round(elapsed, 3),
        "rows_per_second": round(plan.rows / elapsed),
    }
    if output is Output.json:
        emit_json(data)
    else:
        console().print(
            f"seeded {plan.rows:,} inventory rows ({products:,} products x "
            f"{warehouses} warehouses) in {elapsed:.2f} s"
        )


@handled
def overview(
    ctx: typer.Context,
    low: Annotated[int, typer.Option(min=0, max=1000, help="show N lowest rows")] = 10,
    output: OutputOpt = Output.table,
) -> None:
    """A stock overview: warehouses with totals, and the rows lowest on stock."""
    store = state(ctx).app().store
    totals, lowest = store.warehouse_totals(), store.low_stock(low)
    if output is Output.json:
        emit_json(
            {
                "warehouses": [totals_fields(t) for t in totals],
                "low_stock": [_row(r) for r in lowest],
            }
        )
        return
    table = new_table(
        "Stock overview",
        "warehouse",
        "name",
        "priority",
        "products",
        "available",
        "reserved",
        "sellable",
        "low",
        "out",
    )
    for t in totals:
        table.add_row(
            t.warehouse_id,
            t.name,
            str(t.priority),
            str(t.products),
            f"{t.on_hand:,}",
            f"{t.reserved:,}",
            f"{t.on_hand - t.reserved:,}",
            str(t.low_stock),
            str(t.out_of_stock),
        )
    out = console()
    out.print(table)
    if lowest:
        low_table = new_table(
            "Lowest stock", "product", "warehouse", "sellable", "threshold", "status"
        )
        for r in lowest:
            low_table.add_row(
                r.product_id,
                r.warehouse_id,
                str(r.sellable),
                str(r.low_stock_threshold),
                r.status.value,
            )
        out.print(low_table)


def _row(r: Any) -> dict[str, Any]:
    from stockctl.core.mappings import row_fields

    return row_fields(r)


@config.command("show")
@handled
def config_show(ctx: typer.Context, output: OutputOpt = Output.table) -> None:
    """Print the effective settings, passwords and tokens masked."""
    settings = state(ctx).settings()
    data = settings.masked()
    if settings.redis_url is not None:  # which of the three layouts the URL names
        data["redis_topology"] = settings.redis_kind
    if output is Output.json:
        emit_json(data)
        return
    table = new_table("Settings", "key", "value")
    for key, value in data.items():
        table.add_row(key, "-" if value is None else str(value))
    console().print(table)
