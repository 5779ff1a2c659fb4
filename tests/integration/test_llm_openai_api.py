"""The OpenAI-compatible endpoints, with the official ``openai`` SDK as the client, against a real
``ragserve serve`` whose LLM provider is a real llama.cpp server behind the fault proxy."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient

from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.ingest.chunk_plan import embed_text
from tests.integration.helpers import ingest
from tests.integration.llm_server import FaultProxy, llama_server
from tests.integration.server import free_port, start_server

DOCS = [
    {
        "external_id": "leave",
        "title": "Leave policy",
        "text": "Employees get 25 days of paid leave per year. Unused leave days expire at the end of March.",
    },
    {
        "external_id": "laptops",
        "title": "Equipment",
        "text": "Every employee receives a laptop on the first day. Laptops are replaced every three years.",
    },
]
QUESTION = "How many days of paid leave do employees get per year?"


@dataclass
class Deployment:
    base_url: str  # ragserve's, ending in /v1
    proxy: FaultProxy
    client: openai.OpenAI


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Deployment]:
    work = tmp_path_factory.mktemp("llm-api")
    with llama_server(model_cache, work / "llama.log") as llama:
        upstream_port = int(llama.base_url.split(":")[-1].split("/")[0])
        with FaultProxy(upstream_port) as proxy:
            providers = [
                {
                    "name": "gemma",
                    "kind": "openai_compat",
                    "base_url": proxy.base_url,
                    "model": "gemma",
                    "first_token_timeout_seconds": 30,
                    "max_output_tokens": 40,  # the tiny base model mostly echoes: keep answers short
                }
            ]
            env = {
                "RAGSERVE_LLM__PROVIDERS": json.dumps(providers),
                "RAGSERVE_LLM__BREAKER__RESET_TIMEOUT_SECONDS": "0.5",
                "RAGSERVE_LLM__RETRY__MAX_ATTEMPTS": "2",
                "RAGSERVE_CACHE__ANSWERS": "false",  # these tests are about generating, again and again
            }
            port = free_port()
            server = start_server(work / "data", port, model_cache, work / "ragserve.log", env)
            base = f"http://127.0.0.1:{port}"
            try:
                response = httpx.post(f"{base}/v1/documents", json={"documents": DOCS}, timeout=30)
                assert response.status_code == 202, response.text
                _wait_for_job(base, response.json()["job_id"])
                with openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120) as client:
                    yield Deployment(f"{base}/v1", proxy, client)
            finally:
                server.terminate()
                try:
                    server.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()


def _wait_for_job(base: str, job_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if httpx.get(f"{base}/v1/jobs/{job_id}").json()["status"] == "succeeded":
            return
        time.sleep(0.05)
    raise AssertionError("ingestion did not finish")


def test_chat_completion_with_the_openai_sdk(deployment: Deployment) -> None:
    deployment.proxy.set("pass")
    response = deployment.client.chat.completions.create(
        model="ragserve", messages=[{"role": "user", "content": QUESTION}]
    )
    extra = response.model_extra or {}
    assert response.object == "chat.completion"
    assert response.choices[0].message.content
    assert extra["generator"] == "gemma"
    assert extra["citations"], response.choices[0].message.content
    assert extra["citations"][0]["external_id"] == "leave"


def test_streamed_chat_completion_with_the_openai_sdk(deployment: Deployment) -> None:
    deployment.proxy.set("pass")
    stream = deployment.client.chat.completions.create(
        model="ragserve", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    last = chunks[-1].model_extra or {}
    assert len(chunks) > 3, "tokens arrive as separate chunks"
    assert text.strip()
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert last["generator"] == "gemma"
    assert last["citations"]
    assert last["citations"][0]["external_id"] == "leave"


def test_models_list_names_the_collections(deployment: Deployment) -> None:
    ids = {model.id for model in deployment.client.models.list()}
    assert {"ragserve", "ragserve/default"} <= ids


def test_unknown_model_is_404(deployment: Deployment) -> None:
    with pytest.raises(openai.NotFoundError):
        deployment.client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


def test_embeddings_with_the_openai_sdk_match_the_model(deployment: Deployment, embedder: OnnxEmbedder) -> None:
    texts = ["Leave policy\nEmployees get 25 days of paid leave per year.", "laptops"]
    result = deployment.client.embeddings.create(model="ragserve", input=texts)  # the SDK asks for base64
    vectors = np.array([item.embedding for item in result.data], dtype=np.float32)
    assert vectors.shape == (2, embedder.dimension)
    np.testing.assert_allclose(vectors, embedder.embed(texts, kind="document"), atol=1e-5)


def test_all_providers_down_answers_extractively(deployment: Deployment) -> None:
    deployment.proxy.set("refuse")
    try:
        answer = httpx.post(f"{deployment.base_url}/answer", json={"question": QUESTION}, timeout=30)
        chat = deployment.client.chat.completions.create(
            model="ragserve", messages=[{"role": "user", "content": QUESTION}]
        )
    finally:
        deployment.proxy.set("pass")
    assert answer.status_code == 200
    assert answer.json()["generator"] == "extractive"
    assert answer.json()["citations"][0]["external_id"] == "leave"
    assert (chat.model_extra or {})["generator"] == "extractive"


def _wait_for_the_provider(deployment: Deployment) -> None:
    """After a test that made the provider fail, its breaker may still be open: answers would be extractive and
    never reach upstream. Wait until an answer comes from the model again."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        answer = httpx.post(f"{deployment.base_url}/answer", json={"question": QUESTION}, timeout=30).json()
        if answer["generator"] != "extractive":
            return
        time.sleep(0.2)
    raise AssertionError("the provider's breaker did not close")


def test_client_disconnect_cancels_the_upstream_request(deployment: Deployment) -> None:
    deployment.proxy.set("pass")
    _wait_for_the_provider(deployment)
    before = deployment.proxy.log.client_gone_early
    body = {"question": "Write a long essay about the leave policy and laptops.", "stream": True}
    with httpx.stream("POST", f"{deployment.base_url}/answer", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("event: token"):
                break  # the first token arrived: hang up
    deadline = time.monotonic() + 10
    while deployment.proxy.log.client_gone_early == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert deployment.proxy.log.client_gone_early == before + 1


def test_embeddings_equal_the_vectors_the_index_holds(client: TestClient) -> None:
    job = ingest(client, DOCS[:1], collection="handbook")
    document = client.get(f"/v1/documents/{job['document_ids'][0]}?include_chunks=true").json()
    chunk = document["chunks"][0]
    text = embed_text(document["title"], chunk["section"], chunk["text"])
    response = client.post("/v1/embeddings", json={"model": "ragserve", "input": [text]})
    assert response.status_code == 200, response.text
    served = np.array(response.json()["data"][0]["embedding"], dtype=np.float32)
    service = client.app.state.service  # type: ignore[attr-defined]
    key = f"{service.embedder.model_id}:{hashlib.sha256(text.encode()).hexdigest()}"
    stored = np.frombuffer(service.store.get_vectors([key])[key], dtype="<f4")
    np.testing.assert_array_equal(served, stored)


def test_chat_completions_without_providers_use_the_extractive_generator(client: TestClient) -> None:
    ingest(client, DOCS, collection="handbook")
    body = {"model": "ragserve/handbook", "messages": [{"role": "user", "content": QUESTION}]}
    whole = client.post("/v1/chat/completions", json=body).json()
    assert whole["generator"] == "extractive"
    assert whole["citations"][0]["external_id"] == "leave"
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        == whole["choices"][0]["message"]["content"]
    )
    assert chunks[-1]["citations"] == whole["citations"]
    missing = client.post("/v1/chat/completions", json={**body, "model": "ragserve/nope"})
    assert missing.status_code == 404


def test_follow_up_question_is_made_standalone(client: TestClient) -> None:
    ingest(client, DOCS, collection="handbook")
    body = {
        "model": "ragserve/handbook",
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "What equipment do employees receive?"},
            {"role": "assistant", "content": "Every employee receives a laptop on the first day [1]."},
            {"role": "user", "content": "How often is it replaced?"},
        ],
    }
    response = client.post("/v1/chat/completions", json=body).json()
    assert "three years" in response["choices"][0]["message"]["content"]
    assert response["citations"][0]["external_id"] == "laptops"
