"""``stockctl warm-cache`` and ``stockctl cache verify|get|stats|clear``."""

from __future__ import annotations

import random
import sys
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
from stockctl.errors import InvalidInput

app = typer.Typer(help="The catalog's stock cache.", no_args_is_help=True)

ProductsOpt = Annotated[
    str | None, typer.Option("--products", help="comma-separated product ids (default: all)")
]


def _ids(text: str | None) -> list[str] | None:
    if text is None:
        return None
    ids = [p.strip() for p in text.split(",") if p.strip()]
    if not ids:
        raise InvalidInput("--products names no product")
    return ids


@handled
def warm_cache(
    ctx: typer.Context,
    products: ProductsOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="every product (the default)")] = False,
    batch: Annotated[int, typer.Option(help="products per cache write (1-10000)")] = 1000,
    via_api: Annotated[
        str | None,
        typer.Option("--via-api", help="read stock from this warehouse API instead of the DB"),
    ] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Load stock from the database (or the warehouse API) into the cache (never over a newer
    cached value)."""
    from stockctl.core import cache as cache_uc
    from stockctl.core import warming

    cache_uc.check_batch(batch)
    ids = None if all_ else _ids(products)
    app_ = state(ctx).app()
    cache = app_.cache()
    cache.ping()
    if via_api is not None:
        result = _warm_via_api(state(ctx), via_api, cache, batch, ids)
    elif output is Output.json or not sys.stdout.isatty():
        result = warming.warm(app_.store, cache, product_ids=ids, batch=batch)
    else:
        result = _warm_with_progress(app_, cache, ids, batch)
    data = {
        "products": result.products,
        "rows": result.rows,
        "seconds": round(result.seconds, 3),
        "rows_per_second": round(result.rows / result.seconds) if result.seconds else None,
        "not_found": result.not_found,
    }
    if output is Output.json:
        emit_json(data)
    else:
        console().print(
            f"warmed {result.rows:,} rows of {result.products:,} products in {result.seconds:.2f} s"
        )
        if result.not_found:
            shown = ", ".join(result.not_found[:10])
            more = f" and {len(result.not_found) - 10} more" if len(result.not_found) > 10 else ""
            console().print(
                f"[yellow]{len(result.not_found)} product id(s) not found[/] "
                f"(no inventory rows): {shown}{more}"
            )


def _warm_via_api(st: Any, url: str, cache: Any, batch: int, ids: list[str] | None) -> Any:
    from datetime import UTC, datetime

    from stockctl.bootstrap import build_client
    from stockctl.core import warming

    if ids is not None:
        raise InvalidInput("--via-api warms every product; --products is for the database path")
    client = build_client(st.settings().model_copy(update={"api_url": url}))
    since = datetime(1970, 1, 1, tzinfo=UTC)
    try:
        return warming.warm_from_pages(
            lambda page: client.recently_updated_page(since, page), cache, batch=batch
        )
    finally:
        client.close()


def _warm_with_progress(app_: Any, cache: Any, ids: list[str] | None, batch: int) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from stockctl.core import warming

    total = app_.store.count_rows()["inventory"] if ids is None else None
    columns = (
        TextColumn("warming"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} rows/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console()) as bar:
        task = bar.add_task("warm", total=total, rate="-")
        import time

        started = time.perf_counter()

        def advance(products: int, rows: int) -> None:
            rate = rows / max(time.perf_counter() - started, 1e-6)
            bar.update(task, completed=rows, rate=f"{rate:,.0f}")

        return warming.warm(app_.store, cache, product_ids=ids, batch=batch, progress=advance)


@app.command("verify")
@handled
def verify(
    ctx: typer.Context,
    products: ProductsOpt = None,
    sample: Annotated[
        int | None, typer.Option(min=1, max=1_000_000, help="check N random products")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="check every product")] = False,
    repair: Annotated[bool, typer.Option("--repair", help="rewrite drifted products")] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Compare cache and database per product and warehouse; exit 1 if drift remains."""
    from stockctl.core import cache as cache_uc

    app_ = state(ctx).app()
    ids = _ids(products)
    if ids is None:
        ids = app_.store.all_product_ids()
        if not all_:
            ids = random.sample(ids, min(sample or 1000, len(ids)))
    cache = app_.cache()
    drifts = cache_uc.verify(app_.store, cache, cache.keys, ids, repair=repair)
    if output is Output.json:
        emit_json({"checked": len(ids), "repaired": repair, "drift": [d.__dict__ for d in drifts]})
    elif not drifts:
        console().print(f"[green]no drift[/] in {len(ids):,} product(s)")
    else:
        table = new_table(
            f"Drift in {len(drifts)} of {len(ids):,} products" + (" (repaired)" if repair else ""),
            "product",
            "kind",
            "detail",
        )
        for d in drifts:
            table.add_row(d.product_id, d.kind, d.detail)
        console().print(table)
    if drifts and not repair:
        raise typer.Exit(1)


@app.command("get")
@handled
def get(
    ctx: typer.Context,
    product: Annotated[str, typer.Argument(help="product id")],
    output: OutputOpt = Output.table,
) -> None:
    """Every cache key of a product, with its value, TTL and (per warehouse) version."""
    from stockctl.core.model import check_id

    check_id(product, "product")
    app_ = state(ctx).app()
    cache = app_.cache()
    keys = cache.keys
    held = cache.get_products([product])[product]
    warehouses = sorted(
        {r.warehouse_id for r in app_.store.product_inventory(product)}
        | {r.warehouse_id for r in (held.rows if held else ())}
    )
    names = [*keys.product_keys(product), *(keys.warehouse(product, w) for w in warehouses)]
    versions = {
        keys.warehouse(product, r.warehouse_id): r.version for r in (held.rows if held else ())
    }
    found = cache.inspect(names)
    if output is Output.json:
        emit_json(
            [
                {"key": k, "value": v, "ttl_seconds": t, "version": versions.get(k)}
                for k, (v, t) in zip(names, found, strict=True)
            ]
        )
        return
    table = new_table(f"Cache of {product}", "key", "value", "ttl", "version")
    for k, (v, t) in zip(names, found, strict=True):
        table.add_row(
            k,
            "(absent)" if v is None else v,
            "-" if t is None else f"{t}s",
            str(versions.get(k, "")),
        )
    console().print(table)


@app.command("stats")
@handled
def stats(ctx: typer.Context, output: OutputOpt = Output.table) -> None:
    """Hit rate across processes, keys, memory and evictions."""
    data = state(ctx).app().cache().stats()
    if output is Output.json:
        emit_json(data)
        return
    table = new_table("Cache", "figure", "value")
    for k, v in data.items():
        table.add_row(k, "-" if v is None else str(v))
    console().print(table)


@app.command("clear")
@handled
def clear(
    ctx: typer.Context,
    products: ProductsOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
) -> None:
    """Drop stock keys (all, or --products); reads fall back to the database until warmed."""
    ids = _ids(products)
    what = f"{len(ids)} product(s)" if ids else "EVERY stock key"
    if not yes:
        if not sys.stdin.isatty():
            raise InvalidInput("refusing to clear without --yes (no terminal to ask)")
        typer.confirm(f"drop the cache of {what}?", abort=True)
    cache = state(ctx).app().cache()
    removed = cache.evict(ids, {}) if ids else cache.clear()
    console().print(f"removed {removed} key(s)")
