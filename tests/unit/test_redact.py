"""No secret in any output: URLs, query strings, the access log."""

from __future__ import annotations

import logging

import pytest

from stockctl.core.redact import AccessLogSecrets, mask_path, mask_query
from stockctl.store.engine import mask_url


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ("token=abc", "token=***"),
        ("product_id=P&access_token=abc&x=1", "product_id=P&access_token=***&x=1"),
        ("api_key=1&API-KEY=2&password=3", "api_key=***&API-KEY=***&password=***"),
        ("secret=4&sig=5", "secret=***&sig=***"),
        ("token=", "token="),
        ("flag&token", "flag&token"),
    ],
)  # fmt: skip
def test_secret_named_query_parameters_are_masked(query: str, shown: str) -> None:
    assert mask_query(query) == shown


def test_a_configured_token_is_masked_wherever_it_appears() -> None:
    secret = "tok-" + "a" * 20
    shown = mask_path(f"/v1/products/{secret}?q={secret}&r=tok-%61", frozenset({secret}))
    assert secret not in shown and shown == "/v1/products/***?q=***&r=tok-%61"


def test_database_urls_hide_passwords_in_the_userinfo_and_the_query() -> None:
    shown = mask_url("postgresql://u:pw1@h:5432/db?password=pw2&sslmode=require")
    assert shown == "postgresql://u:***@h:5432/db?password=***&sslmode=require"


def test_the_access_log_filter_masks_uvicorns_request_target() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:1", "GET", "/v1/inventory?token=abc&product_id=P", "1.1", 200), None,
    )  # fmt: skip
    assert AccessLogSecrets().filter(record)
    assert "abc" not in record.getMessage() and "token=***&product_id=P" in record.getMessage()
