"""One definition of a valid value per kind: ids, whole numbers, text, timestamps, URLs.

Every edge checks its input with these functions, or with a type built from them: the core use
cases (so the library refuses what the CLI and the HTTP API refuse), the HTTP schemas
(``stockctl/daemons/api/schemas.py``), the CLI's argument types and the settings. A value
refused in one place is refused in all of them, with the same one-line ``InvalidInput``.

- **Whole numbers** are ``int`` and nothing else: no ``bool``, no ``float`` (``5.0``), no text
  (``"5"``). Text from the command line is read by :func:`parse_whole`: ASCII digits with an
  optional leading ``-``, no spaces, no ``+``, no ``_``, at most 12 digits.
- **Text** (reasons, references, order ids, actors, names, idempotency keys) holds no control
  character (C0, DEL, C1), no invisible format character (soft hyphen, zero-width space, word
  joiner, BOM), no bidirectional mark, embedding, override or isolate (e.g. U+202E), no line or
  paragraph separator and no lone surrogate (it could not be stored as UTF-8): see
  :data:`FORBIDDEN_TEXT`. Zero-width (non-)joiners stay allowed (emoji, Indic scripts).
- **Timestamps** are RFC 3339 text with a time zone (``2024-11-09T00:00:00Z``) or an aware
  ``datetime``; never a number (``0`` is not 1970).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from stockctl.errors import InvalidInput

MAX_QUANTITY = 2**31 - 1
MAX_TTL_SECONDS = 30 * 86400  # what any reservation_max_ttl_seconds setting may allow
MAX_REASON = 200  # stock_movements.reason
MAX_REFERENCE = 128  # stock_movements.reference
MAX_ORDER_ID = 128  # reservations.order_id
MAX_ACTOR = 128  # stock_movements.actor
MAX_NAME = 200  # products.name, warehouses.name
MAX_IDEMPOTENCY_KEY = 200  # idempotency_keys.key

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_ID_RE = re.compile(ID_PATTERN)

# Characters no text value may hold (see the module docstring), as one regex character class.
FORBIDDEN_TEXT = (
    "[\\x00-\\x1f\\x7f-\\x9f\\xad\\u061c\\u180e\\u200b\\u200e\\u200f\\u2028-\\u202e"
    "\\u2060-\\u206f\\ufeff\\ud800-\\udfff]"
)
TEXT_PATTERN = f"^(?:(?!{FORBIDDEN_TEXT}).)*$"  # for the OpenAPI document
_FORBIDDEN_RE = re.compile(FORBIDDEN_TEXT)
_WHOLE_RE = re.compile(r"-?[0-9]{1,12}")
_RFC3339_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


# Ids that passed check_id (exact str only), so that the hot paths (bulk stock checks 1,000 ids
# in the HTTP schema and again in the core) match each id once: bounded, cleared when full.
_VALID_IDS: set[str] = set()
_VALID_IDS_MAX = 100_000


def check_id(value: Any, what: str) -> str:
    """Product and warehouse ids: 1-64 letters, digits, ``_ . -``; no ``:`` (cache keys)."""
    if type(value) is str and value in _VALID_IDS:
        return value
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise InvalidInput(
            f"malformed {what} id {_show(value)}: use 1-64 letters, digits, '_', '.' or '-'",
            field=what,
        )
    if type(value) is str:
        if len(_VALID_IDS) >= _VALID_IDS_MAX:
            _VALID_IDS.clear()
        _VALID_IDS.add(value)
    return value


def check_whole(value: Any, what: str, low: int, high: int) -> int:
    """An ``int`` (not a bool, float or text) from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be a whole number, got {_show(value)}", field=what)
    if value < low or value > high:
        raise InvalidInput(f"{what} must be between {low} and {high}, got {value}", field=what)
    return value


def check_quantity(value: Any, what: str = "quantity", *, allow_zero: bool = False) -> int:
    return check_whole(value, what, 0 if allow_zero else 1, MAX_QUANTITY)


def check_delta(value: Any) -> int:
    check_whole(value, "delta", -MAX_QUANTITY, MAX_QUANTITY)
    if value == 0:
        raise InvalidInput(f"delta must be non-zero and within ±{MAX_QUANTITY}, got 0")
    return int(value)


def check_ttl_seconds(value: Any, what: str = "ttl_seconds", high: int = MAX_TTL_SECONDS) -> int:
    return check_whole(value, what, 1, high)


def parse_whole(text: str, what: str) -> int:
    """A whole number typed on the command line: ``12`` or ``-5``; never `` 5``, ``+5``, ``5.0``,
    ``1_000`` or ``²`` (which ``int()`` would all take)."""
    if not isinstance(text, str) or not _WHOLE_RE.fullmatch(text):
        raise InvalidInput(f"{what} must be a whole number, got {_show(text)}", field=what)
    return int(text)


def check_text(
    value: Any, what: str, max_length: int, *, required: bool = False, strip: bool = True
) -> str | None:
    """One line of text, 1-``max_length`` characters, none of :data:`FORBIDDEN_TEXT`.

    None, empty or only spaces is "not given": refused when ``required``, else None (a tab or a
    newline is not blank: it is refused). ``strip``: returned without surrounding spaces.
    """
    if value is None or (isinstance(value, str) and not value.strip(" ")):
        if required:
            raise InvalidInput(f"{what} is required", field=what)
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text, got {_show(value)}", field=what)
    text = value.strip(" ") if strip else value
    if not text or len(text) > max_length:
        raise InvalidInput(f"{what} must be 1-{max_length} characters", field=what)
    bad = _FORBIDDEN_RE.search(text)
    if bad is not None:
        raise InvalidInput(
            f"{what} holds a control or invisible character (U+{ord(bad.group()):04X})",
            field=what,
        )
    return text


def check_reason(value: Any, *, required: bool) -> str | None:
    if required and (value is None or (isinstance(value, str) and not value.strip(" "))):
        raise InvalidInput("a reason is required (--reason)", field="reason")
    return check_text(value, "reason", MAX_REASON)


def check_reference(value: Any) -> str | None:
    """An order, PO or RMA id kept in the ledger: blank means none."""
    return check_text(value, "reference", MAX_REFERENCE, strip=False) if _given(value) else None


def check_order_id(value: Any) -> str | None:
    if value is None:
        return None
    return check_text(value, "order id", MAX_ORDER_ID, required=True, strip=False)


def check_actor(value: Any) -> str:
    checked = check_text(value, "actor", MAX_ACTOR, required=True)
    assert checked is not None
    return checked


def check_name(value: Any) -> str:
    checked = check_text(value, "name", MAX_NAME, required=True)
    assert checked is not None
    return checked


def check_idempotency_key(value: Any) -> str | None:
    if value is None:
        return None
    return check_text(value, "idempotency key", MAX_IDEMPOTENCY_KEY, required=True, strip=False)


def check_timestamp(value: Any, what: str = "since") -> datetime:
    """An aware ``datetime``, or RFC 3339 text with a time zone; never a number."""
    if isinstance(value, str) and _RFC3339_RE.fullmatch(value):
        try:
            value = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(f"{what}: no such time {_show(value)}", field=what) from None
    if not isinstance(value, datetime):
        raise InvalidInput(
            f"{what} must be an RFC 3339 time such as 2024-11-09T00:00:00Z, got {_show(value)}",
            field=what,
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{what} must carry a timezone (e.g. 2024-11-09T00:00:00Z)", field=what)
    return value


def check_port(text: str | None, where: str) -> int | None:
    """A URL's port: absent, or 1-65535 in ASCII digits."""
    if text is None or text == "":
        return None
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 1 <= int(text) <= 65535:
        raise InvalidInput(f"port {_show(text)} of {where} is not a number from 1 to 65535")
    return int(text)


def check_database_url(url: Any, what: str = "database_url") -> str:
    """``sqlite:///PATH`` or ``postgresql[+driver]://[user[:password]@]host[:port]/db``.

    Checked before anything connects; the message never shows the password.
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(f"{what} is empty: give a sqlite:/// or postgresql:// URL")
    if _FORBIDDEN_RE.search(url) is not None:
        raise InvalidInput(f"{what} holds a control or invisible character")
    scheme, sep, rest = url.partition("://")
    backend = scheme.split("+", 1)[0].lower()
    if not sep or backend not in ("sqlite", "postgresql", "postgres"):
        raise InvalidInput(f"{what}: use postgresql://, postgres:// or sqlite:///PATH")
    if backend == "sqlite":
        return url  # a file path: spaces allowed
    if any(c.isspace() for c in url):
        raise InvalidInput(f"{what} holds a space")
    host, port = _host_port(url)
    check_port(port, f"host {host or 'localhost'}")
    return url


def check_http_url(url: Any, what: str = "api_url") -> str:
    """``http[s]://host[:port][/path]``: the warehouse API a client talks to."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(f"{what} is empty: give an http:// or https:// URL")
    if _FORBIDDEN_RE.search(url) is not None or any(c.isspace() for c in url):
        raise InvalidInput(f"{what} holds a space or control character")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise InvalidInput(f"{what}: use http:// or https://")
    host, port = _host_port(url)
    if not host:
        raise InvalidInput(f"{what} names no host")
    check_port(port, f"host {host}")
    return url


def _host_port(url: str) -> tuple[str, str | None]:
    """The host and the port text of a URL (``[v6]:port`` too); anything after the host that
    is not ``:port`` comes back as the port, to be refused."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:  # e.g. an unclosed [IPv6
        return "", "?"
    hostport = netloc.rpartition("@")[2]
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        return host, (tail[1:] if tail.startswith(":") else tail or None)
    host, colon, port = hostport.partition(":")
    return host, port if colon else None


def _given(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip(" "))


def _show(value: Any) -> str:
    """A value for a one-line message: repr (escapes controls), cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
