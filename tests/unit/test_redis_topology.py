"""``redis_url`` names one of three topologies; every malformed URL is refused as bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockctl.errors import InvalidInput
from stockctl.redis.topology import parse_redis_url
from stockctl.settings import load_settings


@pytest.mark.parametrize(
    ("url", "kind", "nodes", "db", "master", "tls"),
    [
        ("redis://127.0.0.1:6379/3", "standalone", [("127.0.0.1", 6379)], 3, None, False),
        ("rediss://cache.example", "standalone", [("cache.example", 6379)], 0, None, True),
        ("redis://[::1]:6380/0", "standalone", [("::1", 6380)], 0, None, False),
        (
            "redis+cluster://a:7000,b:7001,c:7002",
            "cluster",
            [("a", 7000), ("b", 7001), ("c", 7002)],
            0,
            None,
            False,
        ),
        ("rediss+cluster://a:7000/0", "cluster", [("a", 7000)], 0, None, True),
        (
            "redis+sentinel://s1:26379,s2:26379/mymaster/5",
            "sentinel",
            [("s1", 26379), ("s2", 26379)],
            5,
            "mymaster",
            False,
        ),
        ("redis+sentinel://s1:26379/mymaster", "sentinel", [("s1", 26379)], 0, "mymaster", False),
    ],
)
def test_the_three_topologies(
    url: str, kind: str, nodes: list[tuple[str, int]], db: int, master: str | None, tls: bool
) -> None:
    t = parse_redis_url(url)
    assert (t.kind, list(t.nodes), t.db, t.master, t.tls) == (kind, nodes, db, master, tls)
    assert t.cluster is (kind == "cluster")


def test_credentials_are_kept_and_masked() -> None:
    t = parse_redis_url("redis+sentinel://app:p%40ss@s1:26379/m/1?sentinel_password=sp")
    assert (t.username, t.password, t.sentinel_password) == ("app", "p@ss", "sp")
    assert t.masked() == "redis+sentinel://app:***@s1:26379/m/1?sentinel_password=***"
    assert "p@ss" not in repr(t) and "sp'" not in repr(t)
    assert parse_redis_url("redis://:tok@h:1/0").masked() == "redis://:***@h:1/0"
    assert parse_redis_url("redis://h:1").masked() == "redis://h:1"


@pytest.mark.parametrize(
    "url",
    [
        "http://h:6379",
        "h:6379",
        "redis://h:abc/5",
        "redis://h:0",
        "redis://h:65536",
        "redis://h:1:2/0",
        "redis://a:1,b:2",
        "redis://h:1/x",
        "redis://h:1/0/1",
        "redis+cluster://h:1/3",
        "redis+cluster://h:1,,h:2",
        "redis+sentinel://h:1",
        "redis+sentinel://h:1/",
        "redis+sentinel://h:1/bad name",
        "redis://h:1?sentinel_password=x",
        "redis+sentinel://h:1/m?password=x",
        "redis://h space:1",
    ],
)
def test_malformed_urls_are_invalid_input_naming_the_setting(url: str) -> None:
    with pytest.raises(InvalidInput, match="redis_url"):
        parse_redis_url(url)
    with pytest.raises(InvalidInput, match="redis_url"):
        load_settings(redis_url=url)


@given(st.text(max_size=60))
def test_any_text_parses_or_is_refused_as_bad_input(text: str) -> None:
    try:
        t = parse_redis_url(text)
    except InvalidInput as exc:
        assert "\n" not in str(exc)
    else:
        assert t.nodes and all(1 <= p <= 65_535 for _, p in t.nodes)
