"""Index versions of a collection: build one with other chunking, canary it, promote it behind the golden-set
gate, roll back, delete. ``ragserve index ...`` calls these."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, Field

from ragserve.api.deps import AdminPrincipal, AuditDep, ServiceDep, require
from ragserve.api.schemas import ErrorResponse
from ragserve.domain import IndexRoute, IndexVersion
from ragserve.index_lifecycle import GateResult, GoldenSet

router = APIRouter(prefix="/v1/collections/{name}", tags=["index versions"], dependencies=[Depends(require("admin"))])
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 404, 409, 422)}
MAX_GOLDEN_QUERIES = 10_000
MAX_GRADE = 100  # nDCG's gain 2^grade - 1 must fit a float: a grade of 1024 made the promotion gate a 500


class IndexVersionPublic(BaseModel):
    version: int
    state: Literal["building", "ready", "failed"]
    max_tokens: int
    overlap_tokens: int
    model: str
    precision: str
    built_documents: int
    total_documents: int
    error: str | None
    created_at: datetime

    @classmethod
    def of(cls, v: IndexVersion) -> IndexVersionPublic:
        return cls(
            version=v.version,
            state=v.state.value,
            max_tokens=v.config.max_tokens,
            overlap_tokens=v.config.overlap_tokens,
            model=v.config.model,
            precision=v.config.precision,
            built_documents=v.built,
            total_documents=v.total,
            error=v.error,
            created_at=v.created_at,
        )


class IndexStatus(BaseModel):
    active: int
    canary: int | None
    canary_share: float
    previous: int | None
    versions: list[IndexVersionPublic]

    @classmethod
    def of(cls, route: IndexRoute, versions: list[IndexVersion]) -> IndexStatus:
        return cls(
            active=route.active.version,
            canary=None if route.canary is None else route.canary.version,
            canary_share=route.canary_share,
            previous=None if route.previous is None else route.previous.version,
            versions=[IndexVersionPublic.of(v) for v in versions],
        )


class CreateVersion(BaseModel):
    """Unset fields are copied from the active version."""

    max_tokens: int | None = Field(default=None, ge=16, le=512)
    overlap_tokens: int | None = Field(default=None, ge=0, le=256)
    model: str | None = Field(default=None, max_length=200)
    precision: Literal["f32", "f16", "int8", "binary"] | None = Field(
        default=None, description="how the vectors are searched: int8 and binary codes are rescored in f32"
    )


class CanaryRequest(BaseModel):
    version: int | None = Field(default=None, ge=1, description="None ends the canary")
    share: float = Field(default=0.0, ge=0.0, le=1.0, description="share of queries sent to the canary")


class PromoteRequest(BaseModel):
    version: int = Field(ge=1)
    force: bool = Field(default=False, description="promote even if the golden-set gate fails")


class GatePublic(BaseModel):
    active_ndcg_at_10: float | None
    candidate_ndcg_at_10: float | None
    margin: float
    queries: int
    passed: bool
    forced: bool

    @classmethod
    def of(cls, gate: GateResult) -> GatePublic:
        return cls(
            active_ndcg_at_10=gate.active_ndcg,
            candidate_ndcg_at_10=gate.candidate_ndcg,
            margin=gate.margin,
            queries=gate.queries,
            passed=gate.passed,
            forced=gate.forced,
        )


class PromoteResponse(BaseModel):
    gate: GatePublic
    index: IndexStatus


class GoldenSetBody(BaseModel):
    """Queries by id and graded judgements: query id → document external id → grade (> 0 is relevant)."""

    queries: dict[str, str] = Field(min_length=1, max_length=MAX_GOLDEN_QUERIES)
    qrels: dict[str, dict[str, Annotated[int, Field(ge=-MAX_GRADE, le=MAX_GRADE)]]] = Field(
        min_length=1, max_length=MAX_GOLDEN_QUERIES
    )


async def _status(service: ServiceDep, name: str, tenant: str) -> IndexStatus:
    route, versions = await service.lifecycle.describe(name, tenant)
    return IndexStatus.of(route, versions)


@router.get("/index", response_model=IndexStatus, responses=_ERRORS)
async def get_index(name: str, service: ServiceDep, principal: AdminPrincipal) -> IndexStatus:
    """The collection's index versions, with build progress, and where its queries go."""
    return await _status(service, name, principal.tenant)


@router.post(
    "/index/versions", response_model=IndexVersionPublic, status_code=status.HTTP_202_ACCEPTED, responses=_ERRORS
)
async def create_version(
    name: str, body: CreateVersion, service: ServiceDep, principal: AdminPrincipal, audit: AuditDep
) -> IndexVersionPublic:
    """Start building a new version from the stored documents (chunk text and cached embeddings are reused);
    poll ``GET /index`` for progress. Ingestion keeps it current while it builds."""
    version = await service.lifecycle.create(
        name, body.max_tokens, body.overlap_tokens, body.model, principal.tenant, precision=body.precision
    )
    config = version.config
    await audit.record(
        "index.create",
        f"collection:{name}",
        version=version.version,
        max_tokens=config.max_tokens,
        overlap_tokens=config.overlap_tokens,
        model=config.model,
        precision=config.precision,
    )
    return IndexVersionPublic.of(version)


@router.put("/index/canary", response_model=IndexStatus, responses=_ERRORS)
async def set_canary(
    name: str, body: CanaryRequest, service: ServiceDep, principal: AdminPrincipal, audit: AuditDep
) -> IndexStatus:
    """Send a share of the queries to a ready version; ``ragserve_index_queries_total`` counts each version."""
    await service.lifecycle.set_canary(name, body.version, body.share, principal.tenant)
    await audit.record("index.canary", f"collection:{name}", version=body.version, share=body.share)
    return await _status(service, name, principal.tenant)


@router.post("/index/promote", response_model=PromoteResponse, responses=_ERRORS)
async def promote(
    name: str, body: PromoteRequest, service: ServiceDep, principal: AdminPrincipal, audit: AuditDep
) -> PromoteResponse:
    """Make a ready version the active one, in one step. Refused (409) when its nDCG@10 on the collection's
    golden set is more than the configured margin below the active version's, unless ``force``."""
    gate = await service.lifecycle.promote(name, body.version, body.force, principal.tenant)
    await audit.record(
        "index.promote", f"collection:{name}", version=body.version, forced=gate.forced, gate_passed=gate.passed
    )
    return PromoteResponse(gate=GatePublic.of(gate), index=await _status(service, name, principal.tenant))


@router.post("/index/rollback", response_model=IndexStatus, responses=_ERRORS)
async def rollback(name: str, service: ServiceDep, principal: AdminPrincipal, audit: AuditDep) -> IndexStatus:
    """Make the previously active version active again."""
    await service.lifecycle.rollback(name, principal.tenant)
    status = await _status(service, name, principal.tenant)
    await audit.record("index.rollback", f"collection:{name}", version=status.active)
    return status


@router.delete("/index/versions/{version}", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
async def delete_version(
    name: str, version: int, service: ServiceDep, principal: AdminPrincipal, audit: AuditDep
) -> Response:
    """Drop a version no query is routed to (its build is stopped first)."""
    await service.lifecycle.delete(name, version, principal.tenant)
    await audit.record("index.delete", f"collection:{name}", version=version)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/golden", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
async def put_golden_set(
    name: str, body: GoldenSetBody, service: ServiceDep, principal: AdminPrincipal, audit: AuditDep
) -> Response:
    """Replace the golden set promotions of this collection are evaluated on."""
    await service.lifecycle.set_golden_set(name, GoldenSet(body.queries, body.qrels), principal.tenant)
    await audit.record("index.golden.update", f"collection:{name}", queries=len(body.queries))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
