"""What PostgreSQL says it is doing (``stockctl diagnose slow``): connections in use against
``max_connections``, queries running long, transactions waiting on a row lock."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text


def activity(conn: Connection, long_query_s: float) -> dict[str, Any]:
    used = conn.execute(text("SELECT count(*) FROM pg_stat_activity")).scalar_one()
    top = conn.execute(text("SHOW max_connections")).scalar_one()
    long = conn.execute(
        text(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND "
            "now() - query_start > make_interval(secs => :s) AND pid <> pg_backend_pid()"
        ),
        {"s": long_query_s},
    ).scalar_one()
    waits = conn.execute(
        text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND "
            "wait_event IN ('tuple', 'transactionid') AND datname = current_database()"
        )
    ).scalar_one()
    return {
        "used": int(used),
        "max": int(top),
        "long_queries": int(long),
        "row_lock_waits": int(waits),
    }
