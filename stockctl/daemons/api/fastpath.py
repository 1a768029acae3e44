"""One cheap thread-pool hop per request for the API's blocking routes, not two dear ones.

FastAPI runs a plain ``def`` route in the thread pool (anyio's ``to_thread``: a capacity
limiter, cancel scopes and a condition variable per call), then, back on the event loop,
validates what it returned against the response model, again in the thread pool (a second hop:
a thread wake-up and two GIL hand-overs), before serialising it. A route of ours returns the
very model it declares, built (so validated) by the route itself.

:func:`serialise_in_worker` turns each such route into a coroutine that runs the route in a
:class:`~concurrent.futures.ThreadPoolExecutor` of its own (a C queue and one future; measured
at half the CPU of anyio's hop) with the request's context variables, and serialises its answer
to JSON bytes in that same worker thread; FastAPI then sends that ``Response`` as it is (and,
the endpoint being a coroutine, never hops for it). The bytes are those FastAPI would send (the
model's pydantic serializer, by alias, nothing excluded), with the route's status code. A route
answering anything else (another type, a ``Response``) goes through FastAPI's usual path, still
on the event loop. The executor has as many threads as anyio's default limiter (40).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter, Response
from fastapi.datastructures import DefaultPlaceholder
from fastapi.routing import APIRoute
from pydantic import BaseModel

_MARK = "_stockctl_serialised_in_worker"
THREADS = 40  # anyio's default thread limiter, which FastAPI's hop would have used
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(THREADS, thread_name_prefix="stockctl-api")
    return _executor


def serialise_in_worker(router: APIRouter) -> None:
    """Wrap each eligible route's endpoint (once: the routers are module-level)."""
    for route in router.routes:
        if isinstance(route, APIRoute) and _eligible(route):
            route.endpoint = _answering(route.endpoint, route.response_model, route.status_code)


def _eligible(route: APIRoute) -> bool:
    endpoint = route.endpoint
    model = route.response_model
    return (
        not getattr(endpoint, _MARK, False)
        and inspect.isfunction(endpoint)
        and not inspect.iscoroutinefunction(endpoint)
        and not inspect.isgeneratorfunction(endpoint)
        and isinstance(model, type)
        and issubclass(model, BaseModel)
        and isinstance(route.response_class, DefaultPlaceholder)
        and route.response_model_include is None
        and route.response_model_exclude is None
        and route.response_model_by_alias
        and not route.response_model_exclude_unset
        and not route.response_model_exclude_defaults
        and not route.response_model_exclude_none
        and not any(
            p.annotation is Response or p.annotation == "Response"
            for p in inspect.signature(endpoint).parameters.values()
        )
    )


async def in_worker(call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)`` in the API's worker threads, with the caller's context variables."""
    run = contextvars.copy_context().run
    return await asyncio.get_running_loop().run_in_executor(_pool(), run, call, *args)


def _answering(
    endpoint: Callable[..., Any], model: type[BaseModel], status_code: int | None
) -> Callable[..., Coroutine[Any, Any, Any]]:
    to_json = model.__pydantic_serializer__.to_json
    status = status_code or 200

    def answer(kwargs: dict[str, Any]) -> Any:  # in the worker thread
        result = endpoint(**kwargs)
        if type(result) is model:
            return Response(to_json(result, by_alias=True), status, media_type="application/json")
        return result

    @functools.wraps(endpoint)
    async def answered(**kwargs: Any) -> Any:
        run = contextvars.copy_context().run
        return await asyncio.get_running_loop().run_in_executor(_pool(), run, answer, kwargs)

    setattr(answered, _MARK, True)
    return answered
