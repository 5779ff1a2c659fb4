"""Redis-backed caches shared by every replica.

Answers: ``{p}:answer:<key>`` holds an answer; ``{p}:answer-doc:<document id>`` the keys of answers built from
that document; ``{p}:doc-gen:<document id>`` a counter bumped on every change to the document. An answer is
stored only if the generations of its documents are those read before it was generated (a Lua script checks
and writes atomically), so an answer built from a document that changed meanwhile is never cached.

Semantic matches: ``{p}:answer-vec:<scope>`` maps the keys of a scope's answers to their questions' vectors
(float32 bytes), ``{p}:answer-used:<scope>`` orders them by last use; the same script stores them with the
answer and drops the least recently used beyond the scope's limit, and those unused for a TTL. A lookup
reads the scope's vectors, ranks them here and reads the best answers still there; a vector whose answer was
dropped is deleted then.

Invalidation: a pub/sub channel per topic; every replica's listener thread calls its local callbacks.
All keys share one hash tag, so the scripts also work on a Redis Cluster.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import redis

from ragserve.cache.answers import CachedAnswer, decode_entry, encode_entry
from ragserve.cache.semantic import Vector, ranked_matches, unit
from ragserve.domain import Answer

logger = logging.getLogger(__name__)

# Answers read per semantic lookup: the most similar live one wins, dead ones met on the way are dropped.
_MAX_CANDIDATES = 8

_PUT = """
local n = tonumber(ARGV[3])
for i = 1, n do
  local generation = redis.call('GET', KEYS[1 + i]) or '0'
  if generation ~= ARGV[3 + i] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
for i = 1, n do
  redis.call('SADD', KEYS[1 + n + i], KEYS[1])
  redis.call('EXPIRE', KEYS[1 + n + i], ARGV[2])
end
if #KEYS > 1 + 2 * n then
  local vectors, used, member, now = KEYS[2 + 2 * n], KEYS[3 + 2 * n], ARGV[4 + n], tonumber(ARGV[6 + n])
  local function drop(members)
    for i = 1, #members, 1000 do
      local part = {unpack(members, i, math.min(i + 999, #members))}
      redis.call('ZREM', used, unpack(part))
      redis.call('HDEL', vectors, unpack(part))
    end
  end
  redis.call('HSET', vectors, member, ARGV[5 + n])
  redis.call('ZADD', used, now, member)
  -- unused for a TTL: their answers have expired
  drop(redis.call('ZRANGEBYSCORE', used, '-inf', now - tonumber(ARGV[2]) * 1000000))
  local over = redis.call('ZCARD', used) - tonumber(ARGV[7 + n])
  if over > 0 then drop(redis.call('ZRANGE', used, 0, over - 1)) end
  redis.call('EXPIRE', vectors, ARGV[2])
  redis.call('EXPIRE', used, ARGV[2])
end
return 1
"""

_INVALIDATE = """
local n = #KEYS / 2
local dropped = 0
for i = 1, n do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[1])
  local answers = redis.call('SMEMBERS', KEYS[n + i])
  for _, key in ipairs(answers) do dropped = dropped + redis.call('DEL', key) end
  redis.call('DEL', KEYS[n + i])
end
return dropped
"""


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=30)


class RedisAnswerCache:
    """Implements ``AnswerCache``. Semantic matches: each scope's question vectors are read whole and compared
    here (numpy), so a scope holds at most ``semantic_max_entries_per_scope`` of them."""

    def __init__(
        self, client: redis.Redis, prefix: str, ttl_seconds: float, semantic_max_entries_per_scope: int = 1000
    ) -> None:
        self._client = client
        self._p = "{" + prefix + "}"
        self._ttl = max(1, int(ttl_seconds))
        self._max_per_scope = semantic_max_entries_per_scope
        self._put = client.register_script(_PUT)
        self._invalidate = client.register_script(_INVALIDATE)

    def _gen_keys(self, document_ids: Sequence[str]) -> list[str]:
        return [f"{self._p}:doc-gen:{d}" for d in document_ids]

    def _scope_keys(self, scope: str) -> tuple[str, str]:
        """The scope's question vectors by answer key (a hash), and the answer keys by last use in microseconds
        since the epoch (a sorted set)."""
        return f"{self._p}:answer-vec:{scope}", f"{self._p}:answer-used:{scope}"

    def generations(self, document_ids: Sequence[str]) -> list[int]:
        if not document_ids:
            return []
        values = cast(list[bytes | None], self._client.mget(self._gen_keys(document_ids)))
        return [int(v) if v is not None else 0 for v in values]

    def get(self, key: str) -> CachedAnswer | None:
        value = cast(bytes | None, self._client.get(f"{self._p}:answer:{key}"))
        return None if value is None else decode_entry(value)

    def put(
        self,
        key: str,
        answer: Answer,
        document_ids: Sequence[str],
        generations: Sequence[int],
        *,
        tokens: int = 0,
        scope: str | None = None,
        vector: Vector | None = None,
    ) -> bool:
        documents = list(dict.fromkeys(document_ids))
        expected = dict(zip(document_ids, generations, strict=True))
        keys = [f"{self._p}:answer:{key}", *self._gen_keys(documents)]
        keys += [f"{self._p}:answer-doc:{d}" for d in documents]
        args: list[Any] = [encode_entry(answer, tokens), self._ttl, len(documents)]
        args += [str(expected[d]) for d in documents]
        if scope is not None and vector is not None:
            keys += self._scope_keys(scope)
            args += [key, unit(vector).tobytes(), time.time_ns() // 1000, self._max_per_scope]
        return bool(self._put(keys=keys, args=args))

    def find_similar(self, scope: str, vector: Vector, threshold: float) -> CachedAnswer | None:
        vectors_key, used_key = self._scope_keys(scope)
        stored = cast(dict[bytes, bytes], self._client.hgetall(vectors_key))
        size = unit(vector).nbytes
        rows = {member.decode(): raw for member, raw in stored.items() if len(raw) == size}
        if not rows:
            return None
        matrix = np.frombuffer(b"".join(rows.values()), dtype=np.float32).reshape(len(rows), -1)
        candidates = ranked_matches(list(rows), matrix, vector, threshold)[:_MAX_CANDIDATES]
        if not candidates:
            return None
        values = cast(list[bytes | None], self._client.mget([f"{self._p}:answer:{k}" for k, _ in candidates]))
        gone = []
        found: CachedAnswer | None = None
        for (key, similarity), value in zip(candidates, values, strict=True):
            if value is None:
                gone.append(key)  # its answer was dropped (a document changed) or expired: so is the match
                continue
            entry = decode_entry(value)
            found = CachedAnswer(entry.answer, entry.tokens, similarity)
            self._client.zadd(used_key, {key: time.time_ns() // 1000}, xx=True)
            break
        if gone:
            with self._client.pipeline(transaction=False) as pipe:
                pipe.hdel(vectors_key, *gone)
                pipe.zrem(used_key, *gone)
                pipe.execute()
        return found

    def invalidate_documents(self, document_ids: Sequence[str]) -> int:
        documents = list(dict.fromkeys(document_ids))
        if not documents:
            return 0
        keys = [*self._gen_keys(documents), *(f"{self._p}:answer-doc:{d}" for d in documents)]
        # Generations outlive the answers they guard.
        return int(self._invalidate(keys=keys, args=[self._ttl * 2]))


class RedisEmbeddingCache:
    """Implements ``EmbeddingCache`` in Redis: ``{p}:emb:<model>:<text hash>`` → float32 bytes, kept for
    ``ttl_seconds`` (None: until Redis evicts it under its own memory policy)."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_seconds: float | None) -> None:
        self._client = client
        self._p = "{" + prefix + "}"
        self._ttl = None if ttl_seconds is None else max(1, int(ttl_seconds))

    def get_vectors(self, keys: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for start in range(0, len(keys), 1000):
            batch = list(keys[start : start + 1000])
            values = cast(list[bytes | None], self._client.mget([f"{self._p}:emb:{k}" for k in batch]))
            found.update((k, v) for k, v in zip(batch, values, strict=True) if v is not None)
        return found

    def put_vectors(self, items: Sequence[tuple[str, bytes]]) -> None:
        with self._client.pipeline(transaction=False) as pipe:
            for key, vector in items:
                pipe.set(f"{self._p}:emb:{key}", vector, ex=self._ttl)
            pipe.execute()


class RedisInvalidation:
    """Implements ``Invalidation`` over Redis pub/sub. A lost connection is retried; what was published
    meanwhile is missed, so in-process caches also expire on their own (a short TTL bounds the staleness)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._callbacks: dict[str, list[Callable[[str], None]]] = {}
        self._lock = threading.Lock()
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call,unused-ignore]
        self._thread: Any = None

    def _channel(self, topic: str) -> str:
        return f"{self._prefix}:invalidate:{topic}"

    def publish(self, topic: str, key: str) -> None:
        self._deliver(topic, key)  # this replica at once, the others through Redis
        try:
            self._client.publish(self._channel(topic), key)
        except redis.RedisError:
            logger.warning("could not publish an invalidation of %s %s; other replicas rely on expiry", topic, key)

    def subscribe(self, topic: str, callback: Callable[[str], None]) -> None:
        with self._lock:
            first = topic not in self._callbacks
            self._callbacks.setdefault(topic, []).append(callback)
            if first:
                self._pubsub.subscribe(**{self._channel(topic): self._on_message})
            if self._thread is None:
                self._thread = self._pubsub.run_in_thread(sleep_time=1.0, daemon=True, exception_handler=self._on_error)

    def _on_message(self, message: dict[str, Any]) -> None:
        channel = message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
        topic = channel.rsplit(":", 1)[1]
        data = message["data"]
        self._deliver(topic, data.decode() if isinstance(data, bytes) else str(data))

    def _deliver(self, topic: str, key: str) -> None:
        for callback in list(self._callbacks.get(topic, ())):
            try:
                callback(key)
            except Exception:
                logger.exception("an invalidation callback failed")

    @staticmethod
    def _on_error(exc: BaseException, pubsub: Any, thread: Any) -> None:
        logger.warning("invalidation listener lost Redis (%s); reconnecting", exc)
        threading.Event().wait(1.0)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread.join(timeout=5)
        self._pubsub.close()
