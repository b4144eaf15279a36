"""The console's HTTP API on real Redis and Triton: tokens and roles, validation errors,
backtest, search, thumbnails, apply and rollback in the audit trail, request limits."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from moderation.console.app import create_app
from moderation.contract.events import Upload
from moderation.core.batching import decide
from moderation.core.policy import parse_set
from moderation.core.scoring import compile_policies
from tests.console.conftest import TOKENS, Scene

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name][1]}"}


@pytest.fixture(scope="module")
def client(scene: Scene) -> Iterator[TestClient]:
    with TestClient(create_app(scene.console, scene.settings)) as c:
        yield c


def current_draft(client: TestClient) -> list[dict[str, Any]]:
    return client.get("/api/policies", headers=auth("vera")).json()["policies"]


def with_threshold(draft: list[dict[str, Any]], name: str, value: float) -> list[dict[str, Any]]:
    return [{**p, "threshold": value} if p["name"] == name else p for p in draft]


def test_no_token_is_401_and_the_wrong_role_is_403(client: TestClient) -> None:
    r = client.get("/api/policies")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/policies", headers={"Authorization": "Bearer nope"}
                      ).status_code == 401
    assert client.get("/api/policies", headers=auth("vera")).status_code == 200
    draft = current_draft(client)
    r = client.post("/api/policies/apply", json={"policies": draft}, headers=auth("vera"))
    assert r.status_code == 403 and "editor" in r.json()["detail"]
    r = client.post("/api/policies/rollback", json={"version": 1}, headers=auth("vera"))
    assert r.status_code == 403
    r = client.post("/api/policies/backtest", json={"policies": draft}, headers=auth("vera"))
    assert r.status_code == 200  # viewers may backtest


def test_a_bad_draft_is_422_naming_the_policy_and_field(client: TestClient) -> None:
    draft = with_threshold(current_draft(client), "weapons", 2.0)
    r = client.post("/api/policies/validate", json={"policies": draft}, headers=auth("vera"))
    assert r.status_code == 422
    assert "policy 'weapons'" in r.json()["detail"] and "field 'threshold'" in r.json()["detail"]
    twice = [*current_draft(client), current_draft(client)[0]]
    r = client.post("/api/policies/apply", json={"policies": twice}, headers=auth("ed"))
    assert r.status_code == 422 and "field 'name': already defined" in r.json()["detail"]
    r = client.post("/api/policies/backtest", json={"policies": "weapons"}, headers=auth("ed"))
    assert r.status_code == 422  # not a list: FastAPI's own validation


def test_backtest_predicts_what_the_worker_scoring_decides(client: TestClient, scene: Scene
                                                          ) -> None:
    draft = with_threshold(current_draft(client), "weapons", 0.2)
    r = client.post("/api/policies/backtest", json={"policies": draft}, headers=auth("vera"))
    report = r.json()
    assert report["uploads"] == len(scene.samples)
    stored = scene.console.current()
    ids = sorted(scene.samples)
    emb = np.stack([scene.samples[u] for u in ids]).astype(np.float32)  # as the index keeps it
    now = worker_flags(ids, emb, stored.matrix())
    then = worker_flags(ids, emb, compile_policies(parse_set(draft),
                                                   stored.embeddings))
    assert report["flagged_now"] == len(now) and report["flagged_draft"] == len(then)
    assert {u["upload_id"] for u in report["newly_flagged"]} == then - now != set()
    assert {u["upload_id"] for u in report["no_longer_flagged"]} == now - then
    weapons = next(p for p in report["policies"] if p["policy"] == "weapons")
    assert weapons["change"] == "changed" and weapons["threshold_draft"] == 0.2
    at = {round(t, 2): v for t, v in weapons["sweep"]}
    assert at[0.2] == pytest.approx(weapons["rate_draft"], abs=1e-6)
    assert at[0.3] <= at[0.2] <= at[0.1]
    last = client.post("/api/policies/backtest", json={"policies": draft, "last": 5},
                       headers=auth("vera")).json()
    assert last["uploads"] == 5


def worker_flags(ids: list[str], emb: np.ndarray, matrix: Any) -> set[str]:
    started = datetime.now(UTC)
    uploads = [(Upload(upload_id=u, image=b"", image_url=None, created_at=None), started)
               for u in ids]
    return {d.upload_id for d in decide(uploads, emb, matrix, 1, "m") if d.decision == "flag"}


def test_search_by_text_and_by_upload(client: TestClient) -> None:
    hits = client.get("/api/search", params={"q": "a pistol or handgun", "k": 3},
                      headers=auth("vera")).json()
    assert len(hits) == 3 and "pistol" in [h["upload_id"] for h in hits]
    assert hits[0]["similarity"] >= hits[1]["similarity"] >= hits[2]["similarity"]
    like = client.get("/api/search/similar/dog", params={"k": 2}, headers=auth("vera")).json()
    assert like[0]["upload_id"] == "dog" and like[0]["similarity"] > 0.99
    assert client.get("/api/search/similar/nobody", headers=auth("vera")).status_code == 404


def test_thumbnails_are_small_webp_images(client: TestClient) -> None:
    r = client.get("/api/thumbnails/pistol", headers=auth("vera"))
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "WEBP" and max(img.size) <= 96
    assert client.get("/api/thumbnails/nobody", headers=auth("vera")).status_code == 404


def test_apply_and_rollback_are_audited_with_the_token_name(client: TestClient) -> None:
    before = client.get("/api/policies", headers=auth("vera")).json()["version"]
    draft = current_draft(client)
    old = next(p["threshold"] for p in draft if p["name"] == "alcohol")
    stricter = round(min(0.95, old + 0.1), 3)
    draft = with_threshold(draft, "alcohol", stricter)
    r = client.post("/api/policies/apply", json={"policies": draft, "message": "stricter"},
                    headers=auth("ed"))
    assert r.status_code == 200
    applied = r.json()["version"]
    assert client.get("/api/policies", headers=auth("vera")).json()["version"] == applied
    r = client.post("/api/policies/rollback", json={"version": before, "message": "undo"},
                    headers=auth("ed"))
    restored = r.json()["version"]
    history = client.get("/api/policies/history", headers=auth("vera")).json()
    assert [(h["version"], h["author"], h["message"], h["rollback_of"], h["current"])
            for h in history[:2]] == [
        (restored, "console:ed", "undo", before, True),
        (applied, "console:ed", "stricter", None, False)]
    now = client.get("/api/policies", headers=auth("vera")).json()
    alcohol = next(p for p in now["policies"] if p["name"] == "alcohol")
    assert alcohol["threshold"] == old
    # the trail has no write routes: nothing can edit or delete it
    for method in ("put", "patch", "delete"):
        assert getattr(client, method)("/api/policies/history",
                                       headers=auth("ed")).status_code == 405


def test_oversized_bodies_are_refused_and_there_is_no_cors(client: TestClient) -> None:
    big = {"policies": [{"name": "x", "threshold": 0.1, "prompts": ["a" * 70_000]}]}
    r = client.post("/api/policies/validate", json=big, headers=auth("vera"))
    assert r.status_code == 413
    r = client.options("/api/policies", headers={"Origin": "https://evil.example",
                                                 "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in r.headers
    docs = client.get("/openapi.json").json()
    assert "/api/policies/backtest" in docs["paths"] and client.get("/docs").status_code == 200
