"""A large corpus of real text with vectors that keep the model's neighbour structure, for ``scale.py``.

Embedding a million chunks with the model would take days on this machine's 2 cores, so the model embeds a
pool of real sentences once, and chunk vectors are made from theirs:

* **Sentence pool.** Whole passages of the five corpora under ``/work/shared/datasets`` (SciFact, NFCorpus,
  SQuAD, PubMedQA, CLAPNQ), taken in turn from each in a seeded order, are split into sentences
  (``ragserve.ingest.sentences``) until the pool holds ``--pool-sentences``. The model embeds every pool
  sentence; the vectors are cached in the data directory (``pool/``), in shards, so an interrupted run resumes.
* **Documents.** Each document follows one passage: runs of 2-4 of its consecutive sentences (starting at a
  random sentence and wrapping around), each followed by 1-3 consecutive sentences of another passage of the
  same corpus, until a random length of 250-1,200 tokens. Its title is the passage's title. Every document is a
  different mix, so chunks are distinct, while chunks of one passage stay near each other, as in a real corpus.
* **Chunk vectors.** The real ingestion pipeline parses and chunks the documents (200 tokens, 40 overlapping);
  ``PoolEmbedder`` then gives each chunk the normalised mean of its sentences' pool vectors (weighted by their
  tokens), in place of the model's forward pass. ``vector_fidelity`` compares that with the model's own
  vector of the chunk text.
* **Queries.** Real questions from the datasets' ``queries.jsonl`` (never part of the corpora's text),
  embedded by the model.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.embedding.protocol import EmbedKind, Vectors
from ragserve.evaluation import percentile, read_corpus
from ragserve.ingest.sentences import split_sentences

DATASETS = ("scifact", "nfcorpus", "squad-v1.1-dev", "pubmedqa-pqal", "clapnq-dev")
_SHARD = 2048
_MIN_SENTENCE_CHARS = 20
_MAX_SENTENCE_CHARS = 600


@dataclass(frozen=True, slots=True)
class Passage:
    dataset: str
    title: str
    first: int  # index of its first sentence in the pool
    count: int


@dataclass
class SentencePool:
    """Pool sentences (stripped), the passages they came from, and each sentence's model vector and tokens."""

    sentences: list[str]
    passages: list[Passage]
    vectors: Vectors
    tokens: np.ndarray

    def by_dataset(self) -> dict[str, list[Passage]]:
        grouped: dict[str, list[Passage]] = {}
        for passage in self.passages:
            grouped.setdefault(passage.dataset, []).append(passage)
        return grouped


def select_passages(datasets_dir: Path, target_sentences: int, seed: int) -> tuple[list[str], list[Passage]]:
    """Whole passages from each corpus in turn (each corpus in a seeded order) until ``target_sentences``."""
    rng = random.Random(seed)
    queues: list[tuple[str, list[tuple[str, list[str]]]]] = []
    for name in DATASETS:
        rows = []
        for doc in read_corpus(datasets_dir / name):
            pieces = [s.strip() for s in split_sentences(doc.text)]
            kept = [s for s in pieces if _MIN_SENTENCE_CHARS <= len(s) <= _MAX_SENTENCE_CHARS]
            if len(kept) >= 3:
                rows.append((doc.title, kept))
        rng.shuffle(rows)
        queues.append((name, rows))
    sentences: list[str] = []
    passages: list[Passage] = []
    while len(sentences) < target_sentences and any(rows for _, rows in queues):
        for name, rows in queues:
            if rows and len(sentences) < target_sentences:
                title, kept = rows.pop()
                passages.append(Passage(name, title, len(sentences), len(kept)))
                sentences.extend(kept)
    return sentences, passages


def load_pool(directory: Path, datasets_dir: Path, target: int, embedder: OnnxEmbedder, seed: int) -> SentencePool:
    """The pool, embedding whatever shards are not cached yet in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / f"pool-{target}-{seed}.json"
    if manifest.exists():
        data = json.loads(manifest.read_text())
        sentences = data["sentences"]
        passages = [Passage(**p) for p in data["passages"]]
    else:
        sentences, passages = select_passages(datasets_dir, target, seed)
        manifest.write_text(json.dumps({"sentences": sentences, "passages": [asdict(p) for p in passages]}))
    shards = []
    for start in range(0, len(sentences), _SHARD):
        path = directory / f"pool-{target}-{seed}-{start:07d}.npy"
        if not path.exists():
            np.save(path, embedder.embed(sentences[start : start + _SHARD]))
        shards.append(np.load(path))
    tokens = np.asarray(embedder.count_tokens(sentences), dtype=np.int32)
    return SentencePool(sentences, passages, np.concatenate(shards).astype(np.float32), tokens)


@dataclass(frozen=True, slots=True)
class SyntheticDocument:
    external_id: str
    title: str | None
    text: str


class DocumentFactory:
    """Distinct documents mixing pool passages of one corpus (see the module docstring), reproducibly."""

    def __init__(self, pool: SentencePool, seed: int) -> None:
        self._pool = pool
        self._groups = pool.by_dataset()
        self._rng = random.Random(seed)

    def documents(self) -> Iterator[SyntheticDocument]:
        n = 0
        while True:
            yield self._document(f"syn-{n:08d}")
            n += 1

    def _document(self, external_id: str) -> SyntheticDocument:
        rng, pool = self._rng, self._pool
        main = rng.choice(pool.passages)
        others = self._groups[main.dataset]
        target = rng.randint(250, 1200)
        cursor = rng.randrange(main.count)
        paragraphs, tokens = [], 0
        while tokens < target:
            picked = [main.first + (cursor + i) % main.count for i in range(rng.randint(2, 4))]
            cursor += len(picked)
            other = rng.choice(others)
            start = rng.randrange(other.count)
            picked += [other.first + i for i in range(start, min(other.count, start + rng.randint(1, 3)))]
            paragraphs.append(" ".join(pool.sentences[i] for i in picked))
            tokens += int(pool.tokens[picked].sum())
        return SyntheticDocument(external_id, main.title or None, "\n\n".join(paragraphs))


class PoolEmbedder:
    """``Embedder`` for ingestion without the model's forward pass: a text's vector is the normalised mean of
    the pool vectors of the sentences in it, weighted by their tokens (the title line and any other unknown
    piece are left out). A text with no pool sentence at all is embedded by the model. Queries always go to
    the model."""

    def __init__(self, pool: SentencePool, model: OnnxEmbedder) -> None:
        self._model = model
        self._vectors = pool.vectors
        self._tokens = pool.tokens.astype(np.float32)
        self._index = {sentence: i for i, sentence in enumerate(pool.sentences)}
        self.texts = 0
        self.pieces = 0
        self.pieces_found = 0
        self.texts_by_model = 0
        self.seconds = 0.0

    @property
    def model_id(self) -> str:
        return self._model.model_id  # the same id, so the server sees the collection's model as its own

    @property
    def dimension(self) -> int:
        return self._model.dimension

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self._model.count_tokens(texts)

    def embed(self, texts: Sequence[str], kind: EmbedKind = "document") -> Vectors:
        if kind == "query":
            return self._model.embed(texts, kind="query")
        started = time.perf_counter()
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        unknown = []
        for row, text in enumerate(texts):
            found = self.sentence_rows(text)
            if found:
                mean = self._tokens[found] @ self._vectors[found]
                out[row] = mean / np.linalg.norm(mean)
            else:
                unknown.append(row)
        if unknown:
            out[unknown] = self._model.embed([texts[i] for i in unknown])
        self.texts += len(texts)
        self.texts_by_model += len(unknown)
        self.seconds += time.perf_counter() - started
        return out

    def sentence_rows(self, text: str) -> list[int]:
        pieces = [s.strip() for line in text.split("\n") for s in split_sentences(line)]
        found = [self._index[p] for p in pieces if p in self._index]
        self.pieces += len(pieces)
        self.pieces_found += len(found)
        return found


def vector_fidelity(texts: Sequence[str], pooled: PoolEmbedder, model: OnnxEmbedder) -> dict[str, float]:
    """Cosine between each text's pool-mean vector and the model's vector of the whole text."""
    synthetic = pooled.embed(texts)
    real = model.embed(texts)
    cosines = [float(c) for c in np.sum(synthetic * real, axis=1)]
    return {
        "chunks": len(texts),
        "cosine_mean": round(float(np.mean(cosines)), 4),
        "cosine_p5": round(percentile(cosines, 5), 4),
        "cosine_min": round(min(cosines), 4),
    }


def held_out_questions(datasets_dir: Path, count: int, seed: int) -> list[str]:
    """``count`` distinct questions, as evenly as the datasets allow, shuffled reproducibly."""
    rng = random.Random(seed)
    per_dataset = []
    for name in DATASETS:
        lines = (datasets_dir / name / "queries.jsonl").read_text(encoding="utf-8").splitlines()
        texts = sorted({str(json.loads(line)["text"]).strip() for line in lines if line.strip()})
        rng.shuffle(texts)
        per_dataset.append(texts)
    questions: list[str] = []
    while len(questions) < count and any(per_dataset):
        for texts in per_dataset:
            if texts and len(questions) < count:
                questions.append(texts.pop())
    rng.shuffle(questions)
    return questions
