"""Request bodies read strictly: a JSON object naming a key twice, ``NaN`` / ``Infinity``, or
JSON nested too deep to read is refused (422) before any route sees it.

Python's ``json`` keeps the last of two equal keys (``{"quantity": -5, "quantity": 1}`` would
be read as 1) and takes ``NaN``; neither is JSON a client can mean.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """Every route of the API reads its body with :func:`loads`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict


def loads(body: bytes | str) -> Any:
    """``json.loads``, refusing duplicate keys, non-finite numbers and deep nesting (raised as
    ``JSONDecodeError``, which FastAPI answers with a 422)."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except _Refused as exc:
        raise json.JSONDecodeError(str(exc), text, 0) from None
    except RecursionError:
        raise json.JSONDecodeError("JSON nested too deep", text, 0) from None


class _Refused(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")
