"""`/v1/events`: list (filters `type` with `*` wildcards, `types[]`, `created`) and retrieve."""

from __future__ import annotations

from typing import Any

from stripe_emulator.core import RequestContext
from stripe_emulator.errors import invalid
from stripe_emulator.listing import expand_of, list_response
from stripe_emulator.params import Params
from stripe_emulator.render import render
from stripe_emulator.resources._common import fetch
from stripe_emulator.routing import Router
from stripe_emulator.state import StripeObject

KIND = "event"


def register(router: Router) -> None:
    """Attach the event endpoints."""
    router.add("GET", "/v1/events", "_event_list_params.EventListParams", list_events)
    router.add("GET", "/v1/events/{id}", "_event_retrieve_params.EventRetrieveParams", retrieve)


def retrieve(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/events/{id}`."""
    return render(ctx.store, fetch(ctx, KIND, path["id"], "event"), expand_of(params))


def list_events(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/events`, newest first."""
    if "type" in params and "types" in params:
        raise invalid("You may only specify one of these parameters: type, types.", param="types")
    equals: dict[str, Any] = {}
    predicate = None
    wanted = params.get("type")
    if wanted is not None and "*" in wanted:
        prefix = wanted.split("*", 1)[0]
        predicate = lambda event: str(event["type"]).startswith(prefix)  # noqa: E731
    elif wanted is not None:
        equals["type"] = [wanted]
    if "types" in params:
        if len(params["types"]) > 20:
            raise invalid("You may pass at most 20 types.", param="types")
        equals["type"] = params["types"]
    return list_response(
        ctx.store, kind=KIND, params=params, url="/v1/events", equals=equals, predicate=predicate
    )
