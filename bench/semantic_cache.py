"""The semantic answer cache on SQuAD v1.1 dev: how often a reworded question is served from the cache, and
how often a different question about the same paragraph is served (wrongly) from it, by threshold.

Takes a seeded sample of paragraphs that have at least two questions, and from each a question A and another
question B. Ingests the paragraphs in-process (a temporary data directory, the default embedded stack and
extractive answers), then asks every A once to fill the cache. Then:

- the sweep: for every probe (a rewording A' of each A, and each B) the query vector's most similar live entry
  in the cache (``find_similar`` at threshold 0) gives, for each threshold, whether the probe would hit.
  Read-only, so each threshold sees the same cache.
- end to end at the default threshold: the first ``--end-to-end`` A', then as many B, through
  ``RagService.answer`` (the same path as ``/v1/answer``), counted by ``ragserve_answer_cache_lookups_total``,
  with the latency of hits and misses. Misses here are answered and cached, so a B may also hit an A' asked
  before it.

There is no paraphrase model offline: rewordings come from the deterministic rules of ``reword`` (question-word
reordering and polite prefixes, contractions, a small synonym table, dropped articles and fillers, casing and
punctuation). They keep most of the original's words, so real users' paraphrases will hit less often.

    python bench/semantic_cache.py ../shared/datasets/squad-v1.1-dev --sample 300 --end-to-end 100

Prints one JSON object; ``--out`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import string
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from ragserve.domain import ANONYMOUS, DocumentInput, JobStatus
from ragserve.evaluation import percentile
from ragserve.service import RagService
from ragserve.settings import Settings

COLLECTION = "squad"
Match = tuple[str, float, str | None]  # how a probe is served (exact, semantic, none), similarity, answer text
THRESHOLDS = (0.85, 0.90, 0.93, 0.95, 0.97)

_COPULA = re.compile(r"^(what|who|where|which|how many|how much|how long|how old) (is|are|was|were) (.+?)\s*\?*$", re.I)
_PREFIXES = ("Could you tell me ", "Do you know ", "I'd like to know ", "Please tell me ")
_CONTRACTIONS = {
    "what is": "what's",
    "who is": "who's",
    "where is": "where's",
    "how is": "how's",
    "it is": "it's",
    "that is": "that's",
    "did not": "didn't",
    "does not": "doesn't",
    "do not": "don't",
    "is not": "isn't",
    "was not": "wasn't",
    "were not": "weren't",
}
_SYNONYMS = {
    "largest": "biggest",
    "large": "big",
    "begin": "start",
    "began": "started",
    "called": "named",
    "film": "movie",
    "films": "movies",
    "purchase": "buy",
    "purchased": "bought",
    "located": "situated",
    "received": "got",
    "famous": "well-known",
    "type": "kind",
    "types": "kinds",
    "happened": "occurred",
    "happen": "occur",
    "used": "utilized",
    "main": "primary",
    "important": "significant",
    "approximately": "about",
    "nearly": "almost",
    "created": "made",
    "built": "constructed",
    "died": "passed away",
    "allowed": "permitted",
    "area": "region",
    "country": "nation",
    "company": "firm",
    "total": "overall",
    "first": "earliest",
}
_FILLERS = re.compile(r"\b(the|a|an|exactly|actually|also)\b\s*", re.I)


def _replace_words(text: str, table: dict[str, str]) -> tuple[str, bool]:
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(table, key=len, reverse=True)) + r")\b", re.I)
    changed = pattern.sub(lambda m: table[m.group(0).lower()], text)
    return changed, changed != text


def _normalised(text: str) -> str:
    return " ".join(text.strip().casefold().split())


def reword(question: str, rng: random.Random) -> tuple[str, list[str]]:
    """A deterministic rewording of ``question`` and the names of the rules applied. Always differs from the
    question after the exact key's normalisation (case and whitespace), so it can only hit semantically."""
    rules: list[str] = []
    text = question.strip()
    copula = _COPULA.match(text)
    if copula and rng.random() < 0.6:
        wh, verb, rest = copula.groups()
        text, rules = f"Tell me {wh.lower()} {rest} {verb}.", ["reorder"]
    elif rng.random() < 0.4:
        text, rules = rng.choice(_PREFIXES) + text[0].lower() + text[1:], ["prefix"]
    text, changed = _replace_words(text, _CONTRACTIONS)
    rules += ["contraction"] if changed else []
    text, changed = _replace_words(text, _SYNONYMS)
    rules += ["synonym"] if changed else []
    if rng.random() < 0.3:
        dropped = _FILLERS.sub("", text)
        if dropped != text and len(dropped.split()) >= 3:
            text, rules = dropped, [*rules, "drop_fillers"]
    style = rng.choice(("lower", "no_mark", "lower_no_mark", "keep"))
    if "lower" in style:
        text = text.lower()
    if "no_mark" in style or _normalised(text) == _normalised(question):
        text = text.rstrip(" ?.") if text.rstrip(" ?.") != text else text + "??"
        rules.append("punctuation")
    return text, rules


def _squad_normalise(text: str) -> str:
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def sample(dataset: Path, size: int, seed: int) -> tuple[dict[str, dict[str, str]], list[dict[str, Any]]]:
    """``size`` paragraphs with two or more questions, and per paragraph two different questions A and B (and
    all the questions other than A, to find the one nearest to A)."""
    paragraphs = {p["_id"]: p for p in map(json.loads, (dataset / "corpus.jsonl").open())}
    by_paragraph: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for qa in map(json.loads, (dataset / "qa.jsonl").open()):
        by_paragraph[qa["context_id"]].append(qa)
    rng = random.Random(seed)
    eligible = sorted(p for p, qs in by_paragraph.items() if len({_normalised(q["question"]) for q in qs}) >= 2)
    cases: list[dict[str, Any]] = []
    for paragraph in rng.sample(eligible, size):
        a, b = rng.sample(by_paragraph[paragraph], 2)
        while _normalised(a["question"]) == _normalised(b["question"]):
            a, b = rng.sample(by_paragraph[paragraph], 2)
        reworded, rules = reword(a["question"], rng)
        others = {_normalised(q["question"]): q for q in by_paragraph[paragraph]}
        others.pop(_normalised(a["question"]))
        case = {"paragraph": paragraph, "a": a, "b": b, "reworded": reworded, "rules": rules}
        cases.append(case | {"others": list(others.values())})
    return {c["paragraph"]: paragraphs[c["paragraph"]] for c in cases}, cases


def _lookups() -> dict[str, float]:
    counts = {}
    for result, match in (("hit", "exact"), ("hit", "semantic"), ("miss", "none")):
        labels = {"result": result, "match": match}
        counts[f"{result}_{match}"] = REGISTRY.get_sample_value("ragserve_answer_cache_lookups_total", labels) or 0
    return counts


async def _ingest(service: RagService, paragraphs: dict[str, dict[str, str]]) -> float:
    start = time.perf_counter()
    inputs = [DocumentInput(COLLECTION, p["_id"], p["title"], p["text"]) for p in paragraphs.values()]
    jobs = [await service.submit(inputs[i : i + 100]) for i in range(0, len(inputs), 100)]
    for job in jobs:
        for _ in range(3000):  # at most 10 minutes
            if (await service.get_job(job.id)).status not in (JobStatus.QUEUED, JobStatus.RUNNING):
                break
            await asyncio.sleep(0.2)
    return time.perf_counter() - start


async def _best_matches(service: RagService, questions: list[str]) -> list[Match]:
    """Per question: how it would be served at threshold 0 (``exact``, ``semantic`` or ``none``), the
    similarity of the best live entry, and that entry's answer text."""
    assert service.caches.answers is not None
    found: list[Match] = []
    for question in questions:
        key = await service.answer_cache.key(question, None, COLLECTION, None, ANONYMOUS)
        assert key is not None
        exact = service.caches.answers.get(key.exact)
        if exact is not None:
            found.append(("exact", 1.0, exact.answer.text))
            continue
        vector = service.embedder.embed([key.question], "query")[0]
        similar = service.caches.answers.find_similar(key.scope, vector, 0.0)
        if similar is None:
            found.append(("none", 0.0, None))
        else:
            found.append(("semantic", float(similar.similarity or 0.0), similar.answer.text))
    return found


def _nearest_others(service: RagService, cases: list[dict[str, Any]]) -> None:
    """Per case, ``nearest``: the question about the same paragraph, other than A, most similar to A."""
    for case in cases:
        texts = [case["a"]["question"], *(q["question"] for q in case["others"])]
        vectors = service.embedder.embed(texts, "query")
        case["nearest"] = case["others"][int((vectors[1:] @ vectors[0]).argmax())]


def _served(matches: list[Match], threshold: float) -> list[bool]:
    return [how != "none" and similarity >= threshold for how, similarity, _ in matches]


def _same_answer(case: dict[str, Any], asked: dict[str, Any]) -> bool:
    """Whether a question asked about A's paragraph shares a gold answer with A: a duplicate of A in effect."""
    return bool({_squad_normalise(g) for g in case["a"]["answers"]} & {_squad_normalise(g) for g in asked["answers"]})


def _wrong_hits(
    cases: list[dict[str, Any]], a_answers: list[str], kind: str, matches: list[Match], threshold: float
) -> list[dict[str, Any]]:
    """The hits on a different question, each with the question it was served for (A when the served answer
    is A's) and whether the two questions share a gold answer."""
    wrong = []
    for case, a_answer, served, (_, similarity, text) in zip(
        cases, a_answers, _served(matches, threshold), matches, strict=True
    ):
        if served:
            asked = case["b" if kind == "different" else "nearest"]
            from_a = text == a_answer
            wrong.append(
                {
                    "asked": asked["question"],
                    "served_for": case["a"]["question"] if from_a else "another cached question",
                    "similarity": round(similarity, 4),
                    "same_gold_answer": from_a and _same_answer(case, asked),
                }
            )
    return wrong


def _sweep(cases: list[dict[str, Any]], a_answers: list[str], probes: dict[str, list[Match]]) -> dict[str, Any]:
    """Per threshold: the reworded A' served (and with A's own answer); a different question B, and the
    different question nearest to A, served (and of those, how many share a gold answer with A)."""
    rows = {}
    for threshold in THRESHOLDS:
        reworded = _served(probes["reworded"], threshold)
        right = [hit and m[2] == a for hit, m, a in zip(reworded, probes["reworded"], a_answers, strict=True)]
        row: dict[str, Any] = {"reworded_hit_rate": round(sum(reworded) / len(cases), 4)}
        row["reworded_hits_with_A_answer"] = sum(right)
        for kind in ("different", "nearest"):
            wrong = _wrong_hits(cases, a_answers, kind, probes[kind], threshold)
            row[f"{kind}_false_hit_rate"] = round(len(wrong) / len(cases), 4)
            row[f"{kind}_false_hits_sharing_A_gold_answer"] = sum(w["same_gold_answer"] for w in wrong)
        rows[f"{threshold:.2f}"] = row
    return rows


async def _ask(service: RagService, questions: list[str]) -> dict[str, Any]:
    """Each question through ``RagService.answer``: how the cache served it (the lookup counter that grew)
    and the latency of each kind."""
    latencies: dict[str, list[float]] = defaultdict(list)
    for question in questions:
        before = _lookups()
        started = time.perf_counter()
        await service.answer(question, None, COLLECTION, None)
        elapsed = (time.perf_counter() - started) * 1000
        after = _lookups()
        (kind,) = (name for name in after if after[name] > before[name])
        latencies[kind].append(elapsed)
    return {
        kind: {"count": len(values), "p50_ms": round(percentile(values, 50), 1)}
        for kind, values in sorted(latencies.items())
    }


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _distribution(values: list[float]) -> dict[str, float]:
    return {f"p{p}": round(percentile(values, p), 4) for p in (10, 25, 50, 75, 90)}


async def _measure(
    service: RagService, paragraphs: dict[str, dict[str, str]], cases: list[dict[str, Any]], asked: int
) -> dict[str, Any]:
    ingest_s = await _ingest(service, paragraphs)
    _progress(f"ingested {len(paragraphs)} paragraphs in {ingest_s:.0f} s; filling the cache")
    start = time.perf_counter()
    a_answers = [(await service.answer(c["a"]["question"], None, COLLECTION, None)).text for c in cases]
    fill_s = time.perf_counter() - start
    _progress(f"{len(cases)} answers cached in {fill_s:.0f} s; sweeping thresholds")
    _nearest_others(service, cases)
    probes = {
        "reworded": await _best_matches(service, [c["reworded"] for c in cases]),
        "different": await _best_matches(service, [c["b"]["question"] for c in cases]),
        "nearest": await _best_matches(service, [c["nearest"]["question"] for c in cases]),
    }
    _progress("asking end to end")
    end_to_end = {
        "questions": len(cases[:asked]),
        "reworded": await _ask(service, [c["reworded"] for c in cases[:asked]]),
        "different": await _ask(service, [c["b"]["question"] for c in cases[:asked]]),
    }
    times = {"ingest_s": round(ingest_s, 1), "fill_answers_s": round(fill_s, 1)}
    return {"a_answers": a_answers, "probes": probes, "end_to_end_at_default": end_to_end, "times": times}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    paragraphs, cases = sample(args.dataset, args.sample, args.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "data",
            embedding={"cache_dir": args.model_cache},  # type: ignore[arg-type]
            cache={"semantic_threshold": args.threshold},  # type: ignore[arg-type]
        )
        service = RagService.open(settings)
        await service.start()
        try:
            measured = await _measure(service, paragraphs, cases, args.end_to_end)
        finally:
            await service.close()
    probes = measured["probes"]
    rule_counts = Counter(r for c in cases for r in c["rules"])
    served = _served(probes["reworded"], args.threshold)
    rule_hits = Counter(r for c, hit in zip(cases, served, strict=True) if hit for r in c["rules"])
    examples = [
        {"a": c["a"]["question"], "reworded": c["reworded"]} | {k: c[k]["question"] for k in ("b", "nearest")}
        for c in cases[:8]
    ]
    return {
        "dataset": str(args.dataset),
        "sample": {"paragraphs": len(paragraphs), "seed": args.seed},
        "threshold_default": args.threshold,
        "rewording": "deterministic rules (no paraphrase model offline): " + ", ".join(sorted(rule_counts)),
        "examples": examples,
        "by_threshold": _sweep(cases, measured["a_answers"], probes),
        "false_hits_at_default": {
            kind: _wrong_hits(cases, measured["a_answers"], kind, probes[kind], args.threshold)
            for kind in ("different", "nearest")
        },
        "similarity_of_best_entry": {kind: _distribution([m[1] for m in found]) for kind, found in probes.items()},
        "reworded_hit_rate_by_rule_at_default": {
            r: {"questions": n, "hit_rate": round(rule_hits[r] / n, 4)} for r, n in sorted(rule_counts.items())
        },
        "end_to_end_at_default": measured["end_to_end_at_default"],
        **measured["times"],
        "total_s": round(time.perf_counter() - started, 1),
        "load_average_1m_at_end": round(os.getloadavg()[0], 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--end-to-end", type=int, default=100, help="probes of each kind asked through the service")
    parser.add_argument("--threshold", type=float, default=Settings().cache.semantic_threshold)
    parser.add_argument("--model-cache", type=Path, default=Path(tempfile.gettempdir()) / "ragserve-bench-models")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
