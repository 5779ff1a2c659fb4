"""``embedding.precision`` on a data directory: int8 ingests and searches; switching an existing one is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragserve.cli import app
from tests.conftest import FIXTURES


@pytest.fixture
def env(tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RAGSERVE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAGSERVE_EMBEDDING__CACHE_DIR", str(model_cache))
    monkeypatch.setenv("COLUMNS", "200")
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(FIXTURES / "files" / "guide.md", docs / "guide.md")
    return docs


def run(*args: str, precision: str) -> tuple[int, str]:
    result = CliRunner(env={"RAGSERVE_EMBEDDING__PRECISION": precision}).invoke(app, list(args))
    return result.exit_code, result.output


def test_an_int8_data_dir_ingests_and_searches(env: Path) -> None:
    assert run("ingest", str(env), "--collection", "kb", precision="int8")[0] == 0

    code, output = run(
        "search", "installation steps", "--collection", "kb", "--json", "--mode", "dense", precision="int8"
    )

    assert code == 0, output
    assert [r["source"] for r in json.loads(output)["results"]][:1] == ["guide.md"]


@pytest.mark.parametrize(("built", "switched"), [("fp32", "int8"), ("int8", "fp32")])
def test_switching_precision_on_an_existing_data_dir_is_refused(env: Path, built: str, switched: str) -> None:
    assert run("ingest", str(env), "--collection", "kb", precision=built)[0] == 0

    code, output = run("search", "installation steps", "--collection", "kb", precision=switched)

    assert code == 1
    assert f"onnx-{built}/256" in output
    assert f"onnx-{switched}/256" in output
    assert "RAGSERVE_EMBEDDING__PRECISION" in output
    # Nothing was changed: the data dir still opens, and searches, under the precision it was built with.
    code, output = run("search", "installation steps", "--collection", "kb", "--json", precision=built)
    assert code == 0, output
    assert json.loads(output)["results"]
