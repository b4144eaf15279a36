"""The console's web application: the JSON API, the page, a body-size limit, no CORS
(the page and the API share one origin; nothing else should call it from a browser)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moderation.config import Settings
from moderation.console.api import api_router
from moderation.console.auth import Tokens
from moderation.console.pages import pages_router
from moderation.console.service import Console

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent


class BodyLimit:
    """413 for a request body over ``limit`` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(send, self.limit)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _too_large(send, self.limit)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"detail": "request body over {limit} bytes"}}'.encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(console: Console, settings: Settings) -> FastAPI:
    tokens = Tokens(settings.console.tokens)
    if not len(tokens):
        log.warning("no console tokens configured (MODERATION_CONSOLE__TOKENS): every "
                    "request will be refused")
    app = FastAPI(title="Moderation policy console",
                  description="Draft, backtest, apply and roll back moderation policies; "
                  "search recent uploads. Bearer tokens: viewer (read, backtest, search), "
                  "editor (also apply and roll back).", version="1")
    app.include_router(api_router(console, tokens))
    app.include_router(pages_router(console, tokens))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        return {"ok": True}

    app.add_middleware(BodyLimit, limit=settings.console.max_request_bytes)
    return app


def serve(settings: Settings, console: Console) -> None:
    """Run until SIGINT/SIGTERM (uvicorn's handlers); uvicorn logs the address it binds."""
    import uvicorn

    uvicorn.run(create_app(console, settings), host=settings.console.host,
                port=settings.console.port, log_config=None, access_log=False)
