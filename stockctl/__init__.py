"""stockctl: multi-warehouse stock that stays correct and fast.

``import stockctl`` is cheap: the library loads on first use of ``connect`` or an error class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stockctl.__about__ import __version__

if TYPE_CHECKING:
    from stockctl.clients.order_flow import NoopWarehouse, checkout
    from stockctl.clients.warehouse import WarehouseClient
    from stockctl.clients.warehouse_async import AsyncWarehouseClient
    from stockctl.library import Stockctl, connect

__all__ = [
    "AsyncWarehouseClient",
    "NoopWarehouse",
    "Stockctl",
    "WarehouseClient",
    "__version__",
    "checkout",
    "connect",
    "errors",
]


def __getattr__(name: str) -> Any:
    if name in ("connect", "Stockctl"):
        from stockctl import library

        return getattr(library, name)
    if name in ("checkout", "NoopWarehouse"):
        from stockctl.clients import order_flow

        return getattr(order_flow, name)
    if name == "WarehouseClient":
        from stockctl.clients.warehouse import WarehouseClient

        return WarehouseClient
    if name == "AsyncWarehouseClient":
        from stockctl.clients.warehouse_async import AsyncWarehouseClient

        return AsyncWarehouseClient
    if name == "errors":
        import stockctl.errors as errors

        return errors
    raise AttributeError(f"module 'stockctl' has no attribute {name!r}")
