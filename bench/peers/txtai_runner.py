"""txtai's side of ``bench/peers.py``: a hybrid ``Embeddings`` index (dense vectors + BM25 scoring, txtai's
default score fusion), run with txtai's own virtualenv.

- ``load_model``: ``Embeddings(path=MODEL, method="sentence-transformers", hybrid=True, content=True)`` and one
  warm-up encode (txtai loads the model lazily; ragserve's ``load_model`` loads it eagerly).
- ``build``: ``embeddings.index`` over ``(id, title + newline + abstract, None)`` rows, then ``save`` to the data
  directory (ragserve's index is on disk once ingestion ends). ``content=True`` keeps the text, as ragserve does.
- ``queries``: ``embeddings.search(query, 100)``, query encoding included.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import torch
from harness import RANKING_DEPTH, Report, arguments, read_corpus, read_test_queries
from txtai import Embeddings


def main() -> None:
    args = arguments(__doc__ or "")
    torch.set_num_threads(args.threads)
    report = Report(
        "txtai",
        {p: version(p) for p in ("txtai", "torch", "sentence-transformers", "transformers", "faiss-cpu")},
        {"index": "Embeddings(hybrid=True, content=True), default backend and weights", "torch_threads": args.threads},
    )
    docs = read_corpus(args.dataset)

    def load() -> Embeddings:
        embeddings = Embeddings(path=str(args.model), method="sentence-transformers", hybrid=True, content=True)
        embeddings.transform("warm up")
        return embeddings

    embeddings = report.phase("load_model", load)

    def build() -> None:
        embeddings.index((d.id, d.content, None) for d in docs)
        embeddings.save(str(args.data_dir / "index"))

    report.phase("build", build)

    def ranked_ids(results: list[dict[str, Any]]) -> list[str]:
        return [str(r["id"]) for r in results]

    queries = read_test_queries(args.dataset, args.split)
    report.queries(queries, lambda text: embeddings.search(text, RANKING_DEPTH), ranked_ids)
    report.data["settings"]["resolved_config"] = {k: str(v) for k, v in embeddings.config.items()}
    report.write(args.out, len(docs))


if __name__ == "__main__":
    main()
