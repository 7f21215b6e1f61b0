"""Webhook endpoints: the `whsec_` secret is returned on create only; deliveries are made by
`webhooks.WebhookDispatcher` for every event whose type an enabled endpoint subscribes to."""

from __future__ import annotations

import copy
import re

from stripe_emulator.core import API_VERSION, RequestContext
from stripe_emulator.errors import invalid
from stripe_emulator.ids import new_id, new_secret
from stripe_emulator.listing import expand_of, list_response
from stripe_emulator.params import Params
from stripe_emulator.render import render
from stripe_emulator.resources._common import (
    apply_metadata,
    deleted_stub,
    fetch,
    new_metadata,
    nullable,
    save_update,
)
from stripe_emulator.routing import Router
from stripe_emulator.state import StripeObject

KIND = "webhook_endpoint"
_EVENT_TYPE = re.compile(r"\*|[a-z_]+(\.[a-z_]+)+|[a-z_]+\.\*")
_URL = re.compile(r"https?://\S+")


def register(router: Router) -> None:
    """Attach the webhook endpoint endpoints."""
    p = "_webhook_endpoint_"
    one = "/v1/webhook_endpoints/{webhook_endpoint}"
    router.add(
        "POST", "/v1/webhook_endpoints", f"{p}create_params.WebhookEndpointCreateParams", create
    )
    router.add(
        "GET", "/v1/webhook_endpoints", f"{p}list_params.WebhookEndpointListParams", list_endpoints
    )
    router.add("GET", one, f"{p}retrieve_params.WebhookEndpointRetrieveParams", retrieve)
    router.add("POST", one, f"{p}update_params.WebhookEndpointUpdateParams", update)
    router.add("DELETE", one, f"{p}delete_params.WebhookEndpointDeleteParams", delete)


def create(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/webhook_endpoints`."""
    endpoint: StripeObject = {
        "id": new_id("we"),
        "object": KIND,
        "api_version": params.get("api_version"),
        "application": None,
        "created": ctx.now(),
        "description": nullable(params.get("description")),
        "enabled_events": _events(params["enabled_events"]),
        "livemode": False,
        "metadata": new_metadata(params.get("metadata")),
        "status": "enabled",
        "url": _url(params["url"]),
        "_secret": new_secret("whsec"),
    }
    if endpoint["api_version"] not in (None, API_VERSION):
        raise invalid(
            f"The emulator renders events in API version {API_VERSION} only.", param="api_version"
        )
    ctx.store.insert(KIND, endpoint)
    body = render(ctx.store, endpoint, expand_of(params))
    # The signing secret is shown once, in the create response, as on Stripe.
    body["secret"] = endpoint["_secret"]
    return body


def retrieve(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/webhook_endpoints/{id}` (no secret)."""
    endpoint = fetch(ctx, KIND, path["webhook_endpoint"], "webhook endpoint")
    return render(ctx.store, endpoint, expand_of(params))


def list_endpoints(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/webhook_endpoints`."""
    return list_response(ctx.store, kind=KIND, params=params, url="/v1/webhook_endpoints")


def update(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/webhook_endpoints/{id}`: url, events, description, metadata, disabled."""
    before = fetch(ctx, KIND, path["webhook_endpoint"], "webhook endpoint")
    after = copy.deepcopy(before)
    if "url" in params:
        after["url"] = _url(params["url"])
    if "enabled_events" in params:
        after["enabled_events"] = _events(params["enabled_events"])
    if "description" in params:
        after["description"] = nullable(params["description"])
    if "disabled" in params:
        after["status"] = "disabled" if params["disabled"] else "enabled"
    after["metadata"] = apply_metadata(after["metadata"], params.get("metadata"))
    save_update(ctx, KIND, before, after, None)
    return render(ctx.store, ctx.store.get(KIND, after["id"]) or after, expand_of(params))


def delete(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`DELETE /v1/webhook_endpoints/{id}`."""
    endpoint = fetch(ctx, KIND, path["webhook_endpoint"], "webhook endpoint")
    ctx.store.delete(KIND, endpoint["id"])
    return deleted_stub(endpoint)


def _events(events: list[str]) -> list[str]:
    if not events:
        raise invalid(
            "enabled_events must contain at least one event type.", param="enabled_events"
        )
    for index, event in enumerate(events):
        if not _EVENT_TYPE.fullmatch(event):
            raise invalid(
                f"Invalid enabled_events[{index}]: {event} is not a valid event type.",
                param=f"enabled_events[{index}]",
            )
    return list(events)


def _url(url: str) -> str:
    if not _URL.fullmatch(url):
        raise invalid(f"Invalid URL: {url}", param="url")
    return url
