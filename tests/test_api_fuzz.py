"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis).

Every operation gets generated requests, valid and invalid; none may answer 5xx or break the
schema it declares. Bounded: a few dozen examples per operation, no database of failures.
One check is left out: a schema-valid request may still be refused with a 4xx that says why
(a query of emoji has no words to search for; random bytes are not a PDF).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from vdr import Index
from vdr.encoders.textgrid import TextGridEncoder
from vdr.server.app import create_app

from conftest import SAMPLES

EXAMPLES_PER_OPERATION = 25


def test_api_never_fails_on_generated_requests(
    tmp_path_factory: pytest.TempPathFactory, encoder: TextGridEncoder
) -> None:
    del encoder
    with Index(tmp_path_factory.mktemp("fuzz") / "index") as index:
        index.add([SAMPLES / "bike_maintenance.pdf"])
        schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(index))
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 9
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: schemathesis.Case) -> None:
                case.call_and_validate(excluded_checks=[positive_data_acceptance])

            fuzz()
