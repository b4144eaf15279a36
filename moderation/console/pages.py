"""The console's web page: server-rendered HTML (Jinja2) over the same Console as the API,
with a little plain JavaScript for the threshold sliders. Login keeps the bearer token in
an HttpOnly, SameSite=Strict cookie."""

# no `from __future__ import annotations`: FastAPI resolves the route signatures'
# annotations at runtime, and they name aliases local to the router factory
import json
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData

from moderation.console.auth import COOKIE, Caller, Tokens, presented_token
from moderation.console.service import Console
from moderation.contract.errors import PolicyError
from moderation.core.policy import parse_set
from moderation.core.policy_diff import diff_sets
from moderation.edges.policy_store import StoredPolicySet, StoreError

FIELDS = ("name", "description", "action", "threshold", "counter_margin", "prompts",
          "counter_prompts")
templates = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")
templates.env.filters["pct"] = lambda v: "-" if v is None else f"{100 * v:.1f}%"
templates.env.filters["num"] = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"
templates.env.filters["tojson_attr"] = lambda v: json.dumps(v, separators=(",", ":"))


def draft_from_form(form: FormData) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The policies the form describes (for validation), and the form's own values (to
    show again). Lines of a prompt box are prompts; a ticked 'remove' drops the policy."""
    shown, items = [], []
    i = 0
    while f"p{i}-name" in form:
        raw: dict[str, Any] = {f: str(form.get(f"p{i}-{f}", "")) for f in FIELDS}
        raw["remove"] = bool(form.get(f"p{i}-remove"))
        shown.append(raw)
        i += 1
        lines = {k: [t.strip() for t in raw[k].splitlines() if t.strip()]
                 for k in ("prompts", "counter_prompts")}
        if raw["remove"] or not (raw["name"].strip() or lines["prompts"]):
            continue  # removed, or the blank new-policy card left empty
        item: dict[str, Any] = {"name": raw["name"].strip(), "action": raw["action"],
                                "threshold": raw["threshold"].strip(), **lines}
        if raw["description"].strip():
            item["description"] = raw["description"].strip()
        if raw["counter_margin"].strip():
            item["counter_margin"] = raw["counter_margin"].strip()
        items.append(item)
    return items, shown


def form_rows(policies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [{**{f: p.get(f, "") for f in FIELDS},
             "prompts": "\n".join(p.get("prompts", ())),
             "counter_prompts": "\n".join(p.get("counter_prompts", ())),
             "remove": False} for p in policies]
    blank = {f: "" for f in FIELDS} | {"action": "flag", "counter_margin": "0.05",
                                        "remove": False, "blank": True}
    return [*rows, blank]


def pages_router(console: Console, tokens: Tokens) -> APIRouter:
    r = APIRouter(include_in_schema=False)

    def caller_or_login(request: Request) -> Caller:
        token = presented_token(request)
        caller = tokens.caller(token) if token else None
        if caller is None:
            raise HTTPException(303, headers={"Location": "/login"})
        return caller

    page_caller = Annotated[Caller, Depends(caller_or_login)]

    def render(request: Request, name: str, caller: Caller | None, status: int = 200,
               **ctx: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"caller": caller, **ctx},
                                          status_code=status)

    def policies_page(request: Request, caller: Caller, rows: list[dict[str, Any]] | None,
                      status: int = 200, current: StoredPolicySet | None = None, **ctx: Any
                      ) -> HTMLResponse:
        current = current or console.current()
        if rows is None:
            rows = form_rows([p.model_dump(mode="json") for p in current.policies.policies])
        elif not any(r.get("blank") for r in rows):
            rows = rows + form_rows([])[-1:]
        opened = {c.name for c in ctx.get("changes") or ()}
        return render(request, "policies.html", caller, status, current=current, rows=rows,
                      opened=opened, open_all=status == 422, **ctx)

    @r.get("/login")
    def login_form(request: Request) -> HTMLResponse:
        return render(request, "login.html", None)

    @r.post("/login")
    def login(request: Request, token: Annotated[str, Form(max_length=500)]) -> Response:
        if tokens.caller(token.strip()) is None:
            return render(request, "login.html", None, 401, error="That token is not valid.")
        response = RedirectResponse("/", 303)
        response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    @r.post("/logout")
    def logout() -> Response:
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE)
        return response

    @r.get("/")
    def home(request: Request, caller: page_caller) -> HTMLResponse:
        return policies_page(request, caller, None, recent=console.recent(12))

    @r.post("/draft")
    async def draft(request: Request, caller: page_caller) -> HTMLResponse:
        form = await request.form()
        items, rows = draft_from_form(form)
        do = str(form.get("do", "backtest"))
        message = str(form.get("message", ""))[:500]
        try:
            policies = parse_set(items)
        except PolicyError as exc:
            return policies_page(request, caller, rows, 422, error=str(exc), message=message)
        if do == "apply":
            if not caller.may("editor"):
                return policies_page(request, caller, rows, 403, message=message,
                                     error=f"Applying needs the editor role; you are a "
                                     f"{caller.role}.")
            version = console.apply(policies, caller.author, message)
            return policies_page(request, caller, None, notice=f"Applied as version {version}."
                                 " Workers switch to it within seconds.")
        current = console.current()
        changes = diff_sets(current.policies, policies)
        report = console.backtest(policies, current=current) if do == "backtest" else None
        return policies_page(request, caller, rows, current=current, changes=changes,
                             report=report, message=message)

    @r.get("/history")
    def history(request: Request, caller: page_caller) -> HTMLResponse:
        entries = console.history()
        sets: dict[int, Any] = {}

        def policies(version: int) -> Any:
            if version not in sets:
                sets[version] = console.version(version).policies
            return sets[version]

        for e in entries:
            e["changes"] = None
        for newer, older in pairwise(entries[:21]):  # diffs for the latest 20
            try:
                newer["changes"] = diff_sets(policies(older["version"]),
                                             policies(newer["version"]))
            except StoreError:
                newer["changes"] = None
        return render(request, "history.html", caller, entries=entries)

    @r.post("/rollback")
    def rollback(request: Request, caller: page_caller,
                 version: Annotated[int, Form(ge=1)],
                 message: Annotated[str, Form(max_length=500)] = "") -> Response:
        if not caller.may("editor"):
            raise HTTPException(403, "rolling back needs the editor role")
        new = console.rollback(version, caller.author, message)
        return RedirectResponse(f"/history?rolled={new}&to={version}", 303)

    @r.get("/search")
    def search(request: Request, caller: page_caller, q: str = "", like: str = ""
               ) -> HTMLResponse:
        hits: list[dict[str, Any]] | None = None
        if like:
            hits = console.search_similar(like, 36) or []
        elif q.strip():
            hits = console.search_text(q.strip()[:500], 36)
        return render(request, "search.html", caller, q=q, like=like, hits=hits,
                      quote=quote)

    return r
