"""SQL pieces the SQLite stores share: document rows, the ACL and metadata-filter conditions of a search,
batches of ids under SQLite's bound-variable limit."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from typing import TypeVar

from ragserve.domain import Access, Acl, Document, DocumentStatus, SearchFilters
from ragserve.errors import InvalidRequestError
from ragserve.stores.job_records import acl_from_json, acl_to_json
from ragserve.stores.sqlite_db import parse_time

T = TypeVar("T")

_METADATA_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
SQL_VARIABLES_PER_QUERY = 900
DOCUMENT_COLUMNS = (
    "d.id, c.name, d.external_id, d.title, d.source, d.metadata, d.status, d.content_hash, d.chunk_count, "
    "d.created_at, d.updated_at, c.tenant, d.acl"
)
FROM_DOCUMENTS = "FROM documents d JOIN collections c ON c.id = d.collection_id"


def document_from_row(row: sqlite3.Row | tuple[object, ...]) -> Document:
    return Document(
        id=str(row[0]),
        collection=str(row[1]),
        external_id=None if row[2] is None else str(row[2]),
        title=None if row[3] is None else str(row[3]),
        source=None if row[4] is None else str(row[4]),
        metadata=json.loads(str(row[5])),
        status=DocumentStatus(str(row[6])),
        content_hash=None if row[7] is None else str(row[7]),
        chunk_count=int(str(row[8])),
        created_at=parse_time(str(row[9])),
        updated_at=parse_time(str(row[10])),
        tenant=str(row[11]),
        acl=acl_from_json(row[12]),
    )


def acl_text(acl: Acl | None) -> str | None:
    data = acl_to_json(acl)
    return None if data is None else json.dumps(data)


def restricted_flag(acl: Acl | None) -> int:
    """1 when the ACL keeps some of the tenant's callers out: what the ACL condition of a search must check."""
    return int(acl is not None and not acl.public)


def acl_clause(access: Access | None) -> tuple[str, list[object]]:
    """SQL ``AND ...`` condition on document alias ``d``: its ACL admits ``access`` (a document without an
    ACL, or a public one, admits every caller of its tenant). Empty for None or unrestricted access."""
    if access is None or access.unrestricted:
        return "", []
    options = ["d.restricted = 0"]
    params: list[object] = []
    if access.user is not None:
        options.append("EXISTS (SELECT 1 FROM json_each(d.acl, '$.users') AS u WHERE u.value = ?)")
        params.append(access.user)
    if access.groups:
        marks = ", ".join("?" for _ in access.groups)
        options.append(f"EXISTS (SELECT 1 FROM json_each(d.acl, '$.groups') AS g WHERE g.value IN ({marks}))")
        params.extend(access.groups)
    return " AND (" + " OR ".join(options) + ")", params


def filter_clause(filters: SearchFilters) -> tuple[str, list[object]]:
    """SQL ``AND ...`` conditions on document alias ``d``: a document value (or any element of a list value)
    must equal the filter value, or one of the filter's list; and the document's ACL must admit the filters'
    access. Keys are validated, values bound."""
    sql: list[str] = []
    params: list[object] = []
    for key, value in filters.conditions:
        if not _METADATA_KEY.match(key):
            raise InvalidRequestError(f"filter key {key!r} must be 1-64 letters, digits, '_' or '-'")
        values = value if isinstance(value, list) else [value]
        if not values:
            raise InvalidRequestError(f"filter {key!r} has an empty list")
        marks = ", ".join("?" for _ in values)
        sql.append(f" AND EXISTS (SELECT 1 FROM json_each(d.metadata, ?) AS m WHERE m.value IN ({marks}))")
        params.append(f'$."{key}"')
        params.extend(values)
    access_sql, access_params = acl_clause(filters.access)
    return "".join(sql) + access_sql, params + access_params


def id_batches(ids: Sequence[T]) -> list[Sequence[T]]:
    """``ids`` in slices that each fit one statement's bound variables."""
    step = SQL_VARIABLES_PER_QUERY
    return [ids[i : i + step] for i in range(0, len(ids), step)]


def live_index_ids(conn: sqlite3.Connection, collection_id: str) -> set[str]:
    rows = conn.execute(
        "SELECT index_id FROM index_versions WHERE collection_id = ? AND state IN ('building', 'ready')",
        (collection_id,),
    )
    return {str(r[0]) for r in rows}
