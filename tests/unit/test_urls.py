"""Database URLs: masking for output, normalising to psycopg 3, and naming a target in messages."""

from __future__ import annotations

import pytest

from stockctl.errors import InvalidInput
from stockctl.store.engine import describe_target, mask_url, normalise_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:secret@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql+psycopg://u:secret@h/db", "postgresql+psycopg://u:***@h/db"),
        ("postgresql://u:p%40ss%2Fw@h/db", "postgresql://u:***@h/db"),
        ("redis://:secret@h:6379/0", "redis://:***@h:6379/0"),
        ("rediss://default:secret@h:6380", "rediss://default:***@h:6380"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:////var/lib/stockctl.db", "sqlite:////var/lib/stockctl.db"),
        ("sqlite://", "sqlite://"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_url_masks_an_unparsable_url_with_credentials_whole() -> None:
    assert mask_url("not a url but user:secret@host") == "***"
    assert mask_url("plain words") == "plain words"


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("postgres://u:pw@h:5/db", "postgresql+psycopg://u:pw@h:5/db"),
        ("postgresql://u:pw@h/db", "postgresql+psycopg://u:pw@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql://u:p%40ss@h/db", "postgresql+psycopg://u:p%40ss@h/db"),
        ("sqlite:////tmp/s.db", "sqlite:////tmp/s.db"),
        ("sqlite:///relative.db", "sqlite:///relative.db"),
    ],
)
def test_normalise_url(url: str, normal: str) -> None:
    assert normalise_url(url) == normal


@pytest.mark.parametrize("url", ["mysql://u:pw@h/db", "oracle://h/db", "redis://h:6379/0"])
def test_normalise_url_refuses_other_databases(url: str) -> None:
    with pytest.raises(InvalidInput, match="unsupported"):
        normalise_url(url)


def test_normalise_url_refuses_garbage_without_showing_the_password() -> None:
    with pytest.raises(InvalidInput) as caught:
        normalise_url("::not-a-url::user:hunter2@x")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("postgresql://u:pw@db.example:6543/stock", "db.example:6543/stock"),
        ("postgresql://u@db.example/stock", "db.example:5432/stock"),
        ("sqlite:////tmp/s.db", "sqlite file /tmp/s.db"),
    ],
)
def test_describe_target_names_host_or_file_but_no_password(url: str, target: str) -> None:
    assert describe_target(url) == target
