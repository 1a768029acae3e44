"""stockctl: multi-warehouse stock that stays correct and fast.

``import stockctl`` is cheap: the library loads on first use of ``connect`` or an error class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stockctl.__about__ import __version__

if TYPE_CHECKING:
    from stockctl.library import Stockctl, connect

__all__ = ["Stockctl", "__version__", "connect", "errors"]


def __getattr__(name: str) -> Any:
    if name in ("connect", "Stockctl"):
        from stockctl import library

        return getattr(library, name)
    if name == "errors":
        import stockctl.errors as errors

        return errors
    raise AttributeError(f"module 'stockctl' has no attribute {name!r}")
