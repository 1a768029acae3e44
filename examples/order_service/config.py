"""The order service's settings, from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    stock_api_url: str = "http://127.0.0.1:8080"  # STOCK_API_URL: `stockctl up` / `serve`
    stock_api_token: str | None = None  # STOCK_API_TOKEN: a token with the "reserve" scope
    orders_db: str = "orders.db"  # ORDERS_DB: this service's SQLite file (created if missing)
    host: str = "127.0.0.1"  # HOST
    port: int = 8090  # PORT

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        port = env.get("PORT") or str(cls.port)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise SystemExit(f"PORT must be a port number (1-65535), not {port!r}")
        return cls(
            stock_api_url=env.get("STOCK_API_URL") or cls.stock_api_url,
            stock_api_token=env.get("STOCK_API_TOKEN") or None,
            orders_db=env.get("ORDERS_DB") or cls.orders_db,
            host=env.get("HOST") or cls.host,
            port=int(port),
        )
