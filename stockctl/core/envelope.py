"""Incoming CloudEvents: parse and validate an envelope, Dapr's wrapping included.

A Dapr sidecar publishing plain data wraps it as ``type: com.dapr.event.sent`` with the topic in
``topic``; such an event is handled as the topic's type, its ``data`` the payload.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

MAX_ENVELOPE_BYTES = 1 << 20
MAX_ID_LENGTH = 256
DAPR_WRAPPED = "com.dapr.event.sent"


class InvalidEvent(ValueError):
    """An envelope that can never be processed: it goes to the dead-letter stream."""


# Not frozen: the processor builds one per event, and a frozen dataclass costs five times as
# much to build (0.8 against 0.16 us for five fields). Treat it as a value: never assign to it.
@dataclass(slots=True)
class Incoming:
    id: str
    type: str
    source: str
    data: Any
    subject: str | None = None
    time: datetime | None = None


def parse(raw: bytes | str, topic: str | None = None) -> Incoming:
    # A character is at most 4 bytes in UTF-8: encode only text that might be over the limit.
    size = (
        len(raw.encode("utf-8", "surrogatepass"))
        if isinstance(raw, str) and len(raw) * 4 > MAX_ENVELOPE_BYTES
        else len(raw)
    )
    if size > MAX_ENVELOPE_BYTES:
        raise InvalidEvent(f"envelope larger than {MAX_ENVELOPE_BYTES} bytes")
    try:  # orjson: several times faster than json, on the processor's hot path
        env = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:  # also invalid UTF-8, and nesting over 1024 levels
        raise InvalidEvent(f"not JSON: {exc}") from None
    return from_dict(env, topic)


def from_dict(env: Any, topic: str | None = None) -> Incoming:
    if not isinstance(env, dict):
        raise InvalidEvent("envelope is not a JSON object")
    get: Callable[[str], Any] = env.get
    if get("specversion") != "1.0":
        raise InvalidEvent(f"unsupported specversion {get('specversion')!r}")
    ident, source, kind = get("id"), get("source"), get("type")
    if not (  # the usual envelope, checked inline; the loop names what is wrong
        type(ident) is str
        and type(source) is str
        and type(kind) is str
        and 0 < len(ident) <= MAX_ID_LENGTH
        and 0 < len(source) <= MAX_ID_LENGTH
        and 0 < len(kind) <= MAX_ID_LENGTH
    ):
        for attr in ("id", "source", "type"):
            value = get(attr)
            if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
                raise InvalidEvent(f"attribute {attr!r} missing or not a short string")
    subject = get("subject")
    if subject is not None and not isinstance(subject, str):
        raise InvalidEvent("attribute 'subject' is not a string")
    if kind == DAPR_WRAPPED:
        kind = env.get("topic") or topic or ""
        if not isinstance(kind, str) or not kind:
            raise InvalidEvent("Dapr envelope without a topic")
    return Incoming(ident, kind, source, get("data"), subject, _time(get("time")))


def _time(value: Any) -> datetime | None:
    """The optional ``time`` attribute; an unreadable one is ignored, as it is optional."""
    if not isinstance(value, str):
        return None
    try:  # Python 3.11 reads RFC 3339's "Z" itself
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
