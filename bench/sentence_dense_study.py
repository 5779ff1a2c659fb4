"""Does a sentence-level dense signal add to the chunk-level one? (issue 3; a negative result, kept to be re-run)

    python bench/sentence_dense_study.py ../shared/datasets/scifact

Every record is cut into the service's chunks (title in each) and into its sentences (title + sentence); both
are embedded by the packaged model and searched exactly. A document's dense score is (1 - beta) x its best
chunk's cosine + beta x its best sentence's; hybrid is alpha x its z-score + (1 - alpha) x the z-score of
document-level BM25 (FTS5's formula, best chunk), both over the top 300. nDCG@10 on train and test for every
(alpha, beta): choose on train, read test. Vectors are cached in the folder given second (default under /tmp);
prints JSON and saves it to ``results/sentence-dense-<dataset>.json``.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
from quality_study import Bm25Index, doc_max, zscores

from ragserve.domain import DocumentInput
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.evaluation import ndcg_at, read_corpus, read_queries
from ragserve.ingest.chunk_plan import embed_text
from ragserve.ingest.chunking import chunk_document
from ragserve.ingest.pipeline import parse_input
from ragserve.ingest.sentences import split_sentences
from ragserve.settings import Settings
from ragserve.stores.analyzer import analyze

ds = Path(sys.argv[1])
work = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/sentence-dense-" + ds.name)
work.mkdir(exist_ok=True)
corpus = list(read_corpus(ds))
emb = OnnxEmbedder(cache_dir=work / "models")
ch = Settings().chunking
chunks, chunk_doc, sents, sent_doc, titles, bodies = [], [], [], [], [], []
for i, d in enumerate(corpus):
    doc = DocumentInput(collection="c", external_id=d.id, title=d.title or None, text=d.text)
    for dr in chunk_document(
        parse_input(doc), emb.count_tokens, max_tokens=ch.max_tokens, overlap_tokens=ch.overlap_tokens
    ):
        chunks.append(embed_text(doc.title, None, dr.text))
        chunk_doc.append(i)
        titles.append(analyze(doc.title or ""))
        bodies.append(analyze(dr.text))
    for s in split_sentences(d.text):
        if s.strip():
            sents.append(embed_text(doc.title, None, s.strip()))
            sent_doc.append(i)
chunk_doc = np.array(chunk_doc)
sent_doc = np.array(sent_doc)
print(len(chunks), len(sents), flush=True)


def vecs(name, texts):
    p = work / f"{name}.npy"
    if p.exists():
        return np.load(p)
    t = time.time()
    v = emb.embed(texts)
    np.save(p, v)
    print(name, "embedded", time.time() - t, flush=True)
    return v


cv = vecs("chunks", chunks)
sv = vecs("sents", sents)
bm = Bm25Index(titles, bodies)
ids = [d.id for d in corpus]
n = len(ids)


def run(split):
    queries, qrels = read_queries(ds, split)
    qids = [q for q in queries if q in qrels]
    qv = emb.embed([queries[q] for q in qids], kind="query")
    rows = []
    for qi, q in enumerate(qids):
        c = doc_max(cv @ qv[qi], chunk_doc, n)
        s = doc_max(sv @ qv[qi], sent_doc, n)
        terms = {}
        for t in analyze(queries[q]):
            terms[t] = terms.get(t, 0) + 1.0
        b = np.maximum(doc_max(bm.scores(terms, 1.2, 0.75, 1.0), chunk_doc, n), 0.0)
        rows.append((q, c, s, b))
    return rows, qrels


def ndcg(rows, qrels, f):
    out = []
    for q, c, s, b in rows:
        sc = f(c, s, b)
        top = np.argsort(-sc)[:10]
        out.append(ndcg_at([ids[i] for i in top], qrels[q], 10))
    return float(np.mean(out))


variants = {}
for beta in (0.0, 0.25, 0.5, 0.75, 1.0):
    variants[f"dense chunk+{beta} sent"] = lambda c, s, b, beta=beta: (1 - beta) * c + beta * s
for beta in (0.0, 0.25, 0.5, 0.75):
    for alpha in (0.4, 0.5, 0.6):
        variants[f"hybrid a{alpha} sent{beta}"] = lambda c, s, b, beta=beta, alpha=alpha: (
            alpha * zscores((1 - beta) * c + beta * s, 300) + (1 - alpha) * zscores(b, 300)
        )
res = {}
for split in ("train", "test"):
    rows, qrels = run(split)
    for name, f in variants.items():
        res.setdefault(name, {})[split] = round(ndcg(rows, qrels, f), 4)
        print(split, name, res[name][split], flush=True)
print(json.dumps(res, indent=1))
(Path(__file__).parent / "results" / f"sentence-dense-{ds.name}.json").write_text(json.dumps(res, indent=1) + "\n")
