"""Retrieve and save the answer contexts of QA questions, for the abstention study (``abstention_study.py``).

Asks nothing: for each question it runs the same hybrid search as ``RagService.answer`` (k from settings,
default 6) against a corpus already ingested by ``ragserve eval-answers`` in ``RAGSERVE_DATA_DIR``, and writes
one JSON line per question: the question, its gold data, the study split and the hits (title, text, score,
external id). The study then scores the generator's abstention signal on these saved contexts, so tuning
needs no search and the numbers can be re-run from the saved file.

Splits: on a set with unanswerable questions (CLAP NQ) every question is ``tune`` or ``report`` by the parity
of the first byte of the SHA-256 of its id. On a set without (SQuAD) the seed-0 sample of ``eval-answers``
is ``report`` and ``--tune-sample`` other questions (seed 1) are ``tune``.

    RAGSERVE_DATA_DIR=/work/data-abstain/clap python bench/abstention_contexts.py \
        ../shared/datasets/clapnq-dev --out /work/data-abstain/clap-contexts.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
from pathlib import Path

from ragserve.answer_evaluation import QAItem, QASet, read_qa, sample_questions
from ragserve.retrieval.search import SearchQuery
from ragserve.service import RagService
from ragserve.settings import Settings


def split_of(question_id: str) -> str:
    """``tune`` or ``report``: a fixed half of the questions, whatever their order or sample."""
    return "tune" if hashlib.sha256(question_id.encode()).digest()[0] % 2 == 0 else "report"


def study_questions(qa: QASet, tune_sample: int) -> list[tuple[QAItem, str]]:
    """The questions to save, each with its split."""
    if any(not item.is_answerable for item in qa.items):
        return [(item, split_of(item.id)) for item in qa.items]
    reported = sample_questions(qa, None, 0)
    ids = {item.id for item in reported}
    others = [item for item in qa.items if item.id not in ids]
    tuned = random.Random(1).sample(others, min(tune_sample, len(others)))
    return [(item, "report") for item in reported] + [(item, "tune") for item in tuned]


async def save_contexts(dataset: Path, out: Path, tune_sample: int) -> None:
    qa = read_qa(dataset)
    settings = Settings()
    service = RagService.open(settings)
    try:
        await service.start(run_jobs=False)
        with out.open("w", encoding="utf-8") as handle:
            for item, split in study_questions(qa, tune_sample):
                query = SearchQuery(item.question, settings.answer.k, 0, qa.name, mode="hybrid")
                result = await service.search(query)
                row = {
                    "id": item.id,
                    "question": item.question,
                    "answerable": item.is_answerable,
                    "answers": item.answers,
                    "context_id": item.context_id,
                    "has_spans": qa.has_spans,
                    "split": split,
                    "hits": [
                        {"external_id": h.external_id, "title": h.title, "text": h.text, "score": h.score}
                        for h in result.hits
                    ],
                }
                handle.write(json.dumps(row) + "\n")
    finally:
        await service.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tune-sample", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(save_contexts(args.dataset, args.out, args.tune_sample))


if __name__ == "__main__":
    main()
