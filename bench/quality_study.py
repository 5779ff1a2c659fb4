"""Which ranking reaches the issue-3 quality targets? BM25 parameters, chunk vs document units, dense
aggregation, fusion, pseudo-relevance feedback and a small learned fusion, each tuned on a tuning split
(train or dev) and reported on test, so no test query chooses anything.

    RAGSERVE_DATA_DIR=/work/quality-data/scifact python bench/quality_study.py ../shared/datasets/scifact \\
        --tune train

Everything is scored exhaustively in numpy from the store's chunks (texts and vectors, read once; no lock is
taken and nothing is written): BM25 is computed here over the analysed terms (``stores/analyzer.py``) exactly as
FTS5's ``bm25()`` does, with k1 and b free; dense is the exact cosine with every chunk (HNSW's approximation
aside, what the service computes). Document-level BM25 indexes each corpus record whole (title + text).
``--keyword-only`` skips everything that needs vectors (useful while a corpus is still being embedded).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragserve.evaluation import ndcg_at, read_corpus, read_queries
from ragserve.settings import Settings
from ragserve.stores.analyzer import analyze
from ragserve.stores.sqlite_db import SqliteDatabase


class Bm25Index:
    """Okapi BM25 over units of two fields (title, body), as FTS5's ``bm25()``: a term's frequency is
    ``title_weight * tf_title + tf_body``, a unit's length counts both fields, IDF is
    ``ln((N - n + 0.5) / (n + 0.5))`` floored at 1e-6."""

    def __init__(self, titles: Sequence[list[str]], bodies: Sequence[list[str]]) -> None:
        self.n = len(bodies)
        self.lengths = np.array([len(t) + len(b) for t, b in zip(titles, bodies, strict=True)], dtype=np.float64)
        self.avg = float(self.lengths.mean()) if self.n else 1.0
        title_p: dict[str, list[tuple[int, int]]] = {}
        body_p: dict[str, list[tuple[int, int]]] = {}
        self.forward: list[Counter[str]] = []
        for i, (title, body) in enumerate(zip(titles, bodies, strict=True)):
            for term, tf in Counter(title).items():
                title_p.setdefault(term, []).append((i, tf))
            counts = Counter(body)
            for term, tf in counts.items():
                body_p.setdefault(term, []).append((i, tf))
            self.forward.append(counts + Counter(title))
        self.postings: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for term in title_p.keys() | body_p.keys():
            tf_t = dict(title_p.get(term, []))
            tf_b = dict(body_p.get(term, []))
            ids = np.array(sorted(tf_t.keys() | tf_b.keys()), dtype=np.int64)
            self.postings[term] = (
                ids,
                np.array([tf_t.get(int(i), 0) for i in ids], dtype=np.float64),
                np.array([tf_b.get(int(i), 0) for i in ids], dtype=np.float64),
            )

    def idf(self, term: str) -> float:
        found = self.postings.get(term)
        df = 0 if found is None else len(found[0])
        return max(float(np.log((self.n - df + 0.5) / (df + 0.5))), 1e-6)

    def scores(self, weights: dict[str, float], k1: float, b: float, title_weight: float) -> np.ndarray:
        out = np.zeros(self.n)
        for term, weight in weights.items():
            found = self.postings.get(term)
            if found is None:
                continue
            ids, tf_t, tf_b = found
            freq = title_weight * tf_t + tf_b
            norm = k1 * (1 - b + b * self.lengths[ids] / self.avg)
            out[ids] += weight * self.idf(term) * freq * (k1 + 1) / (freq + norm)
        return out

    def rm3(self, scores: np.ndarray, query: dict[str, float], docs: int, terms: int, lam: float) -> dict[str, float]:
        """RM3: the query mixed (weight ``1 - lam``) with the top ``terms`` terms of a relevance model over the
        ``docs`` best units (term probabilities weighted by each unit's softmax-normalised score)."""
        top = np.argsort(-scores)[:docs]
        if len(top) == 0 or scores[top[0]] <= 0:
            return query
        w = np.exp(scores[top] - scores[top].max())
        w /= w.sum()
        model: Counter[str] = Counter()
        for weight, unit in zip(w, top, strict=True):
            counts = self.forward[int(unit)]
            total = sum(counts.values()) or 1
            for term, tf in counts.items():
                model[term] += float(weight) * tf / total
        best = model.most_common(terms)
        mass = sum(v for _, v in best) or 1.0
        q_total = sum(query.values()) or 1.0
        mixed: dict[str, float] = {t: (1 - lam) * v / q_total for t, v in query.items()}
        for term, value in best:
            mixed[term] = mixed.get(term, 0.0) + lam * value / mass
        return mixed


def feedback_terms(index: Bm25Index, scores: np.ndarray, query: dict[str, float], docs: int, terms: int) -> list[str]:
    """The service's feedback (``retrieval/feedback.py``): the ``terms`` most probable non-query terms of a
    relevance model over the ``docs`` best units, each unit weighted by its softmax-normalised score."""
    top = np.argsort(-scores)[:docs]
    top = top[scores[top] > 0]
    if len(top) == 0:
        return []
    w = np.exp(scores[top] - scores[top].max())
    w /= w.sum()
    model: Counter[str] = Counter()
    for weight, unit in zip(w, top, strict=True):
        counts = index.forward[int(unit)]
        total = sum(counts.values()) or 1
        for term, tf in counts.items():
            if term not in query:
                model[term] += float(weight) * tf / total
    return [t for t, _ in sorted(model.items(), key=lambda item: (-item[1], item[0]))[:terms]]


def doc_max(unit_scores: np.ndarray, doc_of_unit: np.ndarray, n_docs: int) -> np.ndarray:
    out = np.full(n_docs, -np.inf)
    np.maximum.at(out, doc_of_unit, unit_scores)
    return out


def doc_top2(unit_scores: np.ndarray, doc_of_unit: np.ndarray, n_docs: int, gamma: float) -> np.ndarray:
    """Each document's best unit score plus ``gamma`` times its second best (its best again when it has one)."""
    first = doc_max(unit_scores, doc_of_unit, n_docs)
    is_first = unit_scores >= first[doc_of_unit]
    rest = np.where(is_first, -np.inf, unit_scores)
    second = doc_max(rest, doc_of_unit, n_docs)
    second = np.where(np.isfinite(second), second, first)
    return first + gamma * second


def zscores(scores: np.ndarray, candidates: int) -> np.ndarray:
    """z-scores over the top ``candidates``; everything else gets the lowest candidate's z (the service's floor)."""
    top = np.argpartition(-scores, min(candidates, len(scores) - 1))[:candidates]
    vals = scores[top]
    std = float(vals.std()) or 1.0
    z = (vals - vals.mean()) / std
    out = np.full(len(scores), float(z.min()))
    out[top] = z
    return out


def ranks(scores: np.ndarray) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")
    r = np.empty(len(scores))
    r[order] = np.arange(1, len(scores) + 1)
    return r


@dataclass
class Query:
    qid: str
    rel: dict[str, int]
    terms: dict[str, float]
    vector: np.ndarray | None


class Study:
    def __init__(self, dataset: Path, keyword_only: bool, candidates: int, embedded_only: bool) -> None:
        self.candidates = candidates
        settings = Settings()
        corpus = list(read_corpus(dataset))
        db = SqliteDatabase(settings.database_path)
        name = dataset.resolve().name
        (cid,) = db.fetchone("SELECT active_index FROM collections WHERE name = ?", (name,))
        rows = db.fetchall(
            "SELECT d.external_id, d.title, c.section, c.text, c.vector FROM chunks c "
            "JOIN documents d ON d.id = c.document_id WHERE c.collection_id = ? ORDER BY c.id",
            (cid,),
        )
        db.close()
        if embedded_only:
            # A corpus still being embedded: study the sub-corpus of the documents already in the store.
            present = {r[0] for r in rows}
            corpus = [d for d in corpus if d.id in present]
        self.doc_ids = [d.id for d in corpus]
        self.doc_pos = {d: i for i, d in enumerate(self.doc_ids)}
        self.docs = Bm25Index([analyze(d.title) for d in corpus], [analyze(d.text) for d in corpus])
        self.chunk_doc = np.array([self.doc_pos[r[0]] for r in rows], dtype=np.int64)
        self.chunks = Bm25Index([analyze(r[1] or "") for r in rows], [analyze(f"{r[2] or ''}\n{r[3]}") for r in rows])
        self.vectors = None if keyword_only else np.stack([np.frombuffer(r[4], dtype=np.float32) for r in rows])
        self.embedded_docs = len(set(self.chunk_doc.tolist()))
        self.embedder: Any = None
        if not keyword_only:
            from ragserve.embedding.onnx import OnnxEmbedder

            self.embedder = OnnxEmbedder(cache_dir=settings.model_cache_dir)
        self.dataset = dataset

    def queries(self, split: str) -> list[Query]:
        texts, qrels = read_queries(self.dataset, split)
        ids = list(texts)
        # Only judgements of documents in the studied corpus count; a query left without a relevant one is dropped.
        rels = {q: {d: r for d, r in qrels[q].items() if d in self.doc_pos} for q in ids}
        ids = [q for q in ids if any(r > 0 for r in rels[q].values())]
        vectors = self.embedder.embed([texts[q] for q in ids], kind="query") if self.embedder else None
        return [
            Query(q, rels[q], {t: 1.0 for t in set(analyze(texts[q]))}, None if vectors is None else vectors[i])
            for i, q in enumerate(ids)
        ]

    def ndcg(self, queries: list[Query], rank: Callable[[Query], np.ndarray]) -> float:
        out = []
        for q in queries:
            scores = rank(q)
            top = np.argsort(-scores, kind="stable")[:10]
            out.append(ndcg_at([self.doc_ids[i] for i in top], q.rel))
        return float(np.mean(out))

    # --- the halves, as document score vectors ------------------------------------------------------------

    def bm25_doc(
        self, q: Query, k1: float, b: float, tw: float, prf: tuple[int, int, float] | None = None
    ) -> np.ndarray:
        s = self.docs.scores(q.terms, k1, b, tw)
        if prf is not None:
            s = self.docs.scores(self.docs.rm3(s, q.terms, *prf), k1, b, tw)
        return s

    def bm25_chunk(
        self, q: Query, k1: float, b: float, tw: float, prf: tuple[int, int, float] | None = None
    ) -> np.ndarray:
        s = self.chunks.scores(q.terms, k1, b, tw)
        if prf is not None:
            s = self.chunks.scores(self.chunks.rm3(s, q.terms, *prf), k1, b, tw)
        return np.maximum(doc_max(s, self.chunk_doc, len(self.doc_ids)), 0.0)

    def dense(self, q: Query, gamma: float = 0.0, rocchio: tuple[int, float] | None = None) -> np.ndarray:
        if self.vectors is None or q.vector is None:
            raise ValueError("no vectors: run without --keyword-only")
        sims = self.vectors @ q.vector
        if rocchio is not None:
            fb, beta = rocchio
            top = np.argsort(-sims)[:fb]
            moved = q.vector + beta * self.vectors[top].mean(axis=0)
            sims = self.vectors @ (moved / np.linalg.norm(moved))
        agg = (
            doc_max(sims, self.chunk_doc, len(self.doc_ids))
            if gamma == 0
            else doc_top2(sims, self.chunk_doc, len(self.doc_ids), gamma)
        )
        return np.where(np.isfinite(agg), agg, -1.0)

    def fuse(self, dense: np.ndarray, keyword: np.ndarray, alpha: float, how: str = "z") -> np.ndarray:
        if how == "z":
            return alpha * zscores(dense, self.candidates) + (1 - alpha) * zscores(keyword, self.candidates)
        if how == "minmax":

            def mm(s: np.ndarray) -> np.ndarray:
                top = np.sort(s)[-self.candidates :]
                lo, hi = float(top[0]), float(top[-1])
                return np.clip((s - lo) / ((hi - lo) or 1.0), 0, None)

            return alpha * mm(dense) + (1 - alpha) * mm(keyword)
        k = alpha  # rrf: alpha is k
        return 1 / (k + ranks(dense)) + 1 / (k + ranks(keyword))


def grid_best(
    study: Study,
    tune: list[Query],
    test: list[Query],
    grid: list[Any],
    make: Callable[[Any], Callable[[Query], np.ndarray]],
) -> dict[str, Any]:
    tuned = {json.dumps(p): study.ndcg(tune, make(p)) for p in grid}
    best = max(tuned, key=lambda p: tuned[p])
    return {
        "best": json.loads(best),
        "tune": round(tuned[best], 4),
        "test": round(study.ndcg(test, make(json.loads(best))), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--tune", default="train")
    parser.add_argument("--tune-sample", type=int, default=0, help="tune on this many queries of the split (0: all)")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--keyword-only", action="store_true")
    parser.add_argument("--embedded-only", action="store_true", help="study only the documents already embedded")
    parser.add_argument("--quick", action="store_true", help="only the baseline and the service's feedback")
    args = parser.parse_args()
    study = Study(args.dataset, args.keyword_only, args.candidates, args.embedded_only)
    tune, test = study.queries(args.tune), study.queries("test")
    if args.tune_sample and len(tune) > args.tune_sample:
        rng = np.random.default_rng(0)
        tune = [tune[i] for i in sorted(rng.choice(len(tune), args.tune_sample, replace=False))]
    report: dict[str, Any] = {
        "dataset": args.dataset.name,
        "tuned_on": args.tune,
        "tune_queries": len(tune),
        "test_queries": len(test),
        "embedded_docs": study.embedded_docs,
        "studied_docs": len(study.doc_ids),
        "results": {},
    }
    res = report["results"]

    def record(name: str, value: dict[str, Any]) -> None:
        res[name] = value
        print(name, value, flush=True)

    def prf_uniform(unit: str, k1: float, b: float, p: list[Any]) -> Callable[[Query], np.ndarray]:
        """Service-style feedback: a second search with the expansion terms (unweighted), added with weight mu."""
        fb_docs, fb_terms, mu = p
        index = study.docs if unit == "doc" else study.chunks

        def rank(q: Query) -> np.ndarray:
            s1 = index.scores(q.terms, k1, b, 1.0)
            extra = feedback_terms(index, s1, q.terms, fb_docs, fb_terms)
            s = s1 + mu * index.scores({t: 1.0 for t in extra}, k1, b, 1.0)
            return s if unit == "doc" else np.maximum(doc_max(s, study.chunk_doc, len(study.doc_ids)), 0.0)

        return rank

    record(
        "bm25_chunk_fts5_default", {"test": round(study.ndcg(test, lambda q: study.bm25_chunk(q, 1.2, 0.75, 1.0)), 4)}
    )
    record(
        "bm25_chunk_feedback_5_20_0.2",
        {"test": round(study.ndcg(test, prf_uniform("chunk", 1.2, 0.75, [5, 20, 0.2])), 4)},
    )
    if not args.quick:
        kb_grid = [[k1, b] for k1 in (0.6, 0.9, 1.2, 1.5) for b in (0.3, 0.4, 0.55, 0.75, 0.9)]
        bc = grid_best(study, tune, test, kb_grid, lambda p: lambda q: study.bm25_chunk(q, p[0], p[1], 1.0))
        record("bm25_chunk_k1_b", bc)
        record("bm25_doc_default", {"test": round(study.ndcg(test, lambda q: study.bm25_doc(q, 1.2, 0.75, 1.0)), 4)})
        bd = grid_best(study, tune, test, kb_grid, lambda p: lambda q: study.bm25_doc(q, p[0], p[1], 1.0))
        record("bm25_doc_k1_b", bd)
        k1c, bcb = bc["best"]
        k1d, bdb = bd["best"]
        record(
            "bm25_chunk_title_weight",
            grid_best(study, tune, test, [1.0, 2.0, 3.0], lambda tw: lambda q: study.bm25_chunk(q, k1c, bcb, tw)),
        )
        prf_grid = [[d, t, lam] for d in (3, 10) for t in (10, 30) for lam in (0.2, 0.4)]
        record(
            "bm25_doc_rm3",
            grid_best(study, tune, test, prf_grid, lambda p: lambda q: study.bm25_doc(q, k1d, bdb, 1.0, tuple(p))),
        )
        prf_u_grid = [[d, t, mu] for d in (3, 5) for t in (5, 10, 20) for mu in (0.1, 0.2, 0.35, 0.5)]
        record(
            "bm25_doc_feedback_uniform",
            grid_best(study, tune, test, prf_u_grid, lambda p: prf_uniform("doc", 1.2, 0.75, p)),
        )
    if args.keyword_only:
        print(json.dumps(report, indent=2))
        return

    dense_cache: dict[tuple[str, float], np.ndarray] = {}

    def dense(q: Query, gamma: float = 0.0) -> np.ndarray:
        key = (q.qid, gamma)
        if key not in dense_cache:
            dense_cache[key] = study.dense(q, gamma)
        return dense_cache[key]

    kw_cache: dict[tuple[str, str, float, float], np.ndarray] = {}

    def kw(q: Query, unit: str, k1: float, b: float) -> np.ndarray:
        key = (q.qid, unit, k1, b)
        if key not in kw_cache:
            kw_cache[key] = (study.bm25_chunk if unit == "chunk" else study.bm25_doc)(q, k1, b, 1.0)
        return kw_cache[key]

    record("dense_max_test", {"test": round(study.ndcg(test, dense), 4)})
    record(
        "baseline_z_chunkbm25_fts5_alpha0.5",
        {"test": round(study.ndcg(test, lambda q: study.fuse(dense(q), kw(q, "chunk", 1.2, 0.75), 0.5)), 4)},
    )
    fb_cache: dict[tuple[str, str], np.ndarray] = {}

    def kw_fb(q: Query, p: list[Any]) -> np.ndarray:
        key = (q.qid, json.dumps(p))
        if key not in fb_cache:
            fb_cache[key] = prf_uniform("chunk", 1.2, 0.75, p)(q)
        return fb_cache[key]

    record(
        "z_feedback_defaults_5_20_0.2_alpha0.5",
        {"test": round(study.ndcg(test, lambda q: study.fuse(dense(q), kw_fb(q, [5, 20, 0.2]), 0.5)), 4)},
    )
    fb_grid = [[d, t, mu, a] for d in (3, 5) for t in (10, 20) for mu in (0.1, 0.2, 0.35) for a in (0.4, 0.5, 0.6)]
    record(
        "z_feedback_tuned",
        grid_best(study, tune, test, fb_grid, lambda p: lambda q: study.fuse(dense(q), kw_fb(q, p[:3]), p[3])),
    )
    record("dense_top2", grid_best(study, tune, test, [0.0, 0.1, 0.2, 0.3, 0.5], lambda g: lambda q: dense(q, g)))
    if args.quick:
        print(json.dumps(report, indent=2))
        return
    alphas = [round(a, 2) for a in np.arange(0.3, 0.75, 0.05)]
    record(
        "z_chunkbm25_fts5",
        grid_best(study, tune, test, alphas, lambda a: lambda q: study.fuse(dense(q), kw(q, "chunk", 1.2, 0.75), a)),
    )
    joint = [[k1, b, a] for k1 in (0.9, 1.2, 1.5) for b in (0.4, 0.55, 0.75) for a in (0.4, 0.5, 0.6)]
    for unit in ("chunk", "doc"):
        record(
            f"z_{unit}bm25_joint",
            grid_best(
                study, tune, test, joint, lambda p, u=unit: lambda q: study.fuse(dense(q), kw(q, u, p[0], p[1]), p[2])
            ),
        )
    best_unit = max(("chunk", "doc"), key=lambda u: res[f"z_{u}bm25_joint"]["tune"])
    k1, b, alpha = res[f"z_{best_unit}bm25_joint"]["best"]
    record("best_unit", {"unit": best_unit})
    record(
        "minmax",
        grid_best(
            study, tune, test, alphas, lambda a: lambda q: study.fuse(dense(q), kw(q, best_unit, k1, b), a, "minmax")
        ),
    )
    record(
        "rrf",
        grid_best(
            study,
            tune,
            test,
            [10, 20, 40, 60],
            lambda kk: lambda q: study.fuse(dense(q), kw(q, best_unit, k1, b), kk, "rrf"),
        ),
    )
    record(
        "z_top2",
        grid_best(
            study,
            tune,
            test,
            [[g, a] for g in (0.1, 0.2, 0.3) for a in (alpha - 0.05, alpha, alpha + 0.05)],
            lambda p: lambda q: study.fuse(dense(q, p[0]), kw(q, best_unit, k1, b), p[1]),
        ),
    )
    record(
        "z_candidates",
        grid_best(
            study,
            tune,
            test,
            [50, 100, 300, 1000],
            lambda c: (
                lambda q: (setattr(study, "candidates", c), study.fuse(dense(q), kw(q, best_unit, k1, b), alpha))[1]
            ),
        ),
    )
    study.candidates = args.candidates

    def prf_hybrid(p: list[Any]) -> Callable[[Query], np.ndarray]:
        fb_docs, fb_terms, lam = p

        def rank(q: Query) -> np.ndarray:
            first = study.fuse(dense(q), kw(q, best_unit, k1, b), alpha)
            index = study.docs if best_unit == "doc" else study.chunks
            if best_unit == "doc":
                expanded = index.rm3(first, q.terms, fb_docs, fb_terms, lam)
                k2 = study.docs.scores(expanded, k1, b, 1.0)
            else:
                unit_first = first[study.chunk_doc]
                expanded = index.rm3(unit_first, q.terms, fb_docs, fb_terms, lam)
                k2 = np.maximum(
                    doc_max(study.chunks.scores(expanded, k1, b, 1.0), study.chunk_doc, len(study.doc_ids)), 0
                )
            return study.fuse(dense(q), k2, alpha)

        return rank

    record(
        "z_rm3_from_hybrid",
        grid_best(study, tune, test, [[3, 10, 0.3], [5, 20, 0.3], [5, 20, 0.5], [10, 30, 0.3]], prf_hybrid),
    )
    record(
        "z_rocchio_dense",
        grid_best(
            study,
            tune,
            test,
            [[3, 0.25], [3, 0.5], [5, 0.5]],
            lambda p: lambda q: study.fuse(study.dense(q, 0.0, tuple(p)), kw(q, best_unit, k1, b), alpha),
        ),
    )

    # Learned fusion: logistic regression over a few features of each candidate document, trained on tune.
    def features(q: Query) -> tuple[np.ndarray, np.ndarray]:
        d, k = dense(q), kw(q, best_unit, k1, b)
        zd, zk = zscores(d, study.candidates), zscores(k, study.candidates)
        rd, rk = ranks(d), ranks(k)
        k_doc = kw(q, "doc" if best_unit == "chunk" else "chunk", k1, b)
        x = np.stack(
            [zd, zk, 1 / (10 + rd), 1 / (10 + rk), zscores(k_doc, study.candidates), zd * zk, np.ones_like(zd)], axis=1
        )
        cand = np.union1d(np.argsort(-d)[: study.candidates], np.argsort(-k)[: study.candidates])
        return x, cand

    xs, ys = [], []
    for q in tune:
        x, cand = features(q)
        y = np.array([1.0 if q.rel.get(study.doc_ids[i], 0) > 0 else 0.0 for i in cand])
        xs.append(x[cand])
        ys.append(y)
    xm, ym = np.concatenate(xs), np.concatenate(ys)
    w = np.zeros(xm.shape[1])
    for _ in range(2000):
        p = 1 / (1 + np.exp(-(xm @ w)))
        w -= 0.5 * (xm.T @ (p - ym) / len(ym) + 1e-4 * w)

    def learned(q: Query) -> np.ndarray:
        x, cand = features(q)
        out = np.full(len(study.doc_ids), -1e9)
        out[cand] = x[cand] @ w
        return out

    record(
        "learned_logreg",
        {
            "weights": [round(float(v), 3) for v in w],
            "tune": round(study.ndcg(tune, learned), 4),
            "test": round(study.ndcg(test, learned), 4),
        },
    )

    # Per-query cost of the halves here (numpy, exhaustive): an estimate of the extra work, not service latency.
    start = time.perf_counter()
    for q in test[:100]:
        study.chunks.scores(q.terms, k1, b, 1.0)
    record("cost_ms_bm25_chunk_numpy", {"ms": round((time.perf_counter() - start) * 10, 2)})
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
