"""schemathesis over every operation of the OpenAPI schema, on SQLite with an admin token:
no 5xx, every status code and content type documented, every body valid against its schema,
and every request that breaks the schema (schemathesis' negative data) refused with a 4xx.

Each operation gets a few generated requests (valid and invalid ones), some of them about the
products and warehouses the test seeds, so the success paths run too, not only refusals.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from stockctl.bootstrap import bootstrap
from stockctl.daemons.api.app import create_app
from stockctl.settings import load_settings
from tests.apiutil import ADMIN, Api, api_on, seed

CHECKS = [
    not_a_server_error,
    negative_data_rejection,  # a request that breaks the schema is answered 4xx (issue 17)
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _schema_app() -> Any:
    """The app whose schema is fuzzed, made at import (schemathesis parametrizes at collection).

    It is never connected: each test points its ``state.stockctl`` at a fresh database."""
    settings_ = load_settings(database_url="sqlite:///unused-by-the-fuzz-tests.db")
    return create_app(bootstrap(settings_))


APP = _schema_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
schema.config.generation.update(modes=list(GenerationMode))  # valid and invalid requests


@pytest.fixture(autouse=True)
def fuzzed(sqlite_url: str) -> Iterator[Api]:
    with api_on(sqlite_url) as api:
        # hypothesis tries the simplest strings first ("0", "A"): as real ids, the generated
        # requests reach the success paths too (reserve, confirm, set, transfer ...)
        for w in ("0", "A"):
            api.sc.add_warehouse(w)
        for p in ("0", "A", "a"):
            api.sc.add_product(p)
            for w in ("0", "A"):
                api.sc.receive(p, w, 1000)
        seed(api.sc, 2, 2)
        saved = APP.state.stockctl
        APP.state.stockctl = api.app
        try:
            yield api
        finally:
            APP.state.stockctl = saved


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_conforms(case: Any) -> None:
    case.call_and_validate(headers=ADMIN, checks=CHECKS)
