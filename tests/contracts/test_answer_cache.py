"""Contract tests of ``AnswerCache`` (exact and semantic matches) and ``Invalidation``: the in-process
implementations and the Redis ones (a real Redis on :6379, each test under its own key prefix)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime

import numpy as np
import pytest
import redis

from ragserve.cache.answers import CachedAnswer, answer_key, decode_entry, encode_entry
from ragserve.cache.memory import LocalInvalidation, MemoryAnswerCache
from ragserve.cache.protocol import AnswerCache, Invalidation
from ragserve.cache.redis import RedisAnswerCache, RedisInvalidation, connect
from ragserve.domain import (
    Answer,
    Citation,
    IndexConfig,
    IndexRoute,
    IndexState,
    IndexVersion,
    SearchFilters,
)

REDIS_URL = "redis://127.0.0.1:6379/0"
NOW = datetime.now(UTC)
ANSWER = Answer(
    text="Cats sleep a lot [1].",
    abstained=False,
    citations=(Citation(1, 7, "doc-a", "a", "a.txt", "Cats", "Cats sleep for most of the day."),),
    generator="extractive",
)
OTHER = Answer(text="Dogs bark [1].", abstained=False, citations=(), generator="llm-a")
DIMENSION = 8


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    client = connect(REDIS_URL)
    keys = list(client.scan_iter(match="{" + name + "}*"))
    if keys:
        client.delete(*keys)
    client.close()


def _memory(ttl: float, prefix: str, per_scope: int) -> AnswerCache:
    return MemoryAnswerCache(ttl, max_entries=100, semantic_max_entries_per_scope=per_scope)


def _redis(ttl: float, prefix: str, per_scope: int) -> AnswerCache:
    return RedisAnswerCache(connect(REDIS_URL), prefix, ttl, semantic_max_entries_per_scope=per_scope)


CACHES: dict[str, Callable[[float, str, int], AnswerCache]] = {"memory": _memory, "redis": _redis}


@pytest.fixture(params=sorted(CACHES))
def make_cache(request: pytest.FixtureRequest, prefix: str) -> Callable[..., AnswerCache]:
    return lambda ttl, per_scope=256: CACHES[request.param](ttl, prefix, per_scope)


def vector(similarity: float, axis: int = 1) -> np.ndarray:
    """A unit vector whose cosine similarity with ``vector(1.0)`` (the first axis) is ``similarity``."""
    v = np.zeros(DIMENSION, dtype=np.float32)
    v[0], v[axis] = similarity, np.sqrt(1.0 - similarity**2)
    return v


def store(cache: AnswerCache, key: str, answer: Answer, documents: list[str], **semantic: object) -> bool:
    return cache.put(key, answer, documents, cache.generations(documents), **semantic)  # type: ignore[arg-type]


def test_put_get_and_invalidate_by_document(make_cache: Callable[[float], AnswerCache]) -> None:
    cache = make_cache(60)
    assert cache.get("k1") is None
    assert cache.put("k1", ANSWER, ["doc-a", "doc-b"], cache.generations(["doc-a", "doc-b"]))
    assert cache.put("k2", ANSWER, ["doc-b"], cache.generations(["doc-b"]))
    assert cache.put("k3", ANSWER, ["doc-c"], cache.generations(["doc-c"]))
    assert cache.get("k1") == CachedAnswer(ANSWER)
    assert cache.invalidate_documents(["doc-b"]) == 2
    assert (cache.get("k1"), cache.get("k2"), cache.get("k3")) == (None, None, CachedAnswer(ANSWER))
    assert cache.invalidate_documents(["doc-b"]) == 0


def test_an_answer_built_from_a_document_that_changed_meanwhile_is_not_stored(
    make_cache: Callable[[float], AnswerCache],
) -> None:
    cache = make_cache(60)
    read = cache.generations(["doc-a", "doc-b"])  # before generating
    cache.invalidate_documents(["doc-b"])  # the document changes while the answer is generated
    assert cache.put("k", ANSWER, ["doc-a", "doc-b"], read) is False
    assert cache.get("k") is None
    assert cache.put("k", ANSWER, ["doc-a", "doc-b"], cache.generations(["doc-a", "doc-b"])) is True


def test_answers_and_their_semantic_matches_expire(make_cache: Callable[..., AnswerCache]) -> None:
    cache = make_cache(1)
    store(cache, "k", ANSWER, ["doc-a"], scope="s", vector=vector(1.0))
    assert cache.get("k") == CachedAnswer(ANSWER)
    assert cache.find_similar("s", vector(0.99), 0.95) is not None
    time.sleep(1.2)
    assert cache.get("k") is None
    assert cache.find_similar("s", vector(0.99), 0.95) is None


def test_the_tokens_an_answer_cost_come_back_with_it(make_cache: Callable[..., AnswerCache]) -> None:
    cache = make_cache(60)
    store(cache, "k", OTHER, ["doc-a"], tokens=321, scope="s", vector=vector(1.0))
    assert cache.get("k") == CachedAnswer(OTHER, tokens=321)
    found = cache.find_similar("s", vector(0.97), 0.95)
    assert found is not None
    assert (found.answer, found.tokens) == (OTHER, 321)


# --- semantic matches -----------------------------------------------------------------------------------------


def test_a_similar_question_is_served_at_or_above_the_threshold_only(
    make_cache: Callable[..., AnswerCache],
) -> None:
    cache = make_cache(60)
    store(cache, "k", ANSWER, ["doc-a"], scope="s", vector=vector(1.0))
    found = cache.find_similar("s", vector(0.96), 0.95)
    assert found is not None
    assert found.answer == ANSWER
    assert found.similarity == pytest.approx(0.96, abs=1e-5)
    assert cache.find_similar("s", vector(0.94), 0.95) is None
    assert cache.find_similar("s", vector(0.96), 0.97) is None


def test_the_most_similar_question_wins(make_cache: Callable[..., AnswerCache]) -> None:
    cache = make_cache(60)
    store(cache, "far", OTHER, ["doc-a"], scope="s", vector=vector(0.96, axis=2))
    store(cache, "near", ANSWER, ["doc-b"], scope="s", vector=vector(1.0))
    found = cache.find_similar("s", vector(0.99), 0.9)  # 0.99 with "near"; about 0.95 with "far"
    assert found is not None
    assert found.answer == ANSWER


def test_another_scope_never_matches(make_cache: Callable[..., AnswerCache]) -> None:
    cache = make_cache(60)
    store(cache, "k-a", ANSWER, ["doc-a"], scope="tenant-a", vector=vector(1.0))
    store(cache, "k-b", OTHER, ["doc-a"], scope="tenant-b", vector=vector(0.5))
    assert cache.find_similar("tenant-c", vector(1.0), 0.1) is None
    found = cache.find_similar("tenant-b", vector(1.0), 0.1)  # the identical vector is tenant-a's
    assert found is not None
    assert found.answer == OTHER


def test_an_answer_stored_without_a_vector_has_no_semantic_match(make_cache: Callable[..., AnswerCache]) -> None:
    cache = make_cache(60)
    store(cache, "k", ANSWER, ["doc-a"], scope="s")
    assert cache.get("k") == CachedAnswer(ANSWER)
    assert cache.find_similar("s", vector(1.0), 0.5) is None


def test_a_semantic_match_goes_when_a_source_document_changes(make_cache: Callable[..., AnswerCache]) -> None:
    cache = make_cache(60)
    store(cache, "k1", ANSWER, ["doc-a", "doc-b"], scope="s", vector=vector(1.0))
    store(cache, "k2", OTHER, ["doc-c"], scope="s", vector=vector(0.9))
    assert cache.invalidate_documents(["doc-b"]) == 1
    found = cache.find_similar("s", vector(1.0), 0.5)  # k1 is gone: k2, less similar, is what is left
    assert found is not None
    assert found.answer == OTHER
    assert cache.find_similar("s", vector(1.0), 0.95) is None
    # Stored again from the new version of the document, it matches again.
    assert store(cache, "k1", ANSWER, ["doc-a", "doc-b"], scope="s", vector=vector(1.0))
    assert cache.find_similar("s", vector(1.0), 0.95) is not None


def test_an_answer_built_from_a_changed_document_is_not_indexed_either(
    make_cache: Callable[..., AnswerCache],
) -> None:
    cache = make_cache(60)
    read = cache.generations(["doc-a"])
    cache.invalidate_documents(["doc-a"])
    assert cache.put("k", ANSWER, ["doc-a"], read, scope="s", vector=vector(1.0)) is False
    assert cache.find_similar("s", vector(1.0), 0.5) is None


def test_a_scope_indexes_its_most_recently_used_answers(make_cache: Callable[..., AnswerCache]) -> None:
    cache = make_cache(60, per_scope=2)
    store(cache, "k1", ANSWER, ["doc-a"], scope="s", vector=vector(1.0, axis=1))
    store(cache, "k2", OTHER, ["doc-b"], scope="s", vector=vector(0.0, axis=1))  # orthogonal to k1
    assert cache.find_similar("s", vector(1.0), 0.99) is not None  # k1 is now the most recently used
    third = np.zeros(DIMENSION, dtype=np.float32)
    third[3] = 1.0
    store(cache, "k3", OTHER, ["doc-c"], scope="s", vector=third)  # the scope is full: k2 loses its vector
    assert cache.find_similar("s", vector(0.0, axis=1), 0.99) is None
    assert cache.get("k2") == CachedAnswer(OTHER)  # its exact entry stays
    assert cache.find_similar("s", vector(1.0), 0.99) is not None
    assert cache.find_similar("s", third, 0.99) is not None


def test_question_vectors_of_another_dimension_are_ignored(make_cache: Callable[..., AnswerCache]) -> None:
    cache = make_cache(60)
    store(cache, "k", ANSWER, ["doc-a"], scope="s", vector=vector(1.0))
    assert cache.find_similar("s", np.ones(DIMENSION * 2, dtype=np.float32), 0.1) is None


def _route(active: int, canary: int | None = None, share: float = 0.0) -> IndexRoute:
    def version(n: int) -> IndexVersion:
        return IndexVersion(f"id{n}", "c", n, IndexConfig(200, 40, "m"), IndexState.READY, 0, 0, None, NOW)

    return IndexRoute(version(active), None if canary is None else version(canary), share)


def test_answer_keys_normalise_the_question_and_separate_everything_else() -> None:
    base = answer_key("How many days?", "hr", 6, SearchFilters(), _route(1), "gen")
    same = answer_key("  how   MANY days?\n", "hr", 6, SearchFilters(), _route(1), "gen")
    assert (same.exact, same.scope, same.question) == (base.exact, base.scope, "how   MANY days?")
    variants = [
        answer_key("How many weeks?", "hr", 6, SearchFilters(), _route(1), "gen"),
        answer_key("How many days?", "it", 6, SearchFilters(), _route(1), "gen"),
        answer_key("How many days?", "hr", 5, SearchFilters(), _route(1), "gen"),
        answer_key("How many days?", "hr", 6, SearchFilters.from_mapping({"team": "a"}), _route(1), "gen"),
        answer_key("How many days?", "hr", 6, SearchFilters(), _route(2), "gen"),
        answer_key("How many days?", "hr", 6, SearchFilters(), _route(1, 2, 0.5), "gen"),
        answer_key("How many days?", "hr", 6, SearchFilters(), _route(1), "gen-2"),
        answer_key("How many days?", "hr", 6, SearchFilters(), _route(1), "gen", scope="tenant-b"),
    ]
    assert len({base.exact, *(v.exact for v in variants)}) == len(variants) + 1
    # The scope is everything but the question: only another question shares it.
    assert variants[0].scope == base.scope
    assert len({base.scope, *(v.scope for v in variants[1:])}) == len(variants)


def test_answers_round_trip_through_their_encoding() -> None:
    assert decode_entry(encode_entry(ANSWER, 42)) == CachedAnswer(ANSWER, 42)
    assert decode_entry(json.dumps(asdict(ANSWER))) == CachedAnswer(ANSWER, 0)  # written before token counts


def test_local_invalidation_calls_back_at_once() -> None:
    invalidation: Invalidation = LocalInvalidation()
    seen: list[str] = []
    invalidation.subscribe("collection", seen.append)
    invalidation.publish("collection", "c1")
    invalidation.publish("other", "x")
    assert seen == ["c1"]


def test_redis_invalidation_reaches_every_replica(prefix: str) -> None:
    replicas = [RedisInvalidation(connect(REDIS_URL), prefix) for _ in range(2)]
    seen: list[list[str]] = [[], []]
    arrived = threading.Event()
    for i, replica in enumerate(replicas):
        replica.subscribe("collection", lambda key, i=i: (seen[i].append(key), arrived.set()))
    time.sleep(0.3)  # the listeners subscribe
    replicas[0].publish("collection", "c1")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "c1" not in seen[1]:
        time.sleep(0.05)
    assert "c1" in seen[1]  # the other replica
    assert "c1" in seen[0]  # and the publisher itself
    for replica in replicas:
        replica.close()


def test_redis_answer_cache_outage_raises_a_redis_error() -> None:
    cache = RedisAnswerCache(connect("redis://127.0.0.1:1/0"), "x", 60)
    with pytest.raises(redis.RedisError):
        cache.get("k")


def test_redis_drops_the_question_vectors_of_expired_answers(prefix: str) -> None:
    client = connect(REDIS_URL)
    cache = RedisAnswerCache(client, prefix, 1)
    store(cache, "old", ANSWER, ["doc-a"], scope="s", vector=vector(1.0))
    time.sleep(1.2)
    store(cache, "new", OTHER, ["doc-b"], scope="s", vector=vector(0.0))
    assert client.hkeys("{" + prefix + "}:answer-vec:s") == [b"new"]
    assert client.zrange("{" + prefix + "}:answer-used:s", 0, -1) == [b"new"]


def test_redis_embedding_cache_round_trip(prefix: str) -> None:
    from ragserve.cache.redis import RedisEmbeddingCache

    cache = RedisEmbeddingCache(connect(REDIS_URL), prefix, ttl_seconds=60)
    cache.put_vectors([("m:a", b"\x00" * 8), ("m:b", b"\x01" * 8)])
    assert cache.get_vectors(["m:a", "m:b", "m:c"]) == {"m:a": b"\x00" * 8, "m:b": b"\x01" * 8}
    assert cache.get_vectors([]) == {}
