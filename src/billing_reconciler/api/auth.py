"""Who may call the host API: bearer tokens in two scopes (DESIGN §19).

`BILLING_API_TOKENS` grants the app scope, `BILLING_ADMIN_TOKENS` the admin scope (which is
also allowed on app routes). Each is comma-separated so a token rotates without downtime
(add the new one, deploy the caller, remove the old one), and each may come from a file
(`BILLING_API_TOKENS_FILE`), like the other secrets. A presented token is compared in
constant time against every configured token, so neither the match nor its position leaks
through timing; tokens are never logged or echoed.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from billing_reconciler.api.errors import ApiError
from billing_reconciler.config import ConfigError, Secret

APP_TOKENS_VAR: Final = "BILLING_API_TOKENS"
ADMIN_TOKENS_VAR: Final = "BILLING_ADMIN_TOKENS"


class Scope(StrEnum):
    APP = "app"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class ApiTokens:
    """The configured tokens; no tokens at all means every API call answers 401."""

    app: tuple[Secret, ...] = ()
    admin: tuple[Secret, ...] = ()

    def scope_of(self, presented: str) -> Scope | None:
        """The scope `presented` grants, or None; constant time in the matching token."""
        given = presented.encode("utf-8")
        admin = _matches_any(given, self.admin)
        app = _matches_any(given, self.app)
        if admin:
            return Scope.ADMIN
        return Scope.APP if app else None

    def __bool__(self) -> bool:
        return bool(self.app or self.admin)


def _matches_any(given: bytes, tokens: tuple[Secret, ...]) -> bool:
    matched = False
    for token in tokens:
        # No early exit: every configured token is compared whatever the outcome.
        matched |= hmac.compare_digest(given, token.reveal().encode("utf-8"))
    return matched


def _tokens(env: Mapping[str, str], name: str) -> tuple[Secret, ...]:
    value, path = env.get(name, ""), env.get(f"{name}_FILE", "")
    if value and path:
        raise ConfigError(f"set {name} or {name}_FILE, not both")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    return tuple(Secret(t) for t in re.split(r"[,\s]+", value) if t)


def load_api_tokens(env: Mapping[str, str] | None = None) -> ApiTokens:
    """The API tokens from `env` (default: `os.environ`)."""
    source = os.environ if env is None else env
    return ApiTokens(app=_tokens(source, APP_TOKENS_VAR), admin=_tokens(source, ADMIN_TOKENS_VAR))


_bearer = HTTPBearer(
    auto_error=False,
    description="A token of BILLING_API_TOKENS or "
    "BILLING_ADMIN_TOKENS (admin routes need the latter).",
)


def _unauthenticated() -> ApiError:
    return ApiError(
        401, "unauthenticated", "a valid bearer token is required", {"header": "Authorization"}
    )


class Requires:
    """A dependency admitting a request whose token grants `scope` (admin admits both).

    `ApiRoute` also calls `authorize` before anything else of the request (its body, its
    path parameters) is looked at, so a caller without a valid token learns nothing but 401
    (or 403 for an app token on an admin route)."""

    def __init__(self, tokens: ApiTokens, scope: Scope) -> None:
        self.tokens = tokens
        self.scope = scope

    def authorize(self, authorization: str | None) -> Scope:
        """The scope granted by an `Authorization` header value, else an `ApiError`."""
        scheme, _, presented = (authorization or "").partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            raise _unauthenticated()
        granted = self.tokens.scope_of(presented)
        if granted is None:
            raise _unauthenticated()
        if self.scope is Scope.ADMIN and granted is not Scope.ADMIN:
            raise ApiError(
                403, "forbidden", "this route needs an admin token", {"scope": Scope.ADMIN.value}
            )
        return granted

    async def __call__(
        self,
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
    ) -> Scope:
        # Async (CPU only, no I/O): FastAPI runs a sync dependency on a worker thread, a hop
        # per request of every route.
        del credentials
        return self.authorize(request.headers.get("Authorization"))


def requires(tokens: ApiTokens, scope: Scope) -> Requires:
    """A dependency admitting a request whose token grants `scope` (admin admits both)."""
    return Requires(tokens, scope)
