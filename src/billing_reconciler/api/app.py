"""The host API as one router, for `runtime.app.create_app` to include (DESIGN §19)."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Depends

from billing_reconciler.api.accounts import accounts_router, admin_accounts_router
from billing_reconciler.api.auth import ApiTokens, Scope, requires
from billing_reconciler.api.catalog import catalog_router
from billing_reconciler.api.context import ApiContext
from billing_reconciler.api.errors import ApiError, invalid
from billing_reconciler.api.ledger import admin_ledger_router, ledger_router
from billing_reconciler.api.organizations import organizations_router
from billing_reconciler.api.overdraft import admin_overdraft_router
from billing_reconciler.api.routing import PREFIX, ApiRoute, is_org_id
from billing_reconciler.api.subscriptions import admin_subscriptions_router, subscriptions_router
from billing_reconciler.api.usage import admin_usage_router, usage_router

_METHODS: Final = ["GET", "PUT", "POST", "PATCH", "DELETE"]
# The parts of an org the API has routes under (`/organizations/{org}/<part>/...`).
_ORG_SUBRESOURCES: Final = frozenset({"members", "billing"})


def _unmatched_org_routes(tokens: ApiTokens) -> APIRouter:
    """Paths under an org that match no route: most often an org id containing `/` (which
    Starlette decodes before routing, even from `%2F`), so the answer says what an org id
    may contain rather than a bare 404."""
    router = APIRouter(route_class=ApiRoute, include_in_schema=False)
    # The token is checked first here too: without one, a bad path answers 401, not 400.
    app_scope = [Depends(requires(tokens, Scope.APP))]
    admin_scope = [Depends(requires(tokens, Scope.ADMIN))]

    @router.api_route(
        f"{PREFIX}/organizations/{{rest:path}}", methods=_METHODS, dependencies=app_scope
    )
    @router.api_route(
        f"{PREFIX}/admin/organizations/{{rest:path}}", methods=_METHODS, dependencies=admin_scope
    )
    def unmatched(rest: str) -> None:
        parts = rest.split("/")
        if is_org_id(parts[0]) and (len(parts) == 1 or parts[1] in _ORG_SUBRESOURCES):
            if parts[1:2] == ["members"] and len(parts) > 3:
                # Members have no sub-routes: the user id held a '/' (Starlette decodes %2F).
                raise invalid(
                    "no such route; note that a user id cannot contain '/'",
                    status=400,
                    field="user",
                )
            # A real org and a known part of it: the route (or method) is what is unknown.
            raise ApiError(404, "not_found", "no such route", {"path": rest})
        raise invalid(
            "no such route; note that an org id is 1-64 characters of [A-Za-z0-9_.:-], not "
            "only dots, and cannot contain '/'",
            status=400,
            field="org",
        )

    return router


def api_router(context: ApiContext) -> APIRouter:
    """Every route of the host API, under `/v1beta1`."""
    router = APIRouter()
    for part in (
        # First: the usage routes are the hottest (routes are matched in order).
        usage_router(context),
        admin_usage_router(context),
        organizations_router(context),
        accounts_router(context),
        ledger_router(context),
        admin_accounts_router(context),
        admin_ledger_router(context),
        subscriptions_router(context),
        admin_subscriptions_router(context),
        catalog_router(context),
        admin_overdraft_router(context),
        _unmatched_org_routes(context.tokens),
    ):
        router.include_router(part)
    return router
