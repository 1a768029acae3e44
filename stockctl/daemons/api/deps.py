"""What routes share: the wired App, auth by bearer token and scope, conversions."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from stockctl.bootstrap import App
from stockctl.core.mappings import movement_fields, reservation_fields, row_fields
from stockctl.core.model import Inventory, Movement, Reservation
from stockctl.core.values import MAX_IDEMPOTENCY_KEY
from stockctl.daemons.api import schemas

# admin implies reserve implies read
_IMPLIED = {"admin": {"admin", "reserve", "read"}, "reserve": {"reserve", "read"}, "read": {"read"}}


# Every dependency here is ``async def``: FastAPI runs a plain ``def`` dependency in the thread
# pool, one hop (a thread wake-up and a GIL hand-over) per dependency per request; none of
# these blocks, so each runs on the event loop instead.


def app_of(request: Request) -> App:
    app: App = request.app.state.stockctl
    return app


async def get_app(request: Request) -> App:
    return app_of(request)


AppDep = Annotated[App, Depends(get_app)]


# Declared as security schemes, so the OpenAPI document says how to authenticate.
_BEARER = HTTPBearer(auto_error=False, description="a token from settings `api_tokens`")
_DAPR = APIKeyHeader(
    name="dapr-api-token",
    auto_error=False,
    description="Dapr's app API token (the sidecar sends it on pushed events)",
)


def require(scope: str) -> Callable[..., Awaitable[None]]:
    """A dependency that lets the request through only with a token granting ``scope``."""

    async def check(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)] = None,
        dapr_api_token: Annotated[str | None, Depends(_DAPR)] = None,
    ) -> None:
        tokens = app_of(request).settings.api_tokens
        if not tokens:
            return  # no tokens configured: serve binds to loopback only (see `serve`)
        presented = bearer.credentials.strip() if bearer else dapr_api_token
        if not presented:
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        granted = grants(tokens, presented)
        if granted is None:
            raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
        if scope not in granted:
            raise HTTPException(403, f"token lacks the {scope!r} scope")

    return check


def grants(tokens: Sequence[Any], presented: str) -> set[str] | None:
    """The scopes the presented token grants (implied ones included); None if it matches no
    configured token. Compared with every token, in constant time each."""
    granted: set[str] = set()
    matched = False
    for t in tokens:
        if hmac.compare_digest(t.token.get_secret_value().encode(), presented.encode()):
            matched = True
            for s in t.scopes:
                granted |= _IMPLIED[s]
    return granted if matched else None


async def idempotency_key(
    key: Annotated[
        str | None, Header(alias="Idempotency-Key", max_length=MAX_IDEMPOTENCY_KEY)
    ] = None,
) -> str | None:
    return key


IdemKey = Annotated[str | None, Depends(idempotency_key)]


def row_out(r: Inventory) -> schemas.InventoryRow:
    return schemas.InventoryRow(**row_fields(r))


def reservation_out(r: Reservation) -> schemas.ReservationOut:
    return schemas.ReservationOut(**reservation_fields(r))


def movement_out(m: Movement) -> schemas.MovementOut:
    return schemas.MovementOut(**movement_fields(m))


def problem(status: int, detail: str, slug: str, **extra: Any) -> dict[str, Any]:
    """RFC 9457 problem details. One title per problem type, from its slug
    (``insufficient-stock`` -> ``Insufficient stock``); ``detail`` says what happened here."""
    return {
        "type": f"https://stockctl.dev/problems/{slug}",
        "title": slug.replace("-", " ").capitalize(),
        "status": status,
        "detail": detail,
        **extra,
    }
