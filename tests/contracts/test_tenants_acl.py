"""Contract tests of tenants and document ACLs in the storage seams: every backend keeps tenants apart and
applies a caller's ACL inside keyword search, the chunk ids that dense search is restricted to, the hits it
loads and document listings."""

from __future__ import annotations

import pytest

from ragserve.domain import Access, Acl, DocumentInput, JobStatus, SearchFilters
from ragserve.errors import NotFoundError
from ragserve.stores.analyzer import analyze
from tests.contracts.test_stores import Backend, _chunk, _write, backend

__all__ = ["backend"]  # the fixture, parametrised over every backend

HR_ONLY = Acl.of([], ["hr"], public=False)
ALICE_ONLY = Acl.of(["alice"], [], public=False)


def _ingest(
    b: Backend, text: str, *, tenant: str = "default", acl: Acl | None = None, external_id: str | None = None
) -> str:
    item = DocumentInput(collection="c", external_id=external_id, text=text, tenant=tenant, acl=acl)
    job = b.jobs.create_job([item], None, None)
    (staged,) = b.jobs.claim_items(10)
    _write(b, staged, "Title", "h", [_chunk(0, text)])
    assert b.jobs.get_job(job.id).status is JobStatus.SUCCEEDED
    assert b.jobs.get_job(job.id).tenant == tenant
    return job.document_ids[0]


def test_a_collection_name_is_per_tenant(backend: Backend) -> None:
    a = _ingest(backend, "apples are red", tenant="acme")
    b = _ingest(backend, "apples are green", tenant="globex")
    acme, globex = backend.store.get_collection("c", "acme"), backend.store.get_collection("c", "globex")
    assert acme.id != globex.id
    assert (acme.tenant, globex.tenant) == ("acme", "globex")
    with pytest.raises(NotFoundError):
        backend.store.get_collection("c")  # the default tenant has no such collection
    assert [(s.name, s.document_count) for s in backend.store.summarize_collections("acme")] == [("c", 1)]
    assert backend.store.summarize_collections("initech") == []
    assert backend.store.get_document(a).tenant == "acme"
    hits = backend.store.keyword_search(acme.id, analyze("apples"), 10, SearchFilters())
    assert [h.document_id for h in backend.store.hits(hits)] == [a]
    # Even ids of another tenant's chunks are not loaded for a caller of this tenant.
    other = backend.store.keyword_search(globex.id, analyze("apples"), 10, SearchFilters())
    assert [h.document_id for h in backend.store.hits(other)] == [b]
    assert backend.store.hits(other, Access("acme", unrestricted=True)) == []
    listed, total = backend.store.list_documents(None, 10, 0, Access("acme", unrestricted=True))
    assert ([d.id for d in listed], total) == ([a], 1)


def test_acl_prefilters_keyword_search_chunk_ids_hits_and_listings(backend: Backend) -> None:
    open_doc = _ingest(backend, "holiday policy for everyone")
    hr_doc = _ingest(backend, "holiday policy salaries for hr", acl=HR_ONLY)
    alice_doc = _ingest(backend, "holiday policy private alice notes", acl=ALICE_ONLY)
    public_doc = _ingest(backend, "holiday policy public page", acl=Acl.of([], [], public=True))
    cid = backend.store.get_collection("c").id
    terms = analyze("holiday policy")
    cases = {
        Access("default"): {open_doc, public_doc},
        Access("default", user="bob", groups=("sales",)): {open_doc, public_doc},
        Access("default", user="bob", groups=("hr", "sales")): {open_doc, public_doc, hr_doc},
        Access("default", user="alice"): {open_doc, public_doc, alice_doc},
        Access("default", unrestricted=True): {open_doc, public_doc, hr_doc, alice_doc},
    }
    for access, expected in cases.items():
        filters = SearchFilters(access=access)
        scored = backend.store.keyword_search(cid, terms, 10, filters)
        assert {h.document_id for h in backend.store.hits(scored)} == expected, access
        allowed = backend.store.chunk_ids(cid, filters)
        assert {h.document_id for h in backend.store.hits([(i, 1.0) for i in allowed])} == expected, access
        everything = backend.store.keyword_search(cid, terms, 10, SearchFilters())
        assert {h.document_id for h in backend.store.hits(everything, access)} == expected, access
        listed, total = backend.store.list_documents("c", 10, 0, access)
        assert ({d.id for d in listed}, total) == (expected, len(expected)), access
    assert backend.store.has_restricted_documents(cid)


def test_acl_and_metadata_filters_combine(backend: Backend) -> None:
    item = DocumentInput(collection="c", text="budget plan", metadata={"year": 2026}, acl=HR_ONLY)
    backend.jobs.create_job([item], None, None)
    (staged,) = backend.jobs.claim_items(10)
    _write(backend, staged, "T", "h", [_chunk(0, "budget plan")])
    cid = backend.store.get_collection("c").id
    hr = Access("default", groups=("hr",))
    assert len(backend.store.chunk_ids(cid, SearchFilters.from_mapping({"year": 2026}).with_access(hr))) == 1
    assert backend.store.chunk_ids(cid, SearchFilters.from_mapping({"year": 2025}).with_access(hr)) == []
    outsider = Access("default", groups=("eng",))
    assert backend.store.chunk_ids(cid, SearchFilters.from_mapping({"year": 2026}).with_access(outsider)) == []


def test_set_acl_changes_visibility_at_once(backend: Backend) -> None:
    doc = _ingest(backend, "quarterly numbers", acl=HR_ONLY)
    cid = backend.store.get_collection("c").id
    eng = Access("default", groups=("eng",))
    terms = analyze("quarterly numbers")
    assert backend.store.keyword_search(cid, terms, 10, SearchFilters(access=eng)) == []
    backend.store.set_acl(doc, Acl.of([], ["eng"], public=False))
    assert backend.store.get_document(doc).acl == Acl.of([], ["eng"], public=False)
    assert len(backend.store.keyword_search(cid, terms, 10, SearchFilters(access=eng))) == 1
    backend.store.set_acl(doc, None)
    assert backend.store.get_document(doc).acl is None
    assert not backend.store.has_restricted_documents(cid)
    assert len(backend.store.keyword_search(cid, terms, 10, SearchFilters(access=Access("default")))) == 1
    with pytest.raises(NotFoundError):
        backend.store.set_acl("no-such-document", None)


def test_an_upsert_replaces_the_acl(backend: Backend) -> None:
    doc = _ingest(backend, "v1 text", acl=HR_ONLY, external_id="e")
    again = _ingest(backend, "v2 text", acl=None, external_id="e")
    assert again == doc
    assert backend.store.get_document(doc).acl is None
