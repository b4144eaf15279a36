"""Who is calling: bearer tokens (from a Secret) with a role, viewer or editor.

The API takes ``Authorization: Bearer <token>``; the web page keeps the same token in an
HttpOnly, SameSite=Strict cookie after its login form (so forms cannot be posted from other
sites). No token: 401; a valid token with too small a role: 403.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastapi import HTTPException, Request

from moderation.config import ConsoleToken

COOKIE = "moderation_console"
ROLES = {"viewer": 0, "editor": 1}


@dataclass(frozen=True)
class Caller:
    name: str
    role: str

    @property
    def author(self) -> str:
        """How the audit trail names a console write."""
        return f"console:{self.name}"

    def may(self, role: str) -> bool:
        return ROLES[self.role] >= ROLES[role]


class Tokens:
    def __init__(self, tokens: Sequence[ConsoleToken]) -> None:
        self._tokens = [(t.token.get_secret_value().encode(), Caller(t.name, t.role))
                        for t in tokens]

    def __len__(self) -> int:
        return len(self._tokens)

    def caller(self, token: str) -> Caller | None:
        given = token.encode()
        found = None
        for secret, caller in self._tokens:  # compare with every token: no timing hint
            if hmac.compare_digest(secret, given):
                found = caller
        return found


def presented_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE)


def requires(tokens: Tokens, role: str) -> Callable[[Request], Caller]:
    """A FastAPI dependency: the caller, or 401/403."""
    def dependency(request: Request) -> Caller:
        token = presented_token(request)
        caller = tokens.caller(token) if token else None
        if caller is None:
            raise HTTPException(401, "a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        if not caller.may(role):
            raise HTTPException(403, f"this needs the {role} role; token '{caller.name}' is "
                                f"a {caller.role}")
        return caller
    return dependency
