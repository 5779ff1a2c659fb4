"""Search and answers through the HTTP API on a slice of SciFact, with the real model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from ragserve.api.app import create_app
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.settings import Settings
from tests.conftest import FIXTURES
from tests.integration.helpers import ingest


@pytest.fixture(scope="module")
def scifact_client(
    tmp_path_factory: pytest.TempPathFactory, embedder: OnnxEmbedder, model_cache: Any
) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("scifact"),
        embedding={"cache_dir": model_cache},  # type: ignore[arg-type]
        jobs={"poll_interval_seconds": 0.05},  # type: ignore[arg-type]
    )
    corpus = [json.loads(line) for line in (FIXTURES / "scifact_slice" / "corpus.jsonl").read_text().splitlines()]
    with TestClient(create_app(settings, embedder)) as client:
        docs = [
            {"external_id": d["_id"], "title": d["title"], "text": d["text"], "metadata": {"year": 2000 + i % 3}}
            for i, d in enumerate(corpus)
        ]
        for i in range(0, len(docs), 100):
            job = ingest(client, docs[i : i + 100], collection="scifact")
            assert job["status"] == "succeeded", job["errors"]
        yield client


def _search(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/search", json={"collection": "scifact", **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


@pytest.mark.parametrize("mode", ["keyword", "dense", "hybrid"])
def test_each_mode_finds_the_relevant_abstract(scifact_client: TestClient, mode: str) -> None:
    # SciFact test query 1: "0-dimensional biomaterials show inductive properties." is relevant to 31715818.
    queries = [json.loads(line) for line in (FIXTURES / "scifact_slice" / "queries.jsonl").read_text().splitlines()]
    qrels: dict[str, set[str]] = {}
    for line in (FIXTURES / "scifact_slice" / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, doc, _ = line.split("\t")
        qrels.setdefault(qid, set()).add(doc)
    found = 0
    for query in queries:
        result = _search(scifact_client, query=query["text"], k=10, mode=mode)
        assert result["mode"] == mode
        if qrels[query["_id"]] & {r["external_id"] for r in result["results"]}:
            found += 1
    # Recall@10 on this 200-document slice; a broken ranker scores near 10/200 * 40 = 2.
    assert found >= 30, f"{mode}: only {found} of {len(queries)} queries found a relevant abstract"


def test_results_carry_citation_fields_and_paginate(scifact_client: TestClient) -> None:
    page1 = _search(scifact_client, query="vitamin D deficiency", k=5)["results"]
    page2 = _search(scifact_client, query="vitamin D deficiency", k=5, offset=5)["results"]
    both = _search(scifact_client, query="vitamin D deficiency", k=10)["results"]
    assert [r["chunk_id"] for r in both] == [r["chunk_id"] for r in page1 + page2]
    assert all(r["title"] and r["text"] and r["document_id"] and r["external_id"] for r in both)
    scores = [r["score"] for r in both]
    assert scores == sorted(scores, reverse=True)


def test_metadata_filters_equality_and_in(scifact_client: TestClient) -> None:
    for mode in ("keyword", "dense", "hybrid"):
        only = _search(scifact_client, query="cancer cells", k=20, mode=mode, filters={"year": 2001})["results"]
        assert only, mode
        assert all(r["metadata"]["year"] == 2001 for r in only), mode
        some = _search(scifact_client, query="cancer cells", k=20, mode=mode, filters={"year": [2000, 2002]})
        assert some["results"], mode
        assert all(r["metadata"]["year"] in (2000, 2002) for r in some["results"]), mode
    none = _search(scifact_client, query="cancer cells", filters={"year": 1999})["results"]
    assert none == []


def _memory_searches() -> float:
    found = REGISTRY.get_sample_value("ragserve_store_keyword_searches_total", {"engine": "memory"})
    return found or 0.0


def test_keyword_search_from_memory_ranks_as_fts5_does(scifact_client: TestClient) -> None:
    # The in-memory BM25 copy answers unfiltered searches once built; a filter that every document passes
    # sends the same search to FTS5, whose table-wide statistics give the same ranking and scores.
    before, deadline = _memory_searches(), time.monotonic() + 20
    while _memory_searches() == before:
        assert time.monotonic() < deadline, "the keyword accelerator never answered"
        fast = _search(scifact_client, query="cancer cells in mice", k=20, mode="keyword")["results"]
        time.sleep(0.05)
    exact = _search(
        scifact_client, query="cancer cells in mice", k=20, mode="keyword", filters={"year": [2000, 2001, 2002]}
    )["results"]
    assert len(fast) == 20
    assert [(r["chunk_id"], round(r["score"], 9)) for r in fast] == [
        (r["chunk_id"], round(r["score"], 9)) for r in exact
    ]


def test_unknown_collection_is_404(scifact_client: TestClient) -> None:
    response = scifact_client.post("/v1/search", json={"query": "x", "collection": "nope"})
    assert response.status_code == 404


def test_answer_cites_its_sources(scifact_client: TestClient) -> None:
    response = scifact_client.post(
        "/v1/answer",
        json={"question": "Which nanoparticles are used for stem cell labeling and tracking?", "collection": "scifact"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["generator"] == "extractive"
    assert not body["abstained"]
    assert body["citations"]
    for citation in body["citations"]:
        assert f"[{citation['index']}]" in body["answer"]
        assert citation["quote"]
        assert citation["chunk_id"]
        assert citation["document_id"]


def test_answer_abstains_on_an_unrelated_question(scifact_client: TestClient) -> None:
    body = scifact_client.post(
        "/v1/answer", json={"question": "Who won the 1998 football world cup final?", "collection": "scifact"}
    ).json()
    assert body["abstained"] is True
    assert body["citations"] == []


def test_answer_stream_sends_tokens_then_citations_then_done(scifact_client: TestClient) -> None:
    question = {
        "question": "Which nanoparticles are used for stem cell labeling and tracking?",
        "collection": "scifact",
    }
    whole = scifact_client.post("/v1/answer", json=question).json()
    events: list[tuple[str, Any]] = []
    with scifact_client.stream("POST", "/v1/answer", json={**question, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event:
                events.append((event, json.loads(line.split(":", 1)[1])))
    kinds = [e for e, _ in events]
    assert kinds[-2:] == ["citations", "done"]
    assert set(kinds[:-2]) == {"token"}
    assert "".join(d["text"] for e, d in events if e == "token") == whole["answer"]
    assert events[-1][1]["answer"] == whole["answer"]
    assert [c["chunk_id"] for c in events[-2][1]] == [c["chunk_id"] for c in whole["citations"]]
