"""Search-side SQL of the PostgreSQL store: metadata filters and Okapi BM25 over the postings table.

BM25 is computed as SQLite FTS5's ``bm25()`` computes it, so that both backends rank alike: k1 = 1.2, b = 0.75,
IDF = ln((N - n + 0.5) / (n + 0.5)) floored at 1e-6, a term's frequency weighted per column (title times
``title_weight``, body times 1), and a chunk's length counted over both columns. N, the average length and each
term's document frequency n are those of one index id (a collection's index version), never the whole table.
PostgreSQL's own ``ts_rank`` is not BM25 (no IDF, no length normalisation by the average) and ranks worse
(``bench/postgres_keyword.py`` measures both).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from psycopg.types.json import Jsonb

from ragserve.domain import Access, SearchFilters
from ragserve.errors import InvalidRequestError

_METADATA_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
BM25_K1 = 1.2
BM25_B = 0.75


def metadata_filter(filters: SearchFilters) -> tuple[str, list[object]]:
    """SQL ``AND ...`` conditions on document alias ``d``: a document value (or any element of a list value)
    must equal the filter value, or one of the filter's list; and the ACL must admit the filters' access
    (``acl_filter``). Containment (``@>``) lets the GIN index on
    ``documents.metadata`` answer them. Raises ``InvalidRequestError`` for a bad key or an empty list."""
    sql: list[str] = []
    params: list[object] = []
    for key, value in filters.conditions:
        if not _METADATA_KEY.match(key):
            raise InvalidRequestError(f"filter key {key!r} must be 1-64 letters, digits, '_' or '-'")
        values = value if isinstance(value, list) else [value]
        if not values:
            raise InvalidRequestError(f"filter {key!r} has an empty list")
        options: list[object] = []
        for v in values:
            options.extend((Jsonb({key: v}), Jsonb({key: [v]})))
        sql.append(" AND (" + " OR ".join("d.metadata @> %s" for _ in options) + ")")
        params.extend(options)
    access_sql, access_params = acl_filter(filters.access)
    return "".join(sql) + access_sql, params + access_params


def acl_filter(access: Access | None) -> tuple[str, list[object]]:
    """SQL ``AND ...`` condition on document alias ``d``: its ACL admits ``access`` (a document without an
    ACL, or a public one, admits every caller of its tenant). Empty for None or unrestricted access."""
    if access is None or access.unrestricted:
        return "", []
    options = ["NOT d.restricted"]
    params: list[object] = []
    if access.user is not None:
        options.append("d.acl->'users' ? %s")
        params.append(access.user)
    if access.groups:
        options.append("d.acl->'groups' ?| %s")
        params.append(list(access.groups))
    return " AND (" + " OR ".join(options) + ")", params


def bm25_query(
    index_id: str, terms: Sequence[str], k: int, filters: SearchFilters, title_weight: float
) -> tuple[str, list[object]]:
    """The statement and parameters of a BM25 search: up to ``k`` (chunk_id, score) rows, best first."""
    clause, filter_params = metadata_filter(filters)
    join = (
        f" JOIN chunks c ON c.id = s.chunk_id JOIN documents d ON d.id = c.document_id WHERE true{clause}"
        if filters
        else ""
    )
    sql = (
        "WITH totals AS ("
        "  SELECT chunk_count::float8 AS n, total_terms::float8 / greatest(chunk_count, 1) AS avgdl"
        "  FROM keyword_stats WHERE index_id = %s"
        "), matches AS ("
        "  SELECT p.chunk_id, p.chunk_terms, %s * p.title_tf + p.body_tf AS freq,"
        "         count(*) OVER (PARTITION BY p.term) AS df"
        "  FROM postings p WHERE p.index_id = %s AND p.term = ANY(%s)"
        "), scored AS ("
        "  SELECT m.chunk_id, sum("
        "    greatest(ln((t.n - m.df + 0.5) / (m.df + 0.5)), 1e-6)"
        f"   * m.freq * {BM25_K1 + 1} / (m.freq + {BM25_K1} * ({1 - BM25_B} + {BM25_B} * m.chunk_terms / t.avgdl))"
        "  ) AS score FROM matches m CROSS JOIN totals t GROUP BY m.chunk_id"
        ")"
        f" SELECT s.chunk_id, s.score FROM scored s{join} ORDER BY s.score DESC, s.chunk_id LIMIT %s"
    )
    return sql, [index_id, float(title_weight), index_id, sorted(set(terms)), *filter_params, k]
