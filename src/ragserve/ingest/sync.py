"""Source sync: bring a collection in line with a directory of files, or a client's listing of one.

Each file is one document whose external id is its path relative to the source's root and whose metadata
names the source (``sync_source``), so a sync deletes only documents that the same source created, never
ones ingested by other means. A file is compared with its document through ``input_hash``, the hash
ingestion stores, so an unchanged file costs no parse, no embedding and no job item; a changed one is
submitted again as an upsert by external id, which re-embeds only the chunks whose text changed.

Planning is pure (``plan_sync``); ``prepare_sync`` reads the stored state and hashes the files (synchronous,
for a worker thread); the service submits the plan's files and deletes its documents.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ragserve.domain import DEFAULT_TENANT, DocumentInput, Job, SearchFilters
from ragserve.errors import InvalidRequestError, NotFoundError
from ragserve.ingest.loaders import is_supported
from ragserve.ingest.pipeline import input_hash
from ragserve.stores.protocol import DocumentFingerprint, DocumentStore

SOURCE_KEY = "sync_source"


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A file of a sync source: its path relative to the source's root (``/``-separated, the document's
    external id) and how to read its bytes, called once to hash it and again only if it must be ingested."""

    path: str
    read: Callable[[], bytes]

    @classmethod
    def of_bytes(cls, path: str, data: bytes) -> SourceFile:
        return cls(path, lambda: data)


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """What a sync does, by path. ``conflicts`` are files whose external id belongs to a document this
    source does not own (ingested by other means or another source): they are left alone, like
    ``unchanged`` ones."""

    to_add: tuple[str, ...]
    to_update: tuple[str, ...]
    to_delete: tuple[DocumentFingerprint, ...]
    unchanged: tuple[str, ...]
    conflicts: tuple[str, ...]

    @property
    def to_submit(self) -> tuple[str, ...]:
        return self.to_add + self.to_update


@dataclass(frozen=True, slots=True)
class SyncReport:
    """A sync's plan, the files skipped for their type, and the jobs that ingest the plan's files (one per
    request-sized batch; none on a dry run or when nothing changed)."""

    plan: SyncPlan
    skipped: tuple[str, ...]
    jobs: tuple[Job, ...]


def plan_sync(
    owned: Sequence[DocumentFingerprint],
    foreign_ids: Collection[str],
    file_hashes: Mapping[str, str],
    delete_missing: bool = True,
) -> SyncPlan:
    """Compare the source's stored documents (``owned``) with its files (path → ``input_hash``).
    ``foreign_ids`` are the collection's other external ids. A document whose first ingestion is still
    pending (no hash) counts as changed."""
    stored = {fp.external_id: fp for fp in owned}
    to_add: list[str] = []
    to_update: list[str] = []
    unchanged: list[str] = []
    conflicts: list[str] = []
    for path in sorted(file_hashes):
        found = stored.get(path)
        if found is None:
            (conflicts if path in foreign_ids else to_add).append(path)
        elif found.content_hash == file_hashes[path]:
            unchanged.append(path)
        else:
            to_update.append(path)
    to_delete = [stored[ext] for ext in sorted(stored) if ext not in file_hashes] if delete_missing else []
    return SyncPlan(tuple(to_add), tuple(to_update), tuple(to_delete), tuple(unchanged), tuple(conflicts))


def source_input(collection: str, source: str, path: str, content: bytes) -> DocumentInput:
    """The document a source file becomes: named like an uploaded file, its external id its path."""
    return DocumentInput(
        collection=collection,
        external_id=path,
        filename=PurePosixPath(path).name,
        content=content,
        metadata={SOURCE_KEY: source},
    )


def checked_path(path: str, where: str) -> str:
    """``path`` if it is relative, ``/``-separated and free of ``.``/``..``/empty parts; otherwise raises
    ``InvalidRequestError``."""
    parts = path.split("/")
    if "\0" in path or any(part in ("", ".", "..") for part in parts):
        raise InvalidRequestError(f"{where}: {path!r} is not a relative path of names separated by '/'")
    return path


def directory_files(root: Path) -> list[SourceFile]:
    """Every regular file under ``root``, recursively, by relative path."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return [SourceFile(p.relative_to(root).as_posix(), p.read_bytes) for p in files]


@dataclass(frozen=True, slots=True)
class PreparedSync:
    """A plan with the files it submits, read again batch by batch so a large source is never all in memory."""

    collection: str
    source: str
    plan: SyncPlan
    skipped: tuple[str, ...]
    files: Mapping[str, SourceFile]

    def inputs(self, paths: Sequence[str]) -> list[DocumentInput]:
        return [source_input(self.collection, self.source, p, self.files[p].read()) for p in paths]


def prepare_sync(
    store: DocumentStore,
    collection: str,
    source: str,
    files: Sequence[SourceFile],
    delete_missing: bool,
    check: Callable[[Sequence[DocumentInput]], None],
    tenant: str = DEFAULT_TENANT,
) -> PreparedSync:
    """Hash every supported file, passing each one's input to ``check`` (which raises for one over a limit),
    and plan against the stored state. Raises ``InvalidRequestError`` for a path given twice."""
    supported: dict[str, SourceFile] = {}
    skipped: list[str] = []
    seen: set[str] = set()
    for file in files:
        if file.path in seen:
            raise InvalidRequestError(f"{file.path!r} is listed twice")
        seen.add(file.path)
        if is_supported(file.path):
            supported[file.path] = file
        else:
            skipped.append(file.path)
    hashes: dict[str, str] = {}
    for path, file in supported.items():
        item = source_input(collection, source, path, file.read())
        check([item])
        hashes[path] = input_hash(item)
    owned, foreign_ids = _stored_state(store, collection, source, tenant)
    plan = plan_sync(owned, foreign_ids, hashes, delete_missing)
    return PreparedSync(collection, source, plan, tuple(sorted(skipped)), supported)


def _stored_state(
    store: DocumentStore, collection: str, source: str, tenant: str
) -> tuple[list[DocumentFingerprint], set[str]]:
    try:
        collection_id = store.get_collection(collection, tenant).id
    except NotFoundError:
        return [], set()
    owned = store.document_fingerprints(collection_id, SearchFilters.from_mapping({SOURCE_KEY: source}))
    owned_ids = {fp.external_id for fp in owned}
    every = store.document_fingerprints(collection_id, SearchFilters())
    return owned, {fp.external_id for fp in every if fp.external_id not in owned_ids}
