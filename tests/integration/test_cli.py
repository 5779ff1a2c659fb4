"""The ``ragserve`` command line: ingest, search, ask and eval on real files and the SciFact slice."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ragserve.cli import app
from ragserve.evaluation import read_corpus
from tests.conftest import FIXTURES
from tests.integration.server import free_port, start_server

SLICE = FIXTURES / "scifact_slice"


@pytest.fixture
def env(tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RAGSERVE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAGSERVE_EMBEDDING__CACHE_DIR", str(model_cache))
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path


def test_ingest_directory_then_search_and_ask(env: Path) -> None:
    docs = env / "docs"
    (docs / "nested").mkdir(parents=True)
    shutil.copy(FIXTURES / "files" / "guide.md", docs / "guide.md")
    shutil.copy(FIXTURES / "files" / "report.pdf", docs / "nested" / "report.pdf")
    shutil.copy(FIXTURES / "files" / "garbage.pdf", docs / "nested" / "garbage.pdf")
    (docs / "notes.xyz").write_text("ignored: unsupported extension")
    runner = CliRunner()

    result = runner.invoke(app, ["ingest", str(docs), "--collection", "kb"])
    assert result.exit_code == 2, result.output  # one file failed
    assert "2 documents ingested, 1 failed" in result.output
    assert "garbage.pdf" in result.output

    result = runner.invoke(app, ["search", "installation steps", "--collection", "kb", "--json", "--mode", "keyword"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["mode"] == "keyword"
    assert payload["results"]
    assert {r["source"] for r in payload["results"]} <= {"guide.md", "report.pdf"}

    result = runner.invoke(app, ["ask", "What is this guide about?", "--collection", "kb"])
    assert result.exit_code == 0, result.output
    assert result.output.strip()


def test_eval_on_the_scifact_slice(env: Path) -> None:
    report_file = env / "report.json"
    result = CliRunner().invoke(
        app,
        ["eval", str(FIXTURES / "scifact_slice"), "--mode", "keyword", "--mode", "hybrid", "--json", str(report_file)],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(report_file.read_text())
    assert report["queries"] == 40
    assert set(report["modes"]) == {"keyword", "hybrid"}
    for scores in report["modes"].values():
        # Small corpus (200 abstracts): scores are far above the full corpus's; a broken ranker is near 0.
        assert scores["ndcg@10"] > 0.6
        assert scores["recall@100"] > 0.9
        assert scores["latency_ms_p50"] > 0
    # A second run finds the corpus already ingested and ingests nothing.
    again = CliRunner().invoke(app, ["eval", str(FIXTURES / "scifact_slice"), "--mode", "keyword"])
    assert again.exit_code == 0
    assert "ingesting" not in again.output


def test_a_second_process_on_the_same_data_dir_is_refused(env: Path) -> None:
    from ragserve.settings import Settings
    from ragserve.stores.factory import lock_data_dir

    handle = lock_data_dir(Settings())
    try:
        result = CliRunner().invoke(app, ["search", "anything"])
        assert result.exit_code == 1
        assert "in use" in result.output
    finally:
        handle.close()


def test_index_commands_against_a_running_server(tmp_path: Path, model_cache: Path) -> None:
    """``ragserve index`` drives a real server process over HTTP: golden set, build, canary, promote, rollback."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path / "data", port, model_cache, tmp_path / "server.log")
    try:
        documents = [{"external_id": d.id, "title": d.title, "text": d.text} for d in read_corpus(SLICE)][:60]
        response = httpx.post(f"{url}/v1/documents", json={"collection": "sci", "documents": documents}, timeout=30)
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        while httpx.get(f"{url}/v1/jobs/{job_id}").json()["status"] in ("queued", "running"):
            time.sleep(0.2)
        runner = CliRunner(env={"COLUMNS": "200"})

        def run(*args: str) -> str:
            result = runner.invoke(app, ["index", *args, "--collection", "sci", "--url", url])
            assert result.exit_code == 0, result.output
            return result.output

        assert "golden set of sci: 40 queries" in run("golden", str(SLICE), "--split", "test")
        assert "version 2 is ready" in run("create", "--max-tokens", "64", "--overlap-tokens", "8")
        status = run("status")
        assert "64/8" in status
        assert "200/40" in status
        assert "canary 50%" in run("canary", "2", "--share", "50")
        promoted = run("promote", "2", "--force")
        assert "gate: nDCG@10" in promoted
        assert httpx.get(f"{url}/v1/collections/sci/index").json()["active"] == 2
        run("rollback")
        assert httpx.get(f"{url}/v1/collections/sci/index").json()["active"] == 1
        assert "version 3 is ready" in run("create", "--precision", "int8")
        assert "int8" in run("status")
        refused = runner.invoke(app, ["index", "delete", "1", "--collection", "sci", "--url", url])
        assert refused.exit_code == 1
        assert "error (409)" in refused.output
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_keys_commands(env: Path) -> None:
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--scopes", "query,ingest", "--name", "ci"])
    assert created.exit_code == 0, created.output
    secret = created.output.splitlines()[0].strip()
    assert secret.startswith("rsk_")
    key_id = secret.split("_")[1]
    listed = runner.invoke(app, ["keys", "list"])
    assert key_id in listed.output
    assert secret not in listed.output
    assert "query,ingest" in listed.output
    assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 0
    assert runner.invoke(app, ["keys", "revoke", "000000000000"]).exit_code == 1
    bad = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--scopes", "root"])
    assert bad.exit_code == 1
    assert "scopes must be" in bad.output


def test_eval_of_several_datasets_writes_one_report_and_a_plot(env: Path) -> None:
    """Two datasets, each in its own collection, every mode: one JSON report and a PNG of the results."""
    from matplotlib.image import imread

    report_file, plot_file = env / "report.json", env / "eval.png"
    squad, clap = FIXTURES / "squad_mini", FIXTURES / "clapnq_mini"
    result = CliRunner().invoke(
        app, ["eval", str(squad), str(clap), "--json", str(report_file), "--plot", str(plot_file)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(report_file.read_text())
    assert report["modes"] == ["keyword", "dense", "hybrid"]
    by_name = {r["dataset"]: r for r in report["datasets"]}
    assert set(by_name) == {"squad_mini", "clapnq_mini"}
    assert by_name["squad_mini"]["queries"] == 16
    assert by_name["clapnq_mini"]["queries"] == 4  # the answerable ones: only they have qrels
    for dataset in by_name.values():
        assert set(dataset["modes"]) == {"keyword", "dense", "hybrid"}
        for scores in dataset["modes"].values():
            assert scores["ndcg@10"] > 0.6
            assert scores["latency_ms_p95"] >= scores["latency_ms_p50"] > 0
    assert plot_file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_file.stat().st_size > 20_000
    height, width, _ = imread(plot_file).shape
    assert width > 800
    assert height > 400

    # Each dataset has its own collection, so BM25 statistics never mix.
    listed = CliRunner().invoke(app, ["search", "Super Bowl", "--collection", "squad_mini", "--json"])
    assert {r["external_id"][:1] for r in json.loads(listed.output)["results"]} == {"a"}
    refused = CliRunner().invoke(app, ["eval", str(squad), str(clap), "--collection", "one"])
    assert refused.exit_code == 2
    assert "single dataset" in refused.output


def test_eval_answers_on_squad_and_clapnq_fixtures(env: Path) -> None:
    runner = CliRunner()
    squad_file = env / "squad.json"
    result = runner.invoke(app, ["eval-answers", str(FIXTURES / "squad_mini"), "--json", str(squad_file)])
    assert result.exit_code == 0, result.output
    squad = json.loads(squad_file.read_text())
    assert squad["sample"] == squad["questions"] == squad["answerable"]["questions"] == 16
    assert squad["corpus_documents"] == 8
    assert "unanswerable" not in squad
    records = {r["id"]: r for r in squad["records"]}
    assert len(records) == 16
    # Quoting the sentence that holds the answer is all this takes; the gold span is in it.
    won = records["56be4db0acb8001400a502ec"]  # Which NFL team represented the AFC at Super Bowl 50?
    assert not won["abstained"]
    assert "Denver Broncos" in won["answer"]
    assert (won["gold_in_answer"], won["gold_in_quotes"], won["cites_gold_passage"]) == (True, True, True)
    found = sum(r["gold_in_answer"] for r in records.values())
    assert squad["answerable"]["gold_in_answer"] == round(found / 16, 4)
    assert {t["name"] for t in squad["targets"]} == {"answerable.gold_in_answer", "median_answer_words"}
    assert "median answer words" in result.output

    clap_file = env / "clap.json"
    result = runner.invoke(
        app, ["eval-answers", str(FIXTURES / "clapnq_mini"), "--sample", "3", "--json", str(clap_file)]
    )
    assert result.exit_code == 0, result.output
    clap = json.loads(clap_file.read_text())
    assert clap["answerable"]["questions"] == clap["unanswerable"]["questions"] == 3
    assert clap["answerable"]["gold_in_answer"] is None  # long-form gold answers: not matched as text
    unanswerable = [r for r in clap["records"] if not r["is_answerable"]]
    assert clap["unanswerable"]["abstained"] == round(sum(r["abstained"] for r in unanswerable) / 3, 4)
    assert all(r["cites_gold_passage"] is None for r in unanswerable)  # no gold passage to cite
    assert {t["name"] for t in clap["targets"]} == {
        "unanswerable.abstained",
        "answerable.answered_citing_gold_passage",
    }
