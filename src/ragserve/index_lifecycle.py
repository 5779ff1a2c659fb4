"""Index versions of a collection over their life: build in the background, canary, promote behind an
evaluation gate, roll back, delete.

A collection's queries go to its active version, or to a canary version for a set share of them; the route
is one row, so a promotion or rollback switches every later query at once and no query mixes versions.
Ingestion keeps every live version (building or ready) current, so a rollback is instant and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass, replace
from typing import Any

import anyio.to_thread

from ragserve.domain import (
    DEFAULT_TENANT,
    IndexConfig,
    IndexRoute,
    IndexState,
    IndexVersion,
    SearchFilters,
    VectorPrecision,
)
from ragserve.errors import ConflictError, EmbeddingModelMismatchError, InvalidRequestError, NotFoundError
from ragserve.evaluation import ndcg_at
from ragserve.ingest.reindex import IndexBuilder
from ragserve.retrieval.search import Retriever, SearchStore
from ragserve.retrieval.state import CollectionState
from ragserve.settings import IndexVersionSettings
from ragserve.stores.protocol import IndexVersionStore, RebuildSource, VectorIndex

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GoldenSet:
    """Queries and graded judgements (query id → external document id → grade) a promotion is gated on."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> GoldenSet:
        queries = {str(k): str(v) for k, v in stored["queries"].items()}
        qrels = {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in stored["qrels"].items()}
        return cls(queries, qrels)

    def __post_init__(self) -> None:
        judged = [qid for qid in self.queries if any(g > 0 for g in self.qrels.get(qid, {}).values())]
        if not judged:
            raise InvalidRequestError("the golden set has no query with a positive judgement")


@dataclass(frozen=True, slots=True)
class GateResult:
    """nDCG@10 of the active version and the candidate on the golden set (None: no golden set)."""

    active_ndcg: float | None
    candidate_ndcg: float | None
    margin: float
    queries: int
    passed: bool
    forced: bool


class IndexLifecycle:
    """Index version operations for the API and CLI. Builds run one per version in worker threads."""

    def __init__(
        self,
        store: SearchStore,
        sources: RebuildSource,
        versions: IndexVersionStore,
        index: VectorIndex,
        builder: IndexBuilder,
        retriever: Retriever,
        state: CollectionState,
        model_id: str,
        settings: IndexVersionSettings,
        precisions: tuple[VectorPrecision, ...] = ("f32",),
    ) -> None:
        self._store = store
        self._sources = sources
        self._versions = versions
        self._index = index
        self._builder = builder
        self._retriever = retriever
        self._state = state
        self._model_id = model_id
        self._settings = settings
        self._precisions = precisions
        self._builds: dict[str, tuple[asyncio.Task[None], threading.Event]] = {}

    async def start(self) -> None:
        """Resume the builds a stopped process left unfinished."""
        for collection in await anyio.to_thread.run_sync(self._store.list_collections):
            for version in await anyio.to_thread.run_sync(self._versions.list_versions, collection.id):
                if version.state is IndexState.BUILDING:
                    self._start_build(version)

    async def close(self) -> None:
        for task, stop in list(self._builds.values()):
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _start_build(self, version: IndexVersion) -> None:
        stop = threading.Event()
        task = asyncio.create_task(
            anyio.to_thread.run_sync(self._builder.build, version, stop), name=f"build-{version.index_id}"
        )
        self._builds[version.index_id] = (task, stop)
        task.add_done_callback(lambda _: self._builds.pop(version.index_id, None))

    async def _set_route(
        self, collection_id: str, active: str, canary: str | None, share: float, previous: str | None
    ) -> None:
        await anyio.to_thread.run_sync(self._versions.set_route, collection_id, active, canary, share, previous)
        self._state.changed(collection_id)

    async def _collection_id(self, collection: str, tenant: str) -> str:
        return (await anyio.to_thread.run_sync(self._store.get_collection, collection, tenant)).id

    async def describe(self, collection: str, tenant: str = DEFAULT_TENANT) -> tuple[IndexRoute, list[IndexVersion]]:
        """The tenant's collection's route and versions. Raises ``NotFoundError``."""
        collection_id = await self._collection_id(collection, tenant)
        route = await anyio.to_thread.run_sync(self._versions.index_route, collection_id)
        return route, await anyio.to_thread.run_sync(self._versions.list_versions, collection_id)

    async def create(
        self,
        collection: str,
        max_tokens: int | None,
        overlap_tokens: int | None,
        model: str | None,
        tenant: str = DEFAULT_TENANT,
        precision: VectorPrecision | None = None,
    ) -> IndexVersion:
        """A new version (unset fields copied from the active one), built in the background. Raises
        ``InvalidRequestError`` for a model not loaded or a precision this backend does not offer."""
        route, _ = await self.describe(collection, tenant)
        base = route.active.config
        config = replace(
            base,
            max_tokens=base.max_tokens if max_tokens is None else max_tokens,
            overlap_tokens=base.overlap_tokens if overlap_tokens is None else overlap_tokens,
            model=model or self._model_id,
            precision=base.precision if precision is None else precision,
        )
        _check_config(config, self._model_id)
        if precision is not None and precision not in self._precisions:
            offered = ", ".join(self._precisions)
            raise InvalidRequestError(f"vector precision {precision!r} is not offered by this backend ({offered})")
        total = await anyio.to_thread.run_sync(self._sources.ready_document_count, route.active.collection_id)
        version = await anyio.to_thread.run_sync(
            self._versions.create_version, route.active.collection_id, config, total
        )
        self._start_build(version)
        return version

    async def _version(self, collection: str, number: int, tenant: str) -> IndexVersion:
        _, versions = await self.describe(collection, tenant)
        for version in versions:
            if version.version == number:
                return version
        raise NotFoundError(f"collection {collection!r} has no index version {number}")

    async def set_canary(
        self, collection: str, number: int | None, share: float, tenant: str = DEFAULT_TENANT
    ) -> IndexRoute:
        """Send ``share`` of the queries to version ``number``; None or a share of 0 ends the canary."""
        route, _ = await self.describe(collection, tenant)
        collection_id = route.active.collection_id
        if number is None or share <= 0:
            await self._set_route(collection_id, route.active.index_id, None, 0.0, _index_id(route.previous))
        else:
            version = await self._version(collection, number, tenant)
            if version.index_id == route.active.index_id:
                raise ConflictError(f"version {number} is already the active one")
            _check_ready(version)
            await self._set_route(
                collection_id,
                route.active.index_id,
                version.index_id,
                share,
                _index_id(route.previous),
            )
        return await anyio.to_thread.run_sync(self._versions.index_route, collection_id)

    async def promote(
        self, collection: str, number: int, force: bool = False, tenant: str = DEFAULT_TENANT
    ) -> GateResult:
        """Make version ``number`` the active one, if the golden-set gate passes (or ``force``). Raises
        ``ConflictError`` when refused."""
        route, _ = await self.describe(collection, tenant)
        version = await self._version(collection, number, tenant)
        if version.index_id == route.active.index_id:
            raise ConflictError(f"version {number} is already the active one")
        _check_ready(version)
        gate = await anyio.to_thread.run_sync(self._gate, route.active, version, force)
        if not gate.passed and not force:
            if gate.active_ndcg is None:
                raise ConflictError(f"collection {collection!r} has no golden set to gate the promotion on")
            raise ConflictError(
                f"version {number} scores nDCG@10 {gate.candidate_ndcg:.4f} on the golden set against "
                f"{gate.active_ndcg:.4f} for the active version {route.active.version}: more than the allowed "
                f"{gate.margin} lower; promote with force to override"
            )
        await self._set_route(version.collection_id, version.index_id, None, 0.0, route.active.index_id)
        logger.info("collection %s: index version %d promoted (gate %s)", collection, number, gate)
        return gate

    async def rollback(self, collection: str, tenant: str = DEFAULT_TENANT) -> IndexRoute:
        """Make the previously active version active again."""
        route, _ = await self.describe(collection, tenant)
        if route.previous is None or route.previous.state is not IndexState.READY:
            raise ConflictError(f"collection {collection!r} has no previous index version to roll back to")
        collection_id = route.active.collection_id
        await self._set_route(collection_id, route.previous.index_id, None, 0.0, route.active.index_id)
        return await anyio.to_thread.run_sync(self._versions.index_route, collection_id)

    async def delete(self, collection: str, number: int, tenant: str = DEFAULT_TENANT) -> None:
        """Drop a version no query is routed to (a running build is stopped first)."""
        version = await self._version(collection, number, tenant)
        build = self._builds.get(version.index_id)
        if build is not None:
            build[1].set()
            await build[0]
        await anyio.to_thread.run_sync(self._versions.delete_version, version.index_id)
        await anyio.to_thread.run_sync(self._index.drop, version.index_id)

    async def set_golden_set(self, collection: str, golden: GoldenSet, tenant: str = DEFAULT_TENANT) -> None:
        collection_id = await self._collection_id(collection, tenant)
        body: dict[str, object] = {"queries": golden.queries, "qrels": golden.qrels}
        await anyio.to_thread.run_sync(self._versions.set_golden_set, collection_id, body)

    def _gate(self, active: IndexVersion, candidate: IndexVersion, force: bool) -> GateResult:
        stored = self._versions.get_golden_set(active.collection_id)
        margin = self._settings.promote_margin
        if stored is None:
            passed = not self._settings.require_golden_set
            return GateResult(None, None, margin, 0, passed, force)
        golden = GoldenSet.from_stored(stored)
        active_ndcg = self.evaluate(active, golden)
        candidate_ndcg = self.evaluate(candidate, golden)
        passed = candidate_ndcg >= active_ndcg - margin
        return GateResult(round(active_ndcg, 4), round(candidate_ndcg, 4), margin, len(golden.queries), passed, force)

    def evaluate(self, version: IndexVersion, golden: GoldenSet) -> float:
        """Mean nDCG@10 of one version over the golden queries, in the collection's default mode."""
        mode = self._retriever.settings_for(version.collection_id).default_mode
        scores = []
        for qid, text in golden.queries.items():
            relevant = golden.qrels.get(qid, {})
            if not any(g > 0 for g in relevant.values()):
                continue
            ranking = self._retriever.rank(version.collection_id, version.index_id, text, 100, SearchFilters(), mode)
            ranked = self._store.external_ids_of([cid for cid, _ in ranking.scored])
            scores.append(ndcg_at(ranked, relevant))
        return sum(scores) / len(scores) if scores else 0.0


def _index_id(version: IndexVersion | None) -> str | None:
    return None if version is None else version.index_id


def refuse_other_models(store: SearchStore, versions: IndexVersionStore, model_id: str) -> None:
    """Raise ``EmbeddingModelMismatchError`` if a live index version holds vectors of another model than
    ``model_id``: searching them with this model's query vectors, or adding this model's vectors to them, would
    mix two vector spaces (a changed ``embedding.precision`` or ``embedding.max_seq_length``)."""
    for collection in store.list_collections():
        for version in versions.live_versions(collection.id):
            if version.config.model != model_id:
                raise EmbeddingModelMismatchError(
                    f"collection {collection.name!r} (index version {version.version}) holds vectors of "
                    f"{version.config.model!r}, but the embedding settings load {model_id!r}: set "
                    "RAGSERVE_EMBEDDING__PRECISION and __MAX_SEQ_LENGTH back to match, or ingest into a new data "
                    "directory"
                )


def _check_ready(version: IndexVersion) -> None:
    if version.state is not IndexState.READY:
        raise ConflictError(f"index version {version.version} is {version.state.value}, not ready")


def _check_config(config: IndexConfig, model_id: str) -> None:
    if config.model != model_id:
        raise InvalidRequestError(f"embedding model {config.model!r} is not loaded; this server has {model_id!r}")
    if not 0 <= config.overlap_tokens < config.max_tokens:
        raise InvalidRequestError("overlap_tokens must be at least 0 and below max_tokens")
