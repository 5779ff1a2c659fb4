"""Shared fixtures: one real embedding model per test session, and settings in a fresh data directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ragserve.api.app import create_app
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures"
# ``postgres_server`` (session) and ``postgres_url`` (a database per test) for the PostgreSQL backend.
pytest_plugins = ["tests.postgres"]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def embedder(model_cache: Path) -> OnnxEmbedder:
    return OnnxEmbedder(cache_dir=model_cache, intra_op_threads=2)


@pytest.fixture(scope="session")
def int8_embedder(model_cache: Path, embedder: OnnxEmbedder) -> OnnxEmbedder:
    """The int8 encoder, quantized once per session from ``embedder``'s fp32 file."""
    return OnnxEmbedder(cache_dir=model_cache, intra_op_threads=2, precision="int8")


@pytest.fixture
def make_settings(tmp_path: Path, model_cache: Path) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "embedding": {"cache_dir": model_cache},
            "jobs": {"poll_interval_seconds": 0.05, "retry_seconds": 0.1},
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def client(settings: Settings, embedder: OnnxEmbedder) -> Iterator[TestClient]:
    with TestClient(create_app(settings, embedder)) as test_client:
        yield test_client
