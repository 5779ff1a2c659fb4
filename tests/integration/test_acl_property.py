"""The permission property, checked by hypothesis: whatever the tenants, users, groups, documents and ACLs,
and whatever searches, answers (with the answer cache on), ACL changes and deletions happen in whatever order,
no result, answer citation, cached answer or document read ever shows a caller a chunk it may not see; and
keyword search finds every document it may see (the ACL is a pre-filter, so nothing it may see is lost).

Runs through the HTTP API with authentication on, against the embedded backend and PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragserve.api.app import create_app
from ragserve.embedding.onnx import OnnxEmbedder
from ragserve.security.auth import create_key
from ragserve.settings import Settings
from tests.integration.helpers import ingest

pytestmark = pytest.mark.slow

TENANTS = ("t1", "t2")
USERS = ("u1", "u2", "u3")
GROUPS = ("g1", "g2", "g3")
WORDS = ("report", "budget", "roadmap", "incident", "contract", "survey")


@dataclass(frozen=True)
class Caller:
    tenant: str
    user: str | None
    groups: tuple[str, ...]


# Every kind of caller: no user or a user, no groups or some, in both tenants.
CALLERS = tuple(Caller(t, u, g) for t in TENANTS for u in (None, "u1", "u2") for g in ((), ("g1",), ("g2", "g3")))


@dataclass
class Doc:
    tenant: str
    acl: dict[str, Any] | None
    id: str = ""


@dataclass
class World:
    """What the test believes: each live document's tenant and ACL."""

    docs: dict[int, Doc] = field(default_factory=dict)
    tenants: set[str] = field(default_factory=set)  # those that have the example's collection

    def readable(self, caller: Caller) -> set[str]:
        return {d.id for d in self.docs.values() if _admits(d, caller)}


def _admits(doc: Doc, caller: Caller) -> bool:
    if doc.tenant != caller.tenant:
        return False
    acl = doc.acl
    if acl is None or acl["public"]:
        return True
    return (caller.user is not None and caller.user in acl["users"]) or bool(set(acl["groups"]) & set(caller.groups))


restricted = st.fixed_dictionaries(
    {
        "users": st.lists(st.sampled_from(USERS), max_size=2, unique=True),
        "groups": st.lists(st.sampled_from(GROUPS), max_size=2, unique=True),
        "public": st.just(False),
    }
)
public = st.fixed_dictionaries({"users": st.just([]), "groups": st.just([]), "public": st.just(True)})
# Mostly restricted documents: they are where a leak would show.
acls = st.one_of(restricted, restricted, restricted, st.none(), public)
docs = st.lists(st.tuples(st.sampled_from(TENANTS), acls), min_size=2, max_size=6)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("search"), st.sampled_from(CALLERS), st.sampled_from(("keyword", "dense", "hybrid"))),
        st.tuples(st.just("search"), st.sampled_from(CALLERS), st.sampled_from(("keyword", "dense", "hybrid"))),
        st.tuples(st.just("ask"), st.sampled_from(CALLERS), st.sampled_from(WORDS[:2])),
        st.tuples(st.just("ask"), st.sampled_from(CALLERS), st.sampled_from(WORDS[:2])),
        st.tuples(st.just("get"), st.sampled_from(CALLERS), st.integers(0, 5)),
        st.tuples(st.just("set_acl"), st.integers(0, 5), acls),
        st.tuples(st.just("delete"), st.integers(0, 5), st.none()),
    ),
    min_size=1,
    max_size=8,
)


class Api:
    def __init__(self, client: TestClient) -> None:
        self.client = client
        app: Any = client.app
        self.headers: dict[Caller | str, dict[str, str]] = {}
        for who in [*CALLERS, *TENANTS]:
            if isinstance(who, str):  # each tenant's writer: admin, so it reads and manages everything
                tenant, scopes, user, groups = who, ["query", "ingest", "admin"], None, ()
            else:
                tenant, scopes, user, groups = who.tenant, ["query"], who.user, who.groups
            secret, _ = create_key(
                app.state.service.stores.keys, app.state.authenticator.pepper, "p", tenant, scopes, None, user, groups
            )
            self.headers[who] = {"authorization": f"Bearer {secret}"}
        self.collections = itertools.count()


def _run(api: Api, documents: list[tuple[str, dict[str, Any] | None]], steps: list[tuple[Any, ...]]) -> None:
    client, collection = api.client, f"c{next(api.collections)}"
    world = World()
    for i, (tenant, acl) in enumerate(documents):
        text = f"The {WORDS[i % len(WORDS)]} report number {i} covers the quarterly budget of team {i}."
        body = {"text": text, "title": f"Doc {i}", **({"acl": acl} if acl is not None else {})}
        (doc_id,) = ingest(client, [body], collection, api.headers[tenant])["document_ids"]
        world.docs[i] = Doc(tenant, acl, doc_id)
        world.tenants.add(tenant)
    for step in steps:
        kind = step[0]
        if kind == "search":
            caller, mode = step[1], step[2]
            body = {"query": "quarterly budget report", "collection": collection, "k": 50, "mode": mode}
            response = client.post("/v1/search", json=body, headers=api.headers[caller])
            if _no_such_collection(response, world, caller):
                continue
            found = {hit["document_id"] for hit in response.json()["results"]}
            allowed = world.readable(caller)
            assert found <= allowed, (caller, found - allowed)
            if mode == "keyword":  # every document holds the words: pre-filtering loses nothing
                assert found == allowed, (caller, allowed - found)
        elif kind == "ask":
            caller = step[1]
            question = f"What does the {step[2]} report say about the quarterly budget?"
            body = {"question": question, "collection": collection}
            response = client.post("/v1/answer", json=body, headers=api.headers[caller])
            if _no_such_collection(response, world, caller):
                continue
            cited = {c["document_id"] for c in response.json()["citations"]}
            assert cited <= world.readable(caller), (caller, cited - world.readable(caller))
        elif kind == "get" and step[2] in world.docs:
            caller, doc = step[1], world.docs[step[2]]
            status = client.get(f"/v1/documents/{doc.id}", headers=api.headers[caller]).status_code
            assert status == (200 if _admits(doc, caller) else 404), (caller, doc)
        elif kind == "set_acl" and step[1] in world.docs:
            doc, acl = world.docs[step[1]], step[2] or {"users": [], "groups": [], "public": True}
            response = client.patch(f"/v1/documents/{doc.id}/acl", json=acl, headers=api.headers[doc.tenant])
            assert response.status_code == 200, response.text
            doc.acl = acl
        elif kind == "delete" and step[1] in world.docs:
            doc = world.docs.pop(step[1])
            assert client.delete(f"/v1/documents/{doc.id}", headers=api.headers[doc.tenant]).status_code == 204


def _no_such_collection(response: Any, world: World, caller: Caller) -> bool:
    """Whether the caller's tenant has no collection of this name (404); otherwise the response is a 200."""
    if caller.tenant not in world.tenants:
        assert response.status_code == 404, response.text
        return True
    assert response.status_code == 200, response.text
    return False


PROPERTY = settings(max_examples=40, database=None, deadline=None, suppress_health_check=list(HealthCheck))


def _client(settings_: Settings, embedder: OnnxEmbedder) -> Iterator[Api]:
    with TestClient(create_app(settings_, embedder)) as client:
        yield Api(client)


@pytest.fixture
def sqlite_api(make_settings: Callable[..., Settings], embedder: OnnxEmbedder) -> Iterator[Api]:
    yield from _client(make_settings(auth={"enabled": True, "key_pepper": "p"}), embedder)


@pytest.fixture
def postgres_api(make_settings: Callable[..., Settings], embedder: OnnxEmbedder, postgres_url: str) -> Iterator[Api]:
    store = {"backend": "postgres", "postgres_url": postgres_url}
    yield from _client(make_settings(auth={"enabled": True, "key_pepper": "p"}, store=store), embedder)


@PROPERTY
@given(documents=docs, steps=ops)
def test_no_caller_ever_sees_a_chunk_it_may_not_sqlite(
    sqlite_api: Api, documents: list[tuple[str, dict[str, Any] | None]], steps: list[tuple[Any, ...]]
) -> None:
    _run(sqlite_api, documents, steps)


@PROPERTY
@given(documents=docs, steps=ops)
def test_no_caller_ever_sees_a_chunk_it_may_not_postgres(
    postgres_api: Api, documents: list[tuple[str, dict[str, Any] | None]], steps: list[tuple[Any, ...]]
) -> None:
    _run(postgres_api, documents, steps)
