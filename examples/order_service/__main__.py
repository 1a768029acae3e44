"""``python -m examples.order_service``: serve the order service (settings from the
environment: STOCK_API_URL, STOCK_API_TOKEN, ORDERS_DB, HOST, PORT)."""

from __future__ import annotations

import logging

import uvicorn

from examples.order_service.app import app_from_env
from examples.order_service.config import Config


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = Config.from_env()
    uvicorn.run(app_from_env(), host=config.host, port=config.port)


if __name__ == "__main__":
    main()
