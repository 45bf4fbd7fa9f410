"""The API keeps the contract of its own OpenAPI document, under generated requests.

A real ``storefront api`` process (on SQLite, then on PostgreSQL) gets requests that Schemathesis
generates from the document it serves: valid ones and, for every operation that takes input,
invalid ones. Whatever arrives, the answer is never a 5xx; its status code and content type are
documented; its body matches the documented schema; and every 4xx body is in the project's error
format. Generation is derandomized, so a run is reproducible and a failure names its request.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.generation import GenerationMode
from schemathesis.schemas import APIOperation, BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.components.postgres import PostgresServer
from tests.components.redis import RedisServer
from tests.components.storefront import start_storefront

REDIS_DB = 7
EXAMPLES_PER_OPERATION = 25
# Event streams answer with a stream that stays open: their own tests cover them.
STREAMING_PATHS = r"/events(/|$)"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass(frozen=True)
class ContractApi:
    url: str
    admin_headers: dict[str, str]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def contract_api(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
) -> Iterator[ContractApi]:
    """``storefront api`` on a fresh database, with an admin account."""
    postgres: PostgresServer | None = None
    database = ""
    database_url = None  # SQLite in the work directory
    if request.param == "postgres":
        postgres = request.getfixturevalue("postgres_server")
        database = postgres.create_database()
        database_url = postgres.url_for(database)
    with redis_server.client(REDIS_DB) as client:
        client.flushdb()
    service = start_storefront(
        tmp_path_factory.mktemp(f"contract-{request.param}"),
        redis_server.url_for(REDIS_DB),
        database_url=database_url,
    )
    try:
        yield ContractApi(service.url, {"Authorization": f"Bearer {service.admin_token()}"})
    finally:
        service.stop()
        if postgres is not None:
            postgres.drop_database(database)


def _operations(schema: BaseSchema) -> list[APIOperation]:
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            pytest.fail(f"the OpenAPI document has an invalid operation: {result.err()}")
        operations.append(result.ok())
    return operations


def _takes_input(operation: APIOperation) -> bool:
    parameters = (operation.path_parameters, operation.query, operation.headers, operation.cookies)
    return any(len(group) for group in parameters) or len(operation.body) > 0


def _error_format_problem(response: Any) -> str | None:
    """Why a 4xx body is not ``{"error": {"code", "message", "request_id", ...}}``, if it is not."""
    try:
        body = response.json()
    except ValueError:
        return f"not JSON: {response.text[:200]!r}"
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return f"not an error object: {body!r:.300}"
    missing = {"code", "message", "request_id"} - set(body["error"])
    return f"error without {sorted(missing)}: {body!r:.300}" if missing else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FailureGroup):
        return "\n".join(str(failure) for failure in exc.exceptions)
    return str(exc)


@pytest.mark.slow
def test_every_operation_keeps_its_documented_contract(contract_api: ContractApi) -> None:
    schema = schemathesis.openapi.from_url(f"{contract_api.url}/openapi.json")
    operations = _operations(schema)
    tested = _operations(schema.exclude(path_regex=STREAMING_PATHS))
    left_out = {op.label for op in operations} - {op.label for op in tested}
    assert left_out == {"GET /api/v1/events/{topic}", "GET /api/v1/jobs/{job_id}/events"}
    failures: list[str] = []
    requests_sent = 0
    for operation in tested:
        modes = [GenerationMode.POSITIVE]
        if _takes_input(operation):
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def call(case: Any) -> None:
                nonlocal requests_sent
                requests_sent += 1
                response = case.call(headers=contract_api.admin_headers, timeout=30)
                case.validate_response(response, checks=CHECKS)
                if 400 <= response.status_code < 500:
                    problem = _error_format_problem(response)
                    assert problem is None, f"{response.status_code} {problem}"

            try:
                call()
            # One report for every operation, not just the first (check failures come grouped).
            except (Exception, FailureGroup) as exc:
                failures.append(f"{operation.label} [{mode.value}]: {_describe(exc)}")
    assert not failures, "\n\n".join(failures)
    assert requests_sent >= len(tested) * EXAMPLES_PER_OPERATION // 2, "too few requests generated"


def test_the_contract_check_catches_a_body_outside_the_error_format() -> None:
    class Answer:
        def __init__(self, body: Any) -> None:
            self.body = body
            self.text = str(body)

        def json(self) -> Any:
            return self.body

    valid = {"error": {"code": "X", "message": "m", "request_id": "r"}}
    assert _error_format_problem(Answer(valid)) is None
    assert _error_format_problem(Answer({"detail": "Not Found"})) is not None
    assert _error_format_problem(Answer({"error": {"code": "X"}})) is not None
    assert _error_format_problem(Answer(["error"])) is not None
