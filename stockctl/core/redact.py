"""Secrets out of everything stockctl prints or logs: URL passwords, secret query parameters,
and the configured tokens wherever they appear."""

from __future__ import annotations

import logging
import re

# A query parameter whose name says it carries a secret (?token=, ?api_key=, ?password= ...).
SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)?|pwd|secret|token|api[-_]?key|access[-_]?key|auth|credential"
    r"|signature|sig$|session",
    re.IGNORECASE,
)
MASK = "***"


def mask_query(query: str, secrets: frozenset[str] = frozenset()) -> str:
    """``a=1&token=x`` -> ``a=1&token=***``: values of secret-named parameters, and any value
    that is one of ``secrets``, are masked; the rest is kept as it came."""
    parts = []
    for pair in query.split("&"):
        name, eq, value = pair.partition("=")
        if eq and value and (SECRET_NAME.search(name) or _unquoted(value) in secrets):
            value = MASK
        parts.append(f"{name}{eq}{value}")
    return "&".join(parts)


def mask_path(path: str, secrets: frozenset[str] = frozenset()) -> str:
    """A request target (path and query) fit for a log line."""
    base, question, query = path.partition("?")
    for secret in secrets:
        base = base.replace(secret, MASK)
    return base + question + mask_query(query, secrets) if question else base


def _unquoted(value: str) -> str:
    from urllib.parse import unquote_plus

    return unquote_plus(value)


class AccessLogSecrets(logging.Filter):
    """On uvicorn's access logger: the request target of each line through :func:`mask_path`
    (uvicorn logs it verbatim: a token put in a query string would be written to the log)."""

    def __init__(self) -> None:
        super().__init__("")
        self.secrets: frozenset[str] = frozenset()

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], mask_path(args[2], self.secrets), *args[3:])
        return True


_ACCESS_FILTER = AccessLogSecrets()


def guard_access_log(secrets: frozenset[str] | set[str] = frozenset()) -> None:
    """Install the filter on ``uvicorn.access`` (once) and add ``secrets`` to what it masks."""
    logger = logging.getLogger("uvicorn.access")
    if _ACCESS_FILTER not in logger.filters:
        logger.addFilter(_ACCESS_FILTER)
    _ACCESS_FILTER.secrets = _ACCESS_FILTER.secrets | frozenset(s for s in secrets if s)
