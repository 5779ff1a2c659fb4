"""Per-collection facts every query needs — its id, its retrieval overrides and its index route — cached in
this process for a few seconds, and dropped at once when any replica changes them (``Invalidation``)."""

from __future__ import annotations

import threading
import time
from typing import Any

from ragserve.cache.protocol import Invalidation
from ragserve.domain import DEFAULT_TENANT, IndexRoute
from ragserve.stores.protocol import CollectionSettingsStore, DocumentStore, IndexVersionStore

TOPIC = "collection"


class CollectionState:
    def __init__(
        self,
        store: DocumentStore,
        settings_store: CollectionSettingsStore,
        versions: IndexVersionStore,
        invalidation: Invalidation,
        ttl_seconds: float,
    ) -> None:
        self._store = store
        self._settings_store = settings_store
        self._versions = versions
        self._invalidation = invalidation
        self._ttl = ttl_seconds
        self._ids: dict[tuple[str, str], str] = {}  # a tenant's name never changes id
        self._cached: dict[tuple[str, str], tuple[float, Any]] = {}
        self._lock = threading.Lock()
        invalidation.subscribe(TOPIC, self._forget)

    def collection_id(self, name: str, tenant: str = DEFAULT_TENANT) -> str:
        """The id of the tenant's collection ``name``. Raises ``NotFoundError`` (not cached: the collection may
        be created next)."""
        found = self._ids.get((tenant, name))
        if found is None:
            found = self._store.get_collection(name, tenant).id
            self._ids[(tenant, name)] = found
        return found

    def overrides(self, collection_id: str) -> dict[str, object]:
        return dict(self._get("overrides", collection_id, self._settings_store.get_retrieval_overrides))

    def route(self, collection_id: str) -> IndexRoute:
        route: IndexRoute = self._get("route", collection_id, self._versions.index_route)
        return route

    def changed(self, collection_id: str) -> None:
        """This collection's settings or route changed: every replica reads them again."""
        self._invalidation.publish(TOPIC, collection_id)

    def _get(self, kind: str, collection_id: str, load: Any) -> Any:
        now = time.monotonic()
        with self._lock:
            entry = self._cached.get((kind, collection_id))
        if entry is not None and entry[0] > now:
            return entry[1]
        value = load(collection_id)
        if self._ttl > 0:
            with self._lock:
                self._cached[(kind, collection_id)] = (now + self._ttl, value)
        return value

    def _forget(self, collection_id: str) -> None:
        with self._lock:
            self._cached.pop(("overrides", collection_id), None)
            self._cached.pop(("route", collection_id), None)
