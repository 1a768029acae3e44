"""Seed benchmark: `stockctl seed` of 10K products x 20 warehouses on PostgreSQL vs raw COPY.

stockctl side: a fresh database, `stockctl init` (untimed), then `stockctl seed --products 10000
--warehouses 20` timed as a whole process (start-up, imports, generation, COPY, commit), and the
row counts checked: 200,000 inventory rows and 200,000 ledger rows.

Raw limit, same run: the very rows stockctl wrote (products, warehouses, inventory, ledger) are
dumped to files, then loaded into the same schema in a second fresh database with one psql
process doing `\\copy` in a single transaction (psycopg COPY FROM STDIN if psql is missing). The
ratio is raw_time / stockctl_time: 1.0 means stockctl loads as fast as PostgreSQL can ingest.

With --quick: 2,000 products x 20 warehouses, one run of each side (explicit flags still win).

Usage: bench/seed.py [--json] [--quick] [--products N] [--warehouses M] [--repeat R]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from _common import Figure, emit, fresh_pg_database, log, median, parser, stockctl, timer

# Loaded in this order (foreign keys), the same tables `stockctl seed` fills.
TABLES = ("products", "warehouses", "inventory", "stock_movements")


def counts(conn: Any) -> dict[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def verify(url: str, products: int, warehouses: int) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url) as conn:
        found = counts(conn)
    rows = products * warehouses
    expected = {
        "products": products,
        "warehouses": warehouses,
        "inventory": rows,
        "stock_movements": rows,
    }
    if found != expected:
        raise SystemExit(f"seed left {found}, expected {expected}")
    return found


def loadable_columns(conn: Any, table: str) -> list[str]:
    """Columns a loader writes: all but generated ids (identity / serial), as stockctl does."""
    rows = conn.execute(
        """
        SELECT column_name FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = %s
          AND is_identity = 'NO' AND coalesce(column_default, '') NOT LIKE 'nextval(%%'
        ORDER BY ordinal_position
        """,
        (table,),
    ).fetchall()
    return [r[0] for r in rows]


def dump(url: str, directory: Path) -> dict[str, list[str]]:
    """Write each table's loadable columns to DIRECTORY/<table>.tsv (COPY text format)."""
    import psycopg

    columns: dict[str, list[str]] = {}
    with psycopg.connect(url) as conn:
        for table in TABLES:
            cols = loadable_columns(conn, table)
            columns[table] = cols
            sql = f"COPY (SELECT {', '.join(cols)} FROM {table}) TO STDOUT"
            with (
                conn.cursor() as cur,
                cur.copy(sql) as copy,
                (directory / f"{table}.tsv").open("wb") as out,
            ):
                for chunk in copy:
                    out.write(chunk)
    return columns


def raw_load(url: str, directory: Path, columns: dict[str, list[str]]) -> tuple[float, str]:
    """Load the dumped files; returns (seconds, how)."""
    psql = shutil.which("psql")
    if psql is not None:
        script = directory / "load.sql"
        script.write_text(
            "".join(
                f"\\copy {t} ({', '.join(columns[t])}) FROM '{directory / f'{t}.tsv'}'\n"
                for t in TABLES
            )
        )
        cmd = [psql, "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(script)]
        with timer() as t:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"psql \\copy failed: {proc.stderr.strip()}")
        return t[0], "one psql process, \\copy of the 4 tables in one transaction"
    log("psql not found: raw limit measured with psycopg COPY FROM STDIN instead")
    import psycopg

    with timer() as t, psycopg.connect(url) as conn, conn.transaction(), conn.cursor() as cur:
        for table in TABLES:
            sql = f"COPY {table} ({', '.join(columns[table])}) FROM STDIN"
            with cur.copy(sql) as copy, (directory / f"{table}.tsv").open("rb") as src:
                while chunk := src.read(1 << 20):
                    copy.write(chunk)
    return t[0], "psycopg COPY FROM STDIN of the 4 tables in one transaction"


def stockctl_seed(products: int, warehouses: int, workdir: Path, dump_rows: bool) -> dict[str, Any]:
    with fresh_pg_database() as url:
        stockctl("init", database_url=url)
        args = ("seed", "--products", str(products), "--warehouses", str(warehouses), "-o", "json")
        with timer() as t:
            proc = stockctl(*args, database_url=url)
        reported = json.loads(proc.stdout)
        verify(url, products, warehouses)
        columns = dump(url, workdir) if dump_rows else {}
    return {"wall": t[0], "load": float(reported["seconds"]), "columns": columns}


def raw_seed(
    products: int, warehouses: int, workdir: Path, columns: dict[str, list[str]]
) -> tuple[float, str]:
    with fresh_pg_database() as url:
        stockctl("init", database_url=url)
        seconds, how = raw_load(url, workdir, columns)
        verify(url, products, warehouses)
    return seconds, how


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2,000 x 20 rows, one run of each side")
    p.add_argument("--products", type=int, default=None, help="default 10,000 (quick 2,000)")
    p.add_argument("--warehouses", type=int, default=20)
    p.add_argument("--repeat", type=int, default=None, help="runs of each side (3; quick 1)")
    args = p.parse_args()
    args.products = args.products or (2_000 if args.quick else 10_000)
    args.repeat = args.repeat or (1 if args.quick else 3)
    rows = args.products * args.warehouses

    walls: list[float] = []
    loads: list[float] = []
    raws: list[float] = []
    columns: dict[str, list[str]] = {}
    how = ""
    with tempfile.TemporaryDirectory(prefix="stockctl-bench-seed-") as tmp:
        workdir = Path(tmp)
        for i in range(args.repeat):
            run = stockctl_seed(args.products, args.warehouses, workdir, dump_rows=i == 0)
            columns = columns or run["columns"]
            walls.append(run["wall"])
            loads.append(run["load"])
            raw, how = raw_seed(args.products, args.warehouses, workdir, columns)
            raws.append(raw)
            log(
                f"run {i + 1}/{args.repeat}: stockctl seed {run['wall']:.2f} s "
                f"(load {run['load']:.2f} s), raw {raw:.2f} s"
            )

    wall, load, raw = median(walls), median(loads), median(raws)
    shape = f"{args.products:,} products x {args.warehouses} warehouses"
    figures = [
        Figure(
            name=f"`stockctl seed` {rows:,} inventory + {rows:,} ledger rows ({shape}), PostgreSQL",
            value=round(wall, 3),
            unit="s",
            raw=round(raw, 3),
            ratio=round(raw / wall, 3),
            goal="a few seconds (issue 2)",
            note=(
                f"median of {args.repeat}; stockctl timed as a whole process, of which the load "
                f"itself took {load:.2f} s (as the command reports); raw = {how}, same rows"
            ),
        ),
        Figure(
            name="`stockctl seed` throughput (inventory rows, each with its ledger row)",
            value=round(rows / wall),
            unit="rows/s",
            raw=round(rows / raw),
            ratio=round(raw / wall, 3),
        ),
    ]
    emit(figures, args.json)


if __name__ == "__main__":
    main()
