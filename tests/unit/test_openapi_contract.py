"""The OpenAPI document declares what the server answers: the bearer scheme and the statuses every authenticated
operation may get before it runs, and 400 (malformed JSON) wherever a JSON body is read. Schemathesis
(``tests/integration/test_api_schema_fuzz.py``) fails on any status an operation does not declare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ragserve.api.app import create_app
from ragserve.settings import Settings

UNAUTHENTICATED = {"/health", "/ready"}


@pytest.fixture(scope="module")
def operations(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    data_dir: Path = tmp_path_factory.mktemp("openapi")
    document = create_app(Settings(data_dir=data_dir)).openapi()  # the lifespan, which opens stores, never runs
    assert document["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "an API key (rsk_...) or, when configured, a JWT",
    }
    return {
        f"{method.upper()} {path}": operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }


def test_authenticated_operations_declare_the_bearer_scheme_and_guard_statuses(
    operations: dict[str, dict[str, Any]],
) -> None:
    authenticated = {label: op for label, op in operations.items() if label.split(" ")[1] not in UNAUTHENTICATED}
    assert len(authenticated) > 25
    for label, operation in authenticated.items():
        assert operation.get("security") == [{"HTTPBearer": []}], label
        assert {"401", "403", "413", "429"} <= set(operation["responses"]), label
    for label in ("GET /health", "GET /ready"):
        assert "security" not in operations[label]
        assert "401" not in operations[label]["responses"]


def test_operations_with_a_json_body_declare_400_and_422(operations: dict[str, dict[str, Any]]) -> None:
    with_json = {
        label: op
        for label, op in operations.items()
        if "application/json" in op.get("requestBody", {}).get("content", {})
    }
    assert {"POST /v1/embeddings", "PUT /v1/collections/{name}/settings", "POST /v1/search"} <= set(with_json)
    for label, operation in with_json.items():
        assert {"400", "422"} <= set(operation["responses"]), label


def test_requeueing_an_unknown_job_declares_404(operations: dict[str, dict[str, Any]]) -> None:
    assert "404" in operations["POST /v1/dead-letters/requeue"]["responses"]
