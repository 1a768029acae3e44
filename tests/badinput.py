"""One description of every input stockctl takes, and of the bad values of each kind.

``OPERATIONS`` lists each operation with its inputs: the input's name in the library call and the
JSON body (or the path), its kind, and where the CLI takes it (an argument position or an
option), when it does. ``BAD`` gives, per kind, a hypothesis strategy of values the core refuses
(the JSON and library view: wrong types included); ``BAD_ARGV`` the same kind as command-line
text. tests/integration/test_bad_input_fuzz.py drives every operation from this description on
the HTTP API, the CLI and the library; a new route or command is covered by adding it here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from hypothesis import strategies as st

from stockctl.core.values import MAX_QUANTITY, MAX_TTL_SECONDS

# Characters no text may hold (stockctl.core.values.FORBIDDEN_TEXT), as they arrive in JSON.
FORBIDDEN_CHARS = ["\x00", "\x01", "\x08", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\x9b",
                   "\xad", "\u061c", "\u200b", "\u200e", "\u200f", "\u2028", "\u2029", "\u202a",
                   "\u202d", "\u202e", "\u2066", "\u2069", "\u2060", "\ufeff", "\ud800",
                   "\udfff"]  # fmt: skip
_PLAIN = st.text(alphabet="abcXYZ019-_", max_size=6)


def _with_forbidden(prefix: st.SearchStrategy[str] = _PLAIN) -> st.SearchStrategy[str]:
    return st.builds(lambda a, c, b: a + c + b, prefix, st.sampled_from(FORBIDDEN_CHARS), _PLAIN)


def _too_long(most: int) -> st.SearchStrategy[str]:
    return st.integers(most + 1, most + 40).map(lambda n: "x" * n)


_NOT_TEXT = st.one_of(
    st.integers(-5, 5),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.sampled_from("ab"), st.integers(0, 3), max_size=1),
)
_NOT_INT = st.one_of(
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
    st.integers(1, 1000).map(str),
    st.sampled_from([" 5", "5 ", "+5", "5.0", "1e3", "five", ""]),
    st.lists(st.integers(1, 3), min_size=1, max_size=2),
)


def _bad_int(low: int, high: int, *, zero: bool = True) -> st.SearchStrategy[Any]:
    out: list[st.SearchStrategy[Any]] = [
        _NOT_INT,
        st.integers(max_value=low - 1) if low > -(2**62) else st.nothing(),
        st.integers(min_value=high + 1, max_value=2**70),
    ]
    if not zero:
        out.append(st.just(0))
    return st.one_of(*out)


def _bad_id() -> st.SearchStrategy[Any]:
    return st.one_of(
        _with_forbidden(),
        _too_long(64),
        st.sampled_from(["", " ", "a b", "a:b", "-a", ".a", "a/b", "é", "P\u0130"]),
        _NOT_TEXT,
    )


def _bad_text(most: int, *, required: bool) -> st.SearchStrategy[Any]:
    out = [_with_forbidden(), _too_long(most), _NOT_TEXT]
    if required:
        out.append(st.sampled_from(["", "   "]))
    return st.one_of(*out)


BAD: dict[str, st.SearchStrategy[Any]] = {
    "id": _bad_id(),
    "reservation_id": st.one_of(  # no form of id (UUID or number) takes any of these
        _with_forbidden(), st.sampled_from(["x", "not-a-uuid", "1.5", "1e3", "-x", "a b"])
    ),
    "quantity": _bad_int(1, MAX_QUANTITY),
    "count": _bad_int(0, MAX_QUANTITY),
    "delta": _bad_int(-MAX_QUANTITY, MAX_QUANTITY, zero=False),
    "ttl_seconds": _bad_int(1, MAX_TTL_SECONDS),
    "page": _bad_int(1, 1_000_000),
    "limit": _bad_int(1, 1000),
    "reason": _bad_text(200, required=False),
    "required_reason": _bad_text(200, required=True),
    "reference": _bad_text(128, required=False),
    "order_id": _bad_text(128, required=True),
    "timestamp": st.one_of(
        st.integers(-(2**40), 2**40),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
        st.sampled_from(
            [
                "0",
                "1700000000",
                "2024-11-09",
                "2024-11-09T00:00:00",
                "2024-11-09 00:00",
                "20241109T000000Z",
                "2024-13-01T00:00:00Z",
                "2024-02-30T00:00:00Z",
                "yesterday",
                " 2024-11-09T00:00:00Z",
                "2024-11-09T00:00:00Z\x00",
                "",
            ]
        ),  # fmt: skip
        st.lists(st.integers(), max_size=1),
    ),
}

_ARGV_FORBIDDEN = [c for c in FORBIDDEN_CHARS if not 0xD800 <= ord(c) <= 0xDFFF]


def _argv_text(most: int) -> st.SearchStrategy[str]:
    chars = st.sampled_from(_ARGV_FORBIDDEN)
    return st.one_of(st.builds(lambda a, c: a + c + "z", _PLAIN, chars), _too_long(most))


def _argv_int(low: int, high: int, *, zero: bool = True) -> st.SearchStrategy[str]:
    loose = [" 5", "5 ", "+5", "5.0", "1_000", "\u00b2", "\u0665", "0x10", "1e3", "five", "", "-"]
    out = [
        st.sampled_from(loose),
        st.integers(min_value=high + 1, max_value=10**11).map(str),
        st.integers(min_value=10**12, max_value=10**20).map(str),
    ]
    if low > 0:
        out.append(st.integers(min_value=-(10**6), max_value=low - 1).map(str))
    if not zero:
        out.append(st.just("0"))
    return st.one_of(*out)


BAD_ARGV: dict[str, st.SearchStrategy[str]] = {
    "id": st.one_of(
        st.builds(lambda a, c: "P" + a + c, _PLAIN, st.sampled_from(_ARGV_FORBIDDEN)),
        _too_long(64),
        st.sampled_from(["a b", "a:b", ".a", "a/b", "é"]),
    ),
    "reservation_id": st.sampled_from(["x", "not-a-uuid", "1.5", "1e3", "a\u202eb"]),
    "quantity": _argv_int(1, MAX_QUANTITY),
    "count": _argv_int(0, MAX_QUANTITY),
    "delta": _argv_int(-MAX_QUANTITY, MAX_QUANTITY, zero=False),
    "ttl": st.sampled_from(["0", "0s", "-1s", "1.5h", " 60", "60x", "9999999999d", "31d", "", "s"]),
    "reason": _argv_text(200),
    "required_reason": st.one_of(_argv_text(200), st.sampled_from(["", "   "])),
    "reference": _argv_text(128),
    "order_id": _argv_text(128),
}


@dataclass(frozen=True)
class Input:
    """One input of an operation. ``name``: the JSON field (``path:NAME`` for a path part) and,
    unless ``lib`` says otherwise, the library's keyword or position. ``kind``: a key of BAD.
    ``cli``: its position among the command's arguments, or its option, or None (not taken);
    ``argv_kind``: its kind as command-line text, when not ``kind``."""

    name: str
    kind: str
    cli: int | str | None = None
    argv_kind: str | None = None
    in_path: bool = False


Values = dict[str, Any]


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    path: str  # with {name} for the inputs in_path; "" when the HTTP API has no such route
    inputs: tuple[Input, ...]
    library: Callable[[Any, Values], Any] | None  # (Stockctl, values) -> call
    command: tuple[str, ...] | None = None  # the CLI words, e.g. ("stock", "adjust")

    def body(self, values: Values) -> Values | None:
        if self.method == "GET":
            return None
        return {i.name: values[i.name] for i in self.inputs if not i.in_path}

    def url(self, values: Values) -> str:
        from urllib.parse import quote

        parts = {i.name: quote(str(values[i.name]), safe="") for i in self.inputs if i.in_path}
        return self.path.format(**parts)

    def argv(self, values: Values) -> list[str]:
        assert self.command is not None
        taken = [i for i in self.inputs if i.cli is not None]
        positional = sorted((i.cli, i.name) for i in taken if isinstance(i.cli, int))
        out = [*self.command, *(str(values[name]) for _, name in positional)]
        for i in taken:
            if isinstance(i.cli, str):
                out.append(f"{i.cli}={values[i.name]}")
        return out


def _ttl(value: Any) -> Any:
    """The library takes a timedelta: a whole number of seconds becomes one, anything else is
    passed as it is (and must be refused as it is)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**9:
        return timedelta(seconds=value)
    return value


P = Input("product_id", "id", 0)
W = Input("warehouse_id", "id", 1)
QTY = Input("quantity", "quantity", 2)
REASON = Input("reason", "reason", "--reason")
REFERENCE = Input("reference", "reference", "--reference")
RESERVATION = Input("reservation_id", "reservation_id", 0, in_path=True)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "receive", "POST", "/v1/inventory/receive", (P, W, QTY, REASON, REFERENCE),
        lambda sc, v: sc.receive(v["product_id"], v["warehouse_id"], v["quantity"],
                                 reason=v["reason"], reference=v["reference"]),
        ("stock", "receive"),
    ),
    Operation(
        "set", "PUT", "/v1/inventory/product/{product_id}",
        (Input("product_id", "id", 0, in_path=True), W, Input("quantity_available", "count", 2),
         Input("expect_version", "count", "--expect-version"),
         Input("low_stock_threshold", "count", "--threshold"), REASON),
        lambda sc, v: sc.set_stock(v["product_id"], v["warehouse_id"], v["quantity_available"],
                                   expect_version=v["expect_version"],
                                   low_stock_threshold=v["low_stock_threshold"],
                                   reason=v["reason"]),
        ("stock", "set"),
    ),
    Operation(
        "adjust", "POST", "/v1/inventory/adjust",
        (P, W, Input("delta", "delta", 2), Input("reason", "required_reason", "--reason"),
         REFERENCE),
        lambda sc, v: sc.adjust(v["product_id"], v["warehouse_id"], v["delta"],
                                reason=v["reason"], reference=v["reference"]),
        ("stock", "adjust"),
    ),
    Operation(
        "transfer", "POST", "/v1/inventory/transfer",
        (P, Input("from_warehouse_id", "id", 1), Input("to_warehouse_id", "id", 2),
         Input("quantity", "quantity", 3), REASON, REFERENCE),
        lambda sc, v: sc.transfer(v["product_id"], v["from_warehouse_id"], v["to_warehouse_id"],
                                  v["quantity"], reason=v["reason"], reference=v["reference"]),
        ("stock", "transfer"),
    ),
    Operation(
        "reserve", "POST", "/v1/inventory/reserve",
        (P, W, QTY, Input("ttl_seconds", "ttl_seconds", "--ttl", argv_kind="ttl"),
         Input("order_id", "order_id", "--order")),
        lambda sc, v: sc.reserve(v["product_id"], v["warehouse_id"], v["quantity"],
                                 ttl=_ttl(v["ttl_seconds"]), order_id=v["order_id"]),
        ("reserve",),
    ),
    Operation(
        "checkout", "POST", "/v1/inventory/checkout",
        (Input("items", "items"), Input("ttl_seconds", "ttl_seconds"),
         Input("order_id", "order_id", "--order")),
        lambda sc, v: sc.checkout(
            [(i.get("product_id"), i.get("warehouse_id"), i.get("quantity")) for i in v["items"]],
            ttl=_ttl(v["ttl_seconds"]), order_id=v["order_id"],
        ),
        None,
    ),
    Operation(
        "confirm", "POST", "/v1/inventory/reservations/{reservation_id}/confirm", (RESERVATION,),
        lambda sc, v: sc.confirm(v["reservation_id"]), ("confirm",),
    ),
    Operation(
        "release", "POST", "/v1/inventory/reservations/{reservation_id}/release",
        (RESERVATION, REASON),
        lambda sc, v: sc.release(v["reservation_id"], v["reason"]), ("release",),
    ),
    Operation(
        "extend", "POST", "/v1/inventory/reservations/{reservation_id}/extend",
        (RESERVATION, Input("ttl_seconds", "ttl_seconds", "--ttl", argv_kind="ttl")),
        lambda sc, v: sc.extend(v["reservation_id"], _ttl(v["ttl_seconds"])), ("extend",),
    ),
    Operation(
        "release-order", "POST", "/v1/inventory/reservations/release-order",
        (Input("order_id", "order_id", "--order"), REASON),
        lambda sc, v: sc.release_order(v["order_id"], v["reason"]), ("release",),
    ),
    Operation(
        "recently-updated", "POST", "/v1/inventory/recently-updated",
        (Input("since", "timestamp"), Input("warehouse_id", "id"), Input("page", "page"),
         Input("limit", "limit")),
        None,
    ),
    Operation(
        "bulk-stock", "POST", "/v1/batch/stock",
        (Input("product_ids", "ids"), Input("warehouse_id", "id")),
        None,
    ),
    Operation(
        "stock-show", "GET", "/v1/inventory/product/{product_id}",
        (Input("product_id", "id", 0, in_path=True),),
        lambda sc, v: sc.stock(v["product_id"]), ("stock", "show"),
    ),
    Operation(
        "history", "GET", "", (P, Input("limit", "history_limit", "--limit", argv_kind="count")),
        lambda sc, v: sc.history(v["product_id"], limit=v["limit"]), ("stock", "history"),
    ),
)  # fmt: skip

# Kinds made of others: a checkout's items, a list of ids, the ledger's limit.
BAD["items"] = st.one_of(
    st.builds(lambda q: [{"product_id": "PLACEHOLDER", "quantity": q}], BAD["quantity"]),
    st.builds(lambda p: [{"product_id": p, "quantity": 1}], BAD["id"]),
    st.sampled_from([[], "P:1", [1], [{"product_id": "PLACEHOLDER"}]]),
)
BAD["ids"] = st.one_of(
    st.builds(lambda p: [p], BAD["id"]), st.sampled_from([[], "P", {"a": 1}, [None]])
)
BAD["history_limit"] = _bad_int(1, 10_000)
