"""Source sync through the API and the CLI, on real files with the real model: a synced collection ends up
exactly as a fresh ingest of the final directory, unchanged files cost nothing, and only the source's own
documents are ever deleted."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from ragserve.api.app import create_app
from ragserve.cli import app
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.settings import Settings
from tests.conftest import FIXTURES
from tests.integration.helpers import ingest, wait_for_job

FILES = FIXTURES / "files"
SOURCE = "handbook-share"
QUERIES = ("how do I install ragserve on linux", "upgrading to a new release", "what changed in this release")


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    # Small chunks, so an edited file has unchanged chunks whose embeddings must be reused; small requests,
    # so a sync is submitted in several jobs.
    return make_settings(chunking={"max_tokens": 48, "overlap_tokens": 8}, limits={"max_documents_per_request": 3})


def _make_source(root: Path) -> Path:
    (root / "nested").mkdir(parents=True)
    for name in ("guide.md", "article.html", "faq.json", "release-notes.txt"):
        shutil.copy(FILES / name, root / name)
    shutil.copy(FILES / "report.pdf", root / "nested" / "report.pdf")
    (root / "notes.xyz").write_text("unsupported: skipped")
    return root


def _listing(root: Path) -> list[dict[str, str]]:
    return [
        {"path": p.relative_to(root).as_posix(), "content_base64": base64.b64encode(p.read_bytes()).decode()}
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]


def _fixture_file(name: str) -> dict[str, str]:
    return {"path": name, "content_base64": base64.b64encode((FILES / name).read_bytes()).decode()}


def _sync(client: TestClient, collection: str, files: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    body = {"source": extra.pop("source", SOURCE), "files": files, **extra}
    response = client.post(f"/v1/collections/{collection}/sync", json=body)
    assert response.status_code == 202, response.text
    result: dict[str, Any] = response.json()
    for job_id in result["job_ids"]:
        job = wait_for_job(client, job_id)
        assert job["status"] == "succeeded", job["errors"]
    return result


def _documents(client: TestClient, collection: str) -> dict[str, dict[str, Any]]:
    """The collection's documents by external id, each with its chunks, without ids and times."""
    listing = client.get("/v1/documents", params={"collection": collection, "limit": 1000}).json()
    found = {}
    for doc in listing["documents"]:
        full = client.get(f"/v1/documents/{doc['id']}", params={"include_chunks": True}).json()
        chunks = [(c["ordinal"], c["text"], c["section"], c["page"], c["token_count"]) for c in full["chunks"]]
        keys = ("title", "source", "metadata", "status", "chunk_count")
        found[full["external_id"]] = {**{k: full[k] for k in keys}, "chunks": sorted(chunks)}
    return found


def _search(client: TestClient, collection: str, query: str, mode: str) -> list[tuple[str, str, float]]:
    response = client.post("/v1/search", json={"query": query, "collection": collection, "mode": mode, "k": 8})
    assert response.status_code == 200, response.text
    return [(r["external_id"], r["text"], round(r["score"], 4)) for r in response.json()["results"]]


def _counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _embedding_lookups() -> tuple[float, float]:
    name = "ragserve_embedding_cache_lookups_total"
    return _counter(name, result="hit"), _counter(name, result="miss")


def test_sync_mirrors_adds_edits_and_removals_like_a_fresh_ingest(client: TestClient, tmp_path: Path) -> None:
    root = _make_source(tmp_path / "src")
    first = _sync(client, "kb", _listing(root))
    assert first["added"] == ["article.html", "faq.json", "guide.md", "nested/report.pdf", "release-notes.txt"]
    assert (first["updated"], first["deleted"], first["unchanged"]) == ([], [], 0)
    assert first["skipped"] == ["notes.xyz"]
    assert len(first["job_ids"]) == 2  # 5 files, at most 3 per request

    shutil.copy(FILES / "onboarding.docx", root / "nested" / "onboarding.docx")
    with (root / "guide.md").open("a") as guide:
        guide.write("\n## Upgrades\n\nTo upgrade, install the new release and restart the server.\n")
    (root / "faq.json").unlink()
    guide_chunks_before = _documents(client, "kb")["guide.md"]["chunk_count"]
    processed = _counter("ragserve_ingest_documents_total", outcome="succeeded")
    _, misses = _embedding_lookups()

    second = _sync(client, "kb", _listing(root))
    assert second["added"] == ["nested/onboarding.docx"]
    assert second["updated"] == ["guide.md"]
    assert second["deleted"] == ["faq.json"]
    assert second["unchanged"] == 3
    # Only the two changed files were parsed and written; of the edited guide, only new chunk text was embedded.
    assert _counter("ragserve_ingest_documents_total", outcome="succeeded") - processed == 2
    synced = _documents(client, "kb")
    assert set(synced) == {
        "article.html",
        "guide.md",
        "release-notes.txt",
        "nested/report.pdf",
        "nested/onboarding.docx",
    }
    new_misses = _embedding_lookups()[1] - misses
    new_guide_chunks = synced["guide.md"]["chunk_count"] - guide_chunks_before
    assert new_guide_chunks >= 1
    # The added file's chunks, the guide's new ones, and at most one whose overlap took in the new text.
    assert new_misses <= synced["nested/onboarding.docx"]["chunk_count"] + new_guide_chunks + 1

    lookups = _embedding_lookups()
    processed = _counter("ragserve_ingest_documents_total", outcome="succeeded")
    third = _sync(client, "kb", _listing(root))
    assert third == {
        "job_ids": [],
        "added": [],
        "updated": [],
        "deleted": [],
        "unchanged": 5,
        "conflicts": [],
        "skipped": ["notes.xyz"],
    }
    assert _embedding_lookups() == lookups
    assert _counter("ragserve_ingest_documents_total", outcome="succeeded") == processed

    fresh = [
        {
            "external_id": p.relative_to(root).as_posix(),
            "filename": p.name,
            "content_base64": base64.b64encode(p.read_bytes()).decode(),
            "metadata": {"sync_source": SOURCE},
        }
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix != ".xyz"
    ]
    for i in range(0, len(fresh), 3):
        assert ingest(client, fresh[i : i + 3], collection="fresh")["status"] == "succeeded"
    assert _documents(client, "kb") == _documents(client, "fresh")
    for query in QUERIES:
        for mode in ("keyword", "dense", "hybrid"):
            hits = _search(client, "kb", query, mode)
            assert hits, (query, mode)
            assert hits == _search(client, "fresh", query, mode), (query, mode)


def test_sync_deletes_only_its_own_documents(client: TestClient, tmp_path: Path) -> None:
    manual = ingest(client, [{"external_id": "manual", "text": "Written by hand about holidays."}], "shared")
    ingest(client, [{"external_id": "guide.md", "text": "A hand-written guide, not from any share."}], "shared")
    a_files = [_fixture_file("guide.md"), _fixture_file("release-notes.txt")]
    b_files = [_fixture_file("article.html")]

    a = _sync(client, "shared", a_files, source="share-a")
    assert a["added"] == ["release-notes.txt"]
    assert a["conflicts"] == ["guide.md"]  # someone else's document: neither overwritten nor adopted
    assert _sync(client, "shared", b_files, source="share-b")["added"] == ["article.html"]

    preview = _sync(client, "shared", [], source="share-b", dry_run=True)
    assert (preview["deleted"], preview["job_ids"]) == (["article.html"], [])
    assert "article.html" in _documents(client, "shared")
    assert _sync(client, "shared", [], source="share-b", delete_missing=False)["deleted"] == []

    assert _sync(client, "shared", [], source="share-a")["deleted"] == ["release-notes.txt"]
    documents = _documents(client, "shared")
    assert set(documents) == {"manual", "guide.md", "article.html"}
    assert documents["guide.md"]["chunks"][0][1] == "A hand-written guide, not from any share."
    assert client.get(f"/v1/documents/{manual['document_ids'][0]}").status_code == 200


@pytest.mark.parametrize(
    ("files", "status"),
    [
        ([{"path": "../escape.md", "content_base64": ""}], 400),
        ([{"path": "a.md", "content_base64": "not base64!"}], 400),
        ([{"path": "a.md", "content_base64": ""}, {"path": "a.md", "content_base64": ""}], 400),
        ([{"path": "a.md"}], 422),
    ],
)
def test_sync_rejects_bad_listings_before_changing_anything(
    client: TestClient, files: list[dict[str, str]], status: int
) -> None:
    response = client.post("/v1/collections/kb/sync", json={"source": SOURCE, "files": files})
    assert response.status_code == status, response.text
    assert client.get("/v1/documents", params={"collection": "kb"}).json()["total"] == 0


def test_sync_rejects_a_file_over_the_upload_limit(
    make_settings: Callable[..., Settings], embedder: OnnxEmbedder
) -> None:
    settings = make_settings(limits={"max_upload_bytes": 100})
    with TestClient(create_app(settings, embedder)) as small:
        small_file = {"path": "small.txt", "content_base64": base64.b64encode(b"small").decode()}
        big = {"path": "big.txt", "content_base64": base64.b64encode(b"x" * 101).decode()}
        response = small.post("/v1/collections/kb/sync", json={"source": SOURCE, "files": [small_file, big]})
        assert response.status_code == 413, response.text
        assert small.get("/v1/documents", params={"collection": "kb"}).json()["total"] == 0


@pytest.fixture
def cli_env(tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RAGSERVE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAGSERVE_EMBEDDING__CACHE_DIR", str(model_cache))
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path


def test_cli_sync_reports_changes_and_failures(cli_env: Path) -> None:
    root = cli_env / "docs"
    root.mkdir()
    for name in ("guide.md", "release-notes.txt", "faq.json"):
        shutil.copy(FILES / name, root / name)
    (root / "notes.xyz").write_text("skipped")
    runner = CliRunner()

    result = runner.invoke(app, ["sync", str(root), "--collection", "kb"])
    assert result.exit_code == 0, result.output
    assert "added 3, updated 0, deleted 0, unchanged 0, failed 0; skipped 1 unsupported files" in result.output

    (root / "faq.json").unlink()
    (root / "release-notes.txt").write_text("Release 2.0 replaces everything.")
    shutil.copy(FILES / "garbage.pdf", root / "garbage.pdf")
    result = runner.invoke(app, ["sync", str(root), "--collection", "kb", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "+ garbage.pdf" in result.output
    assert "~ release-notes.txt" in result.output
    assert "- faq.json" in result.output
    assert "would have: added 1, updated 1, deleted 1, unchanged 1" in result.output

    result = runner.invoke(app, ["sync", str(root), "--collection", "kb"])
    assert result.exit_code == 2, result.output  # garbage.pdf failed to parse
    assert "added 1, updated 1, deleted 1, unchanged 1, failed 1" in result.output
    assert "garbage.pdf" in result.output

    result = runner.invoke(app, ["search", "Release 2.0", "--collection", "kb", "--json", "--mode", "keyword"])
    assert result.exit_code == 0, result.output
    assert "Release 2.0 replaces everything." in result.output
    result = runner.invoke(app, ["search", "frequently asked", "--collection", "kb", "--json", "--mode", "keyword"])
    assert "faq.json" not in result.output
