"""The host application's HTTP API (DESIGN §19): routes that record facts in the store and
request a targeted reconcile; `api_router` is what `runtime.app.create_app` includes."""

from billing_reconciler.api.app import api_router
from billing_reconciler.api.auth import ApiTokens, Scope, load_api_tokens
from billing_reconciler.api.context import CUSTOMER_DOMAIN, ApiContext, RequestReconcile
from billing_reconciler.api.errors import ERROR_CODES, ApiError, install_error_handlers

__all__ = [
    "CUSTOMER_DOMAIN",
    "ERROR_CODES",
    "ApiContext",
    "ApiError",
    "ApiTokens",
    "RequestReconcile",
    "Scope",
    "api_router",
    "install_error_handlers",
    "load_api_tokens",
]
