"""Source sync planning: which files are added, updated, deleted or left alone, and what a file hashes to."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from ragserve.domain import DocumentInput, IndexConfig
from ragserve.errors import InvalidRequestError, PayloadTooLargeError
from ragserve.ingest.pipeline import input_hash
from ragserve.ingest.sync import (
    SOURCE_KEY,
    SourceFile,
    checked_path,
    directory_files,
    plan_sync,
    prepare_sync,
    source_input,
)
from ragserve.stores.protocol import DocumentFingerprint
from ragserve.stores.sqlite import SqliteStore
from ragserve.stores.sqlite_db import SqliteDatabase

OWNED = [
    DocumentFingerprint("d1", "a.md", "hash-a"),
    DocumentFingerprint("d2", "b.md", "hash-b"),
    DocumentFingerprint("d3", "gone/c.md", "hash-c"),
    DocumentFingerprint("d4", "pending.md", None),
]


def test_plan_sorts_files_into_add_update_delete_and_unchanged() -> None:
    files = {"b.md": "hash-b2", "a.md": "hash-a", "new.txt": "hash-n", "pending.md": "hash-p", "theirs.md": "x"}
    plan = plan_sync(OWNED, {"theirs.md", "unrelated"}, files)
    assert plan.to_add == ("new.txt",)
    assert plan.to_update == ("b.md", "pending.md")  # a pending document has no hash yet: submit it again
    assert plan.unchanged == ("a.md",)
    assert [d.document_id for d in plan.to_delete] == ["d3"]
    assert plan.conflicts == ("theirs.md",)  # owned by another source or none: never overwritten
    assert plan.to_submit == ("new.txt", "b.md", "pending.md")


def test_plan_keeps_missing_documents_unless_asked_to_delete_them() -> None:
    assert plan_sync(OWNED, (), {}, delete_missing=False).to_delete == ()
    assert {d.external_id for d in plan_sync(OWNED, (), {}).to_delete} == {"a.md", "b.md", "gone/c.md", "pending.md"}


def test_plan_of_an_unchanged_source_does_nothing() -> None:
    plan = plan_sync(OWNED[:2], (), {"a.md": "hash-a", "b.md": "hash-b"})
    assert (plan.to_submit, plan.to_delete, plan.conflicts) == ((), (), ())
    assert plan.unchanged == ("a.md", "b.md")


@pytest.mark.parametrize("path", ["a.md", "dir/sub/b.txt", "with space/ü.html", ".hidden/x.md"])
def test_relative_paths_are_accepted(path: str) -> None:
    assert checked_path(path, "files[0].path") == path


@pytest.mark.parametrize("path", ["", "/etc/passwd", "../up.md", "a/../b.md", "a//b.md", "./a.md", "a/", "a\0.md"])
def test_paths_that_could_name_another_file_are_rejected(path: str) -> None:
    with pytest.raises(InvalidRequestError, match=r"files\[0\]\.path"):
        checked_path(path, "files[0].path")


def test_a_file_hashes_like_the_same_file_uploaded() -> None:
    """Ingestion stores ``input_hash`` of what was submitted; an upload of the same bytes must hash alike."""
    item = source_input("kb", "src", "docs/guide.md", b"# Guide\n\nHello.")
    assert item.external_id == "docs/guide.md"
    assert item.filename == "guide.md"
    assert item.metadata == {SOURCE_KEY: "src"}
    upload = DocumentInput(collection="other", filename="guide.md", content=b"# Guide\n\nHello.")
    assert input_hash(item) == input_hash(upload)
    assert input_hash(item) != input_hash(source_input("kb", "src", "docs/guide.md", b"# Guide\n\nHello!"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    db = SqliteDatabase(tmp_path / "db.sqlite3")
    yield SqliteStore(db, IndexConfig(200, 40, "test-model"))
    db.close()


class _Reads:
    def __init__(self) -> None:
        self.count: dict[str, int] = {}

    def file(self, path: str, data: bytes) -> SourceFile:
        def read() -> bytes:
            self.count[path] = self.count.get(path, 0) + 1
            return data

        return SourceFile(path, read)


def test_prepare_skips_unsupported_files_and_checks_each_input(store: SqliteStore) -> None:
    reads = _Reads()
    checked: list[str | None] = []

    def check(inputs: Sequence[DocumentInput]) -> None:
        checked.extend(i.external_id for i in inputs)

    files = [reads.file("b.md", b"bee"), reads.file("notes.xyz", b"?"), reads.file("a.txt", b"ay")]
    prepared = prepare_sync(store, "missing-collection", "src", files, True, check)
    assert prepared.plan.to_add == ("a.txt", "b.md")
    assert prepared.skipped == ("notes.xyz",)
    assert checked == ["b.md", "a.txt"]
    assert reads.count == {"b.md": 1, "a.txt": 1}  # the unsupported file is never read
    (item,) = prepared.inputs(["a.txt"])
    assert (item.content, item.metadata) == (b"ay", {SOURCE_KEY: "src"})
    assert reads.count == {"b.md": 1, "a.txt": 2}


def test_prepare_rejects_a_path_given_twice_and_what_the_check_rejects(store: SqliteStore) -> None:
    twice = [SourceFile.of_bytes("a.md", b"1"), SourceFile.of_bytes("a.md", b"2")]
    with pytest.raises(InvalidRequestError, match="listed twice"):
        prepare_sync(store, "kb", "src", twice, True, lambda inputs: None)

    def too_large(inputs: Sequence[DocumentInput]) -> None:
        raise PayloadTooLargeError("too large")

    with pytest.raises(PayloadTooLargeError):
        prepare_sync(store, "kb", "src", [SourceFile.of_bytes("a.md", b"1")], True, too_large)


def test_directory_files_lists_every_file_by_relative_posix_path(tmp_path: Path) -> None:
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "top.md").write_bytes(b"top")
    (tmp_path / "sub" / "deeper" / "leaf.pdf").write_bytes(b"leaf")
    files = directory_files(tmp_path)
    assert [f.path for f in files] == ["sub/deeper/leaf.pdf", "top.md"]
    assert files[0].read() == b"leaf"
