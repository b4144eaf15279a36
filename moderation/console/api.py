"""The console's JSON API under /api (OpenAPI at /docs). Viewers read, backtest and search;
editors also apply and roll back. Every write is in the policy history with the token's
name; nothing here edits or deletes history."""

# no `from __future__ import annotations`: FastAPI resolves the route signatures'
# annotations at runtime, and they name aliases local to the router factory
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from moderation.console.auth import Caller, Tokens, requires
from moderation.console.service import Console
from moderation.contract.errors import PolicyError
from moderation.core.policy import PolicySet, parse_set
from moderation.edges.policy_store import StoreError


class Draft(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policies: list[Any] = Field(description="the whole draft set: policy objects as in the "
                                "YAML files (name, prompts, threshold, ...)")


class BacktestRequest(Draft):
    last: int | None = Field(None, ge=0, description="only the last N recent uploads")
    since_s: float | None = Field(None, gt=0, description="only uploads of the last seconds")


class ApplyRequest(Draft):
    message: str = Field("", max_length=500, description="why, for the history")


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    message: str = Field("", max_length=500)


def parse_draft(console: Console, draft: Draft) -> PolicySet:
    try:
        return parse_set(draft.policies)
    except PolicyError as exc:
        raise HTTPException(422, str(exc)) from exc


def stored_json(console: Console, version: int | None = None) -> dict[str, Any]:
    try:
        s = console.current() if version is None else console.version(version)
    except StoreError as exc:
        raise HTTPException(404, str(exc)) from exc
    return {"version": s.version, "model": s.model,
            "policies": [p.model_dump(mode="json") for p in s.policies.policies]}


def api_router(console: Console, tokens: Tokens) -> APIRouter:
    viewer = Annotated[Caller, Depends(requires(tokens, "viewer"))]
    editor = Annotated[Caller, Depends(requires(tokens, "editor"))]
    r = APIRouter(prefix="/api")

    @r.get("/policies", summary="The current policy set")
    def current(_: viewer) -> dict[str, Any]:
        return stored_json(console)

    @r.get("/policies/versions/{version}", summary="One applied version's set")
    def version(version: int, _: viewer) -> dict[str, Any]:
        return stored_json(console, version)

    @r.get("/policies/history", summary="Every applied version, newest first")
    def history(_: viewer) -> list[dict[str, Any]]:
        return console.history()

    @r.post("/policies/validate", summary="Validate a draft as `policies validate` does")
    def validate(body: Draft, _: viewer) -> dict[str, Any]:
        return {"ok": True, "policies": list(parse_draft(console, body).names)}

    @r.post("/policies/diff", summary="A draft against the current set")
    def diff(body: Draft, _: viewer) -> list[dict[str, Any]]:
        return console.diff(parse_draft(console, body))

    @r.post("/policies/backtest", summary="What a draft would decide on recent uploads")
    def backtest(body: BacktestRequest, _: viewer) -> dict[str, Any]:
        return console.backtest(parse_draft(console, body), body.last, body.since_s)

    @r.post("/policies/apply", summary="Make a draft the current set (editor)")
    def apply(body: ApplyRequest, caller: editor) -> dict[str, Any]:
        version = console.apply(parse_draft(console, body), caller.author, body.message)
        return {"version": version, "author": caller.author}

    @r.post("/policies/rollback", summary="Make an earlier version current again (editor)")
    def rollback(body: RollbackRequest, caller: editor) -> dict[str, Any]:
        try:
            version = console.rollback(body.version, caller.author, body.message)
        except StoreError as exc:
            raise HTTPException(404, str(exc)) from exc
        return {"version": version, "restores": body.version, "author": caller.author}

    @r.get("/recent", summary="The latest decided uploads")
    def recent(_: viewer, limit: Annotated[int, Query(ge=1, le=1000)] = 50
               ) -> list[dict[str, Any]]:
        return console.recent(limit)

    @r.get("/search", summary="Recent uploads nearest to a text")
    def search(_: viewer, q: Annotated[str, Query(min_length=1, max_length=500)],
               k: Annotated[int, Query(ge=1, le=200)] = 24) -> list[dict[str, Any]]:
        return console.search_text(q, k)

    @r.get("/search/similar/{upload_id}", summary="Recent uploads similar to one of them")
    def similar(upload_id: str, _: viewer, k: Annotated[int, Query(ge=1, le=200)] = 24
                ) -> list[dict[str, Any]]:
        hits = console.search_similar(upload_id, k)
        if hits is None:
            raise HTTPException(404, f"upload {upload_id!r} is not in the recent index")
        return hits

    @r.get("/thumbnails/{upload_id}", summary="An upload's thumbnail (WebP)",
           response_class=Response)
    def thumbnail(upload_id: str, _: viewer) -> Response:
        data = console.thumbnail(upload_id)
        if data is None:
            raise HTTPException(404, f"no thumbnail for {upload_id!r}")
        return Response(data, media_type="image/webp",
                        headers={"Cache-Control": "private, max-age=3600"})

    return r
