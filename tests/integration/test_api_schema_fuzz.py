"""Schemathesis over the OpenAPI document, authenticated, against a real server: no request, valid or not, gets
a 5xx; every response conforms to what its operation declares (status, content type, body schema); every error
body is exactly ``{"error": {"code", "message", "request_id"}}`` with the request's id.

The server is ``ragserve serve`` in a child process, with authentication on and rate limits off, holding a small
corpus; its keys are made straight in its database, as ``ragserve keys create`` does. Generated ids would almost
never name a stored document, job or collection, so half the cases name ones that exist.

Every operation of the document is fuzzed, none excluded: the streamed answers (``stream: true`` on
``/v1/answer`` and ``/v1/chat/completions``) end after their ``done`` event with the extractive generator, so
schemathesis reads them whole. ``/metrics`` and the UI's files are not in the document.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, HookContext, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ragserve.api.app import create_app
from ragserve.security.auth import create_key, load_pepper
from ragserve.settings import Settings
from ragserve.stores.factory import open_key_store
from tests.integration.helpers import ingest
from tests.integration.server import free_port, start_server

pytestmark = pytest.mark.slow
# Generated cases per operation in the fuzzing phase; the examples and coverage phases add their own. With 31
# operations that is about 2,500 requests, a minute or two on a loaded 2-core machine. The seed fixes them all.
MAX_EXAMPLES = 40
SEED = 20260601
TENANT = "acme"
PEPPER = "pepper-for-fuzzing"
CORPUS = [
    {"text": "Employees get 25 days of paid leave per year.", "title": "Leave", "external_id": "leave.md"},
    {"text": "Expenses are reimbursed within 30 days.", "title": "Expenses", "acl": {"groups": ["finance"]}},
    {"text": "The office opens at 8 and closes at 18.", "title": "Office", "external_id": "office.md"},
]

# The API's OpenAPI document; building the app starts nothing (that is its lifespan).
OPENAPI = create_app(Settings()).openapi()
# Examples from the document, then boundary values (coverage), then generated cases, valid and invalid alike.
# The tests send the credentials themselves, so the Authorization header is not generated (nor left out).
GENERATION = {"database": "none", "with-security-parameters": False}
schema = schemathesis.openapi.from_dict(
    OPENAPI,
    config=schemathesis.Config.from_dict(
        {"seed": SEED, "generation": {**GENERATION, "mode": "all", "max-examples": MAX_EXAMPLES}}
    ),
)
# A few valid cases per operation, sent by callers that lack a scope or credentials.
few_valid = schemathesis.openapi.from_dict(
    OPENAPI,
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {**GENERATION, "mode": "positive", "max-examples": 3},
            "phases": {"examples": {"enabled": False}, "coverage": {"enabled": False}},
        }
    ),
)


@dataclass
class Known:
    """Ids that exist on the server, filled in by the ``api`` fixture, drawn from at generation time."""

    values: dict[str, list[Any]] = field(default_factory=dict)


KNOWN = Known()


def flatmap_case(context: HookContext, case: Case) -> st.SearchStrategy[Case]:
    """Half of the cases name things that exist, in their path (a document, job, collection, key or index
    version) and in their JSON body (the collection to search, the chat model); schemathesis then re-checks
    whether a case is still a negative one."""
    # DELETE gets ids of its own, so that deleting them leaves the corpus to the other operations.
    prefix = "delete:" if case.method.upper() == "DELETE" else ""

    def existing(values: dict[str, Any], index: int) -> dict[str, Any]:
        replaced = dict(values)
        for name in replaced:
            choices = KNOWN.values.get(prefix + name) or KNOWN.values.get(name)
            if choices:
                replaced[name] = choices[index % len(choices)]
        return replaced

    def name_existing(index: int) -> Case:
        if index >= 0 and case.path_parameters:
            case.path_parameters = existing(case.path_parameters, index)
        if index >= 0 and isinstance(case.body, dict):
            case.body = existing(case.body, index)
        return case

    return st.integers(-8, 7).map(name_existing)


schema.hook(flatmap_case)
few_valid.hook(flatmap_case)


@schemathesis.check
def error_shape(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx and 5xx body is exactly the one error shape, carrying the request's id."""
    if response.status_code < 400:
        return None
    body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"not the error shape: {body!r}"
    assert set(body) == {"error"}, f"not the error shape: {body!r}"
    assert set(error) == {"code", "message", "request_id"}, f"not the error fields: {error!r}"
    assert isinstance(error["code"], str), error
    assert isinstance(error["message"], str), error
    assert error["code"], "empty error code"
    assert error["message"], "empty error message"
    assert [error["request_id"]] == response.headers.get("x-request-id"), "request_id is not the request's id"
    return True


# Not ``negative_data_rejection``: pydantic's lax mode converts scalars on purpose (``"5"`` to 5, ``false`` to
# 0.0, ``6`` to a timestamp), which schemathesis counts as accepting invalid data. The schema is generated from
# the same models that validate, so it cannot promise a bound the server does not keep; what invalid data must
# never get is a 5xx, an undeclared status or another error shape, which these checks assert.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    error_shape,
]
UNAUTHENTICATED = {"/health", "/ready"}


@dataclass
class Api:
    base_url: str
    admin: dict[str, str]
    reader: dict[str, str]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Api]:
    # A child process, not a thread of this one: the server's background work (jobs, index builds, canary
    # routing) uses the ``random`` module, which Hypothesis watches while it generates cases.
    data_dir, log = tmp_path_factory.mktemp("fuzz") / "data", tmp_path_factory.mktemp("fuzz-log") / "server.log"
    env = {
        "RAGSERVE_AUTH__ENABLED": "true",
        "RAGSERVE_AUTH__KEY_PEPPER": PEPPER,
        "RAGSERVE_RATE_LIMIT__ENABLED": "false",
        "RAGSERVE_JOBS__POLL_INTERVAL_SECONDS": "0.05",
    }
    port = free_port()
    process = start_server(data_dir, port, model_cache, log, env)
    try:
        settings = Settings(data_dir=data_dir, auth={"key_pepper": PEPPER})  # type: ignore[arg-type]
        keys, close = open_key_store(settings)
        try:
            pepper = load_pepper(settings)
            admin_secret, _ = create_key(keys, pepper, "fuzz-admin", TENANT, ["query", "ingest", "admin"], None)
            reader_secret, _ = create_key(keys, pepper, "fuzz-reader", TENANT, ["query"], None, "rita", ["eng"])
            _, victim = create_key(keys, pepper, "fuzz-victim", TENANT, ["query"], None)
        finally:
            close()
        base_url = f"http://127.0.0.1:{port}"
        admin = {"authorization": f"Bearer {admin_secret}"}
        with httpx.Client(base_url=base_url, timeout=60) as client:
            kept = ingest(client, CORPUS, collection="handbook", headers=admin)  # type: ignore[arg-type]
            doomed = ingest(client, CORPUS[:1], headers=admin)  # type: ignore[arg-type]
        KNOWN.values = {
            "document_id": kept["document_ids"],
            "delete:document_id": doomed["document_ids"],
            "job_id": [kept["id"], doomed["id"]],
            "name": ["handbook", settings.default_collection],
            "collection": ["handbook", settings.default_collection],
            "model": ["ragserve/handbook", "ragserve"],
            "external_id": ["leave.md", "office.md"],
            "delete:key_id": [victim.id],
            "version": [1, 2],
        }
        yield Api(base_url, admin, {"authorization": f"Bearer {reader_secret}"})
    finally:
        KNOWN.values = {}
        process.terminate()
        process.wait(timeout=30)


@schema.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
def test_every_operation_with_an_admin_key(case: Case, api: Api) -> None:
    case.call_and_validate(base_url=api.base_url, headers=api.admin, checks=CHECKS)


@few_valid.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_without_credentials_or_scope(case: Case, api: Api) -> None:
    anonymous = case.call(base_url=api.base_url)
    case.validate_response(anonymous, checks=CHECKS)
    if case.path not in UNAUTHENTICATED:
        assert anonymous.status_code == 401, anonymous.text
    reader = case.call(base_url=api.base_url, headers=api.reader)
    case.validate_response(reader, checks=CHECKS, headers=api.reader)
