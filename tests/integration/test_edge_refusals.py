"""Issue 17's cases, one test each: refused at the edge on the HTTP API, the CLI and the library
(where each takes the input), and the database (every row of every table) unchanged.

On SQLite and PostgreSQL (the module fixtures of test_bad_input_fuzz.py). The generated
variants of these cases are in test_bad_input_fuzz.py; the settings' in tests/unit/test_settings.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from stockctl.cli import app as cli_app
from stockctl.errors import InvalidInput
from tests import dbutil
from tests.apiutil import assert_problem
from tests.integration.test_bad_input_fuzz import World, module_api, world

__all__ = ["module_api", "world"]  # the fixtures, shared with the fuzz module

NUL, RLO = "a\x00b", "a\u202eb"


@pytest.fixture
def w(world: World) -> World:
    return world


def _refused_over_http(w: World, method: str, path: str, body: Any = None, raw: str = "") -> str:
    before = dbutil.snapshot(w.sc)
    if raw:
        headers = {"content-type": "application/json"}
        response = w.api.client.request(method, path, content=raw.encode(), headers=headers)
    else:
        response = w.api.client.request(method, path, json=body)
    detail = str(assert_problem(response, 422, "invalid-input")["detail"])
    assert "\n" not in detail
    assert dbutil.snapshot(w.sc) == before
    return detail


def _refused_on_the_cli(w: World, *argv: str) -> str:
    before = dbutil.snapshot(w.sc)
    result = CliRunner().invoke(cli_app, ["--database-url", w.url, *argv])
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert dbutil.snapshot(w.sc) == before
    return str(result.output)


def _bodies(w: World) -> dict[str, tuple[str, str, dict[str, Any]]]:
    v = w.values
    p, a, b, r = v["product_id"], v["warehouse_id"], v["to_warehouse_id"], v["reservation_id"]
    return {
        "adjust": ("POST", "/v1/inventory/adjust", {"product_id": p, "warehouse_id": a, "delta": 1, "reason": "x"}),  # noqa: E501
        "receive": ("POST", "/v1/inventory/receive", {"product_id": p, "warehouse_id": a, "quantity": 1}),  # noqa: E501
        "transfer": ("POST", "/v1/inventory/transfer", {"product_id": p, "from_warehouse_id": a, "to_warehouse_id": b, "quantity": 1}),  # noqa: E501
        "set": ("PUT", f"/v1/inventory/{p}", {"warehouse_id": a, "quantity_available": 7}),
        "reserve": ("POST", "/v1/inventory/reserve", {"product_id": p, "warehouse_id": a, "quantity": 1}),  # noqa: E501
        "release": ("POST", f"/v1/inventory/reservations/{r}/release", {}),
        "release-order": ("POST", "/v1/inventory/reservations/release-order", {"order_id": v["order_id"]}),  # noqa: E501
        "extend": ("POST", f"/v1/inventory/reservations/{r}/extend", {"ttl_seconds": 60}),
        "checkout": ("POST", "/v1/inventory/checkout", {"items": [{"product_id": p, "warehouse_id": a, "quantity": 1}]}),  # noqa: E501
    }  # fmt: skip


def _argv(w: World) -> dict[str, list[str]]:
    v = w.values
    p, a, b = v["product_id"], v["warehouse_id"], v["to_warehouse_id"]
    return {
        "adjust": ["stock", "adjust", p, a, "1", "--reason", "x"],
        "receive": ["stock", "receive", p, a, "1"],
        "transfer": ["stock", "transfer", p, a, b, "1"],
        "set": ["stock", "set", p, a, "7"],
        "reserve": ["reserve", p, a, "1"],
        "release": ["release", str(v["reservation_id"])],
        "release-order": ["release", "--order", v["order_id"]],
    }


# NUL bytes (HTTP 500 on PostgreSQL before) and bidirectional overrides in text ------------------

TEXT_ROUTES = ["adjust", "receive", "transfer", "set", "release", "release-order"]


@pytest.mark.parametrize("char", [NUL, RLO, "a\tb", "a\u2028b"], ids=["nul", "rlo", "tab", "ls"])
@pytest.mark.parametrize("route", TEXT_ROUTES)
def test_a_control_or_bidi_character_in_reason_is_422(w: World, route: str, char: str) -> None:
    method, path, body = _bodies(w)[route]
    detail = _refused_over_http(w, method, path, {**body, "reason": char})
    assert "reason holds a control or invisible character" in detail


@pytest.mark.parametrize("char", [NUL, RLO], ids=["nul", "rlo"])
@pytest.mark.parametrize("route", TEXT_ROUTES)
def test_a_control_or_bidi_character_in_reason_is_exit_2(w: World, route: str, char: str) -> None:
    output = _refused_on_the_cli(w, *_argv(w)[route], "--reason", char)
    assert "reason holds a control or invisible character" in output


@pytest.mark.parametrize(
    ("route", "field"),
    [("receive", "reference"), ("reserve", "order_id"), ("checkout", "order_id")],
)
@pytest.mark.parametrize("char", [NUL, RLO], ids=["nul", "rlo"])
def test_control_characters_in_references_and_order_ids(
    w: World, route: str, field: str, char: str
) -> None:
    method, path, body = _bodies(w)[route]
    _refused_over_http(w, method, path, {**body, field: char})


def test_a_lone_surrogate_is_422_not_an_encoding_error(w: World) -> None:
    method, path, body = _bodies(w)["adjust"]
    raw = json.dumps(body)[:-1] + ', "reference": "\\ud800"}'
    assert "reference" in _refused_over_http(w, method, path, raw=raw)


def test_the_library_refuses_the_same_text(w: World) -> None:
    v = w.values
    before = dbutil.snapshot(w.sc)
    for call in (
        lambda: w.sc.adjust(v["product_id"], v["warehouse_id"], 1, reason=NUL),
        lambda: w.sc.receive(v["product_id"], v["warehouse_id"], 1, reason=RLO),
        lambda: w.sc.release(v["reservation_id"], NUL),
        lambda: w.sc.release_order(v["order_id"], RLO),
        lambda: w.sc.reserve(v["product_id"], v["warehouse_id"], 1, order_id=NUL),
    ):
        with pytest.raises(InvalidInput, match="control or invisible"):
            call()
    assert dbutil.snapshot(w.sc) == before


# JSON numbers only where numbers are meant -------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "field", "value"),
    [
        ("receive", "quantity", "5"), ("receive", "quantity", True), ("receive", "quantity", 5.0),
        ("reserve", "quantity", True), ("reserve", "quantity", "1"), ("transfer", "quantity", 1.0),
        ("adjust", "delta", "5"), ("adjust", "delta", True), ("adjust", "delta", -1.0),
        ("set", "quantity_available", "7"), ("set", "expect_version", "1"),
        ("reserve", "ttl_seconds", "60"), ("extend", "ttl_seconds", "60"),
        ("extend", "ttl_seconds", 60.0), ("checkout", "ttl_seconds", True),
    ],
)  # fmt: skip
def test_a_number_that_is_not_a_json_integer_is_422(
    w: World, route: str, field: str, value: Any
) -> None:
    method, path, body = _bodies(w)[route]
    detail = _refused_over_http(w, method, path, {**body, field: value})
    assert "must be a whole number" in detail


def test_a_checkout_item_quantity_as_text_is_422(w: World) -> None:
    method, path, body = _bodies(w)["checkout"]
    items = [{**body["items"][0], "quantity": "1"}]
    _refused_over_http(w, method, path, {**body, "items": items})


@pytest.mark.parametrize("text", [" 5", "5 ", "+5", "5.0", "1_0", "\u00b2"])
@pytest.mark.parametrize("route", ["receive", "adjust", "transfer", "set", "reserve"])
def test_a_loose_number_on_the_command_line_is_exit_2(w: World, route: str, text: str) -> None:
    argv = _argv(w)[route]
    at = {"transfer": 5}.get(route, 4 if route != "reserve" else 3)
    output = _refused_on_the_cli(w, *argv[:at], text, *argv[at + 1 :])
    assert "must be a whole number" in output or "malformed" in output


# strict JSON bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        '{"product_id": "%(p)s", "warehouse_id": "%(a)s", "delta": -5, "delta": 1, "reason": "x"}',
        '{"product_id": "%(p)s", "product_id": "%(p)s", "warehouse_id": "%(a)s", "delta": 1,'
        ' "reason": "x"}',
        '{"product_id": "%(p)s", "warehouse_id": "%(a)s", "delta": NaN, "reason": "x"}',
        '{"product_id": "%(p)s", "warehouse_id": "%(a)s", "delta": Infinity, "reason": "x"}',
    ],
    ids=["duplicate-delta", "duplicate-same-value", "nan", "infinity"],
)
def test_duplicate_keys_and_non_finite_numbers_are_422(w: World, raw: str) -> None:
    text = raw % {"p": w.values["product_id"], "a": w.values["warehouse_id"]}
    detail = _refused_over_http(w, "POST", "/v1/inventory/adjust", raw=text)
    assert "invalid JSON" in detail


def test_a_duplicate_key_inside_a_checkout_item_is_422(w: World) -> None:
    p, a = w.values["product_id"], w.values["warehouse_id"]
    raw = f'{{"items": [{{"product_id": "{p}", "warehouse_id": "{a}", "quantity": 1, "quantity": 2}}]}}'  # noqa: E501
    assert "duplicate key 'quantity'" in _refused_over_http(
        w, "POST", "/v1/inventory/checkout", raw=raw
    )  # noqa: E501


@pytest.mark.parametrize(
    "since", [0, "0", 1700000000, 1.5, True, "2024-11-09", "2024-11-09T00:00:00", "yesterday"]
)
def test_since_takes_an_rfc_3339_time_only(w: World, since: Any) -> None:
    body = {"since": since}
    detail = _refused_over_http(w, "POST", "/v1/inventory/recently-updated", body)
    assert "since" in detail


def test_since_as_rfc_3339_is_accepted(w: World) -> None:
    response = w.api.client.post(
        "/v1/inventory/recently-updated", json={"since": "2024-11-09T00:00:00Z"}
    )
    assert response.status_code == 200, response.text


# a config file's actor: exit 2 naming the setting (exit 4 on PostgreSQL before) ---------------


def test_a_nul_in_the_configured_actor_is_exit_2_naming_it(w: World, tmp_path: Path) -> None:
    config = tmp_path / "actor.yaml"
    config.write_text('actor: "a\\0b"\n', encoding="utf-8")
    output = _refused_on_the_cli(w, "--config", str(config), *_argv(w)["adjust"])
    assert "invalid settings: actor:" in output
