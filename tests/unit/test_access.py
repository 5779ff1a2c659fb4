"""Who may read what: ACLs, a caller's access and the answer cache scope it implies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ragserve.domain import ANONYMOUS, Access, Acl, Document, DocumentStatus, Principal, SearchFilters
from ragserve.errors import InvalidRequestError


def _document(tenant: str, acl: Acl | None) -> Document:
    now = datetime.now(UTC)
    return Document("d", "c", None, None, None, {}, DocumentStatus.READY, None, 0, now, now, tenant, acl)


def test_acl_normalises_and_rejects_bad_names() -> None:
    assert Acl.of(["b", "a", "a"], ["g"], public=False) == Acl(("a", "b"), ("g",), False)
    with pytest.raises(InvalidRequestError):
        Acl.of([""], [], public=False)
    with pytest.raises(InvalidRequestError):
        Acl.of([], ["bad\nname"], public=False)
    with pytest.raises(InvalidRequestError):
        Acl.of([f"u{i}" for i in range(1001)], [], public=False)


@pytest.mark.parametrize(
    ("acl", "access", "readable"),
    [
        (None, Access("t"), True),
        (Acl.of([], [], public=True), Access("t"), True),
        (Acl.of(["alice"], [], public=False), Access("t", user="alice"), True),
        (Acl.of(["alice"], [], public=False), Access("t", user="bob"), False),
        (Acl.of(["alice"], [], public=False), Access("t"), False),
        (Acl.of([], ["hr"], public=False), Access("t", groups=("eng", "hr")), True),
        (Acl.of([], ["hr"], public=False), Access("t", groups=("eng",)), False),
        (Acl.of([], ["hr"], public=False), Access("t", unrestricted=True), True),
    ],
)
def test_can_read_within_a_tenant(acl: Acl | None, access: Access, readable: bool) -> None:
    assert access.can_read(_document("t", acl)) is readable


def test_nothing_crosses_tenants() -> None:
    assert not Access("other", unrestricted=True).can_read(_document("t", None))
    assert not Access("other").can_read(_document("t", Acl.of([], [], public=True)))


def test_principal_access_and_cache_scope() -> None:
    reader = Principal("key:1", "acme", frozenset({"query"}), groups=("hr", "eng", "hr"), user="alice")
    assert reader.access == Access("acme", "alice", ("eng", "hr"), unrestricted=False)
    admin = Principal("key:2", "acme", frozenset({"query", "admin"}))
    assert admin.access.unrestricted
    assert ANONYMOUS.access.unrestricted  # authentication off: the local operator
    same_rights = Principal("key:3", "acme", frozenset({"query"}), groups=("eng", "hr"), user="alice")
    assert reader.access.fingerprint == same_rights.access.fingerprint
    other_user = Principal("key:4", "acme", frozenset({"query"}), groups=("eng", "hr"), user="bob")
    other_tenant = Principal("key:5", "globex", frozenset({"query"}), groups=("eng", "hr"), user="alice")
    fingerprints = {p.access.fingerprint for p in (reader, admin, other_user, other_tenant)}
    assert len(fingerprints) == 4


def test_filters_are_truthy_only_when_they_restrict() -> None:
    assert not SearchFilters()
    assert not SearchFilters(access=Access("t", unrestricted=True))
    assert SearchFilters(access=Access("t", user="u"))
    assert SearchFilters.from_mapping({"k": "v"}).with_access(None)
