"""The SQLite connection pool: many threads share a bounded number of connections, each with its share of the
page-cache budget. One connection per thread made a soak's resident memory grow with every thread that ever
read the store (bench/README.md, "Soak")."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ragserve.domain import IndexConfig
from ragserve.errors import StoreError
from ragserve.settings import Settings
from ragserve.stores.factory import claim_data_dir, open_stores
from ragserve.stores.sqlite import SqliteStore
from ragserve.stores.sqlite_db import SqliteDatabase

CONFIG = IndexConfig(max_tokens=200, overlap_tokens=40, model="test-model")


def test_many_threads_share_at_most_max_connections(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "db.sqlite3", max_connections=3)
    store = SqliteStore(db, CONFIG)
    store.ensure_collection("c")
    threads = 24
    # Every thread reads, waits until all have read (so none has exited), then reads again.
    all_read = threading.Barrier(threads)

    def work() -> tuple[str, str]:
        first = store.get_collection("c").name
        all_read.wait(timeout=60)
        return first, store.get_collection("c").name

    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(lambda _: work(), range(threads)))
        assert results == [("c", "c")] * threads
        assert db.open_connections <= 3
    finally:
        db.close()


def test_threads_that_exit_leave_no_connection_behind(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "db.sqlite3", max_connections=8)
    store = SqliteStore(db, CONFIG)
    store.ensure_collection("c")
    try:
        for _ in range(20):  # one after the other, as a thread pool retires and starts workers
            thread = threading.Thread(target=store.list_collections)
            thread.start()
            thread.join()
        assert db.open_connections == 1
    finally:
        db.close()


def test_each_connection_gets_its_share_of_the_cache_budget(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "db.sqlite3", max_connections=4, cache_bytes=64 * 1024 * 1024)
    try:
        # Negative cache_size is in KiB: 64 MiB over 4 connections is 16 MiB each.
        assert db.fetchone("PRAGMA cache_size") == (-16 * 1024,)
    finally:
        db.close()


def test_a_write_nested_in_a_read_block_reuses_the_threads_connection(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "db.sqlite3", max_connections=1, wait_seconds=5)
    store = SqliteStore(db, CONFIG)
    try:
        with db.reading() as conn:
            store.ensure_collection("c")  # reads and writes inside this thread's one lease
            assert conn.execute("SELECT name FROM collections").fetchall() == [("c",)]
        assert db.open_connections == 1
    finally:
        db.close()


def test_a_thread_waits_for_a_free_connection_and_gives_up_with_a_store_error(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "db.sqlite3", max_connections=1, wait_seconds=0.2)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.reading():
            held.set()
            release.wait(timeout=60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(timeout=60)
        with pytest.raises(StoreError, match="busy"):
            db.fetchone("SELECT 1")
        release.set()
        holder.join()
        assert db.fetchone("SELECT 1") == (1,)  # the connection came back to the pool
    finally:
        release.set()
        holder.join()
        db.close()


def test_closing_closes_leased_connections_when_they_come_back(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "db.sqlite3", max_connections=2)
    with db.reading() as conn:
        db.close()
        assert conn.execute("SELECT 1").fetchone() == (1,)  # still usable until the block ends
    assert db.open_connections == 0
    with pytest.raises(StoreError, match="closed"):
        db.fetchone("SELECT 1")


def test_the_store_settings_size_the_pool_and_its_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGSERVE_STORE__SQLITE_CONNECTIONS", "2")
    monkeypatch.setenv("RAGSERVE_STORE__SQLITE_CACHE_MB", "32")
    settings = Settings(data_dir=tmp_path)
    stores = open_stores(settings, CONFIG, 4, claim_data_dir(settings))
    try:
        store = stores.store
        assert isinstance(store, SqliteStore)
        db = store._db
        assert db.fetchone("PRAGMA cache_size") == (-16 * 1024,)  # 32 MB over 2 connections
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda _: store.list_collections(), range(32)))
        assert db.open_connections <= 2
    finally:
        stores.close()
