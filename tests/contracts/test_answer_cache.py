"""Contract tests of ``AnswerCache`` and ``Invalidation``: the in-process implementations and the Redis ones
(a real Redis on :6379, each test under its own key prefix)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import redis

from ragserve.cache.answers import answer_key, decode_answer, encode_answer
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


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    client = connect(REDIS_URL)
    keys = list(client.scan_iter(match="{" + name + "}*"))
    if keys:
        client.delete(*keys)
    client.close()


def _memory(ttl: float, prefix: str) -> AnswerCache:
    return MemoryAnswerCache(ttl, max_entries=100)


def _redis(ttl: float, prefix: str) -> AnswerCache:
    return RedisAnswerCache(connect(REDIS_URL), prefix, ttl)


CACHES: dict[str, Callable[[float, str], AnswerCache]] = {"memory": _memory, "redis": _redis}


@pytest.fixture(params=sorted(CACHES))
def make_cache(request: pytest.FixtureRequest, prefix: str) -> Callable[[float], AnswerCache]:
    return lambda ttl: CACHES[request.param](ttl, prefix)


def test_put_get_and_invalidate_by_document(make_cache: Callable[[float], AnswerCache]) -> None:
    cache = make_cache(60)
    assert cache.get("k1") is None
    assert cache.put("k1", ANSWER, ["doc-a", "doc-b"], cache.generations(["doc-a", "doc-b"]))
    assert cache.put("k2", ANSWER, ["doc-b"], cache.generations(["doc-b"]))
    assert cache.put("k3", ANSWER, ["doc-c"], cache.generations(["doc-c"]))
    assert cache.get("k1") == ANSWER
    assert cache.invalidate_documents(["doc-b"]) == 2
    assert (cache.get("k1"), cache.get("k2"), cache.get("k3")) == (None, None, ANSWER)
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


def test_answers_expire(make_cache: Callable[[float], AnswerCache]) -> None:
    cache = make_cache(1)
    cache.put("k", ANSWER, ["doc-a"], cache.generations(["doc-a"]))
    assert cache.get("k") == ANSWER
    time.sleep(1.2)
    assert cache.get("k") is None


def _route(active: int, canary: int | None = None, share: float = 0.0) -> IndexRoute:
    def version(n: int) -> IndexVersion:
        return IndexVersion(f"id{n}", "c", n, IndexConfig(200, 40, "m"), IndexState.READY, 0, 0, None, NOW)

    return IndexRoute(version(active), None if canary is None else version(canary), share)


def test_answer_keys_normalise_the_question_and_separate_everything_else() -> None:
    base = answer_key("How many days?", "hr", 6, SearchFilters(), _route(1), "gen")
    assert answer_key("  how   MANY days?\n", "hr", 6, SearchFilters(), _route(1), "gen") == base
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
    assert len({base, *variants}) == len(variants) + 1


def test_answers_round_trip_through_their_encoding() -> None:
    assert decode_answer(encode_answer(ANSWER)) == ANSWER


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


def test_redis_embedding_cache_round_trip(prefix: str) -> None:
    from ragserve.cache.redis import RedisEmbeddingCache

    cache = RedisEmbeddingCache(connect(REDIS_URL), prefix, ttl_seconds=60)
    cache.put_vectors([("m:a", b"\x00" * 8), ("m:b", b"\x01" * 8)])
    assert cache.get_vectors(["m:a", "m:b", "m:c"]) == {"m:a": b"\x00" * 8, "m:b": b"\x01" * 8}
    assert cache.get_vectors([]) == {}
