"""Test clocks: create, retrieve, list, advance, delete.

Advancing is immediate (Stripe moves through `advancing` to `ready` asynchronously; here both
events are emitted at once, and the stored clock is `advancing` while the hooks run).
Resources that bill over time register a hook on `Emulator.clock_hooks` (the subscriptions
module's `advance_clock`) to run renewals, invoice finalization and trial ends between the old
and new frozen time, in time order, moving the clock's `frozen_time` to each moment.
"""

from __future__ import annotations

import copy

from stripe_emulator.billing_time import MAX_TIMESTAMP
from stripe_emulator.core import RequestContext
from stripe_emulator.errors import invalid
from stripe_emulator.ids import new_id
from stripe_emulator.listing import expand_of, list_response
from stripe_emulator.params import Params
from stripe_emulator.render import render
from stripe_emulator.resources._common import deleted_stub, fetch
from stripe_emulator.resources.customers import delete_customer
from stripe_emulator.routing import Router
from stripe_emulator.state import StripeObject

KIND = "test_helpers.test_clock"
LIFETIME_SECONDS = 30 * 24 * 3600
# Stripe refuses to move a clock more than two intervals of the longest subscription ahead;
# without subscriptions the emulator applies a generous fixed bound instead.
MAX_ADVANCE_SECONDS = 2 * 366 * 24 * 3600


def register(router: Router) -> None:
    """Attach the test clock endpoints."""
    p = "test_helpers._test_clock_"
    base = "/v1/test_helpers/test_clocks"
    one = base + "/{test_clock}"
    router.add("POST", base, f"{p}create_params.TestClockCreateParams", create)
    router.add("GET", base, f"{p}list_params.TestClockListParams", list_clocks)
    router.add("GET", one, f"{p}retrieve_params.TestClockRetrieveParams", retrieve)
    router.add("DELETE", one, f"{p}delete_params.TestClockDeleteParams", delete)
    router.add("POST", one + "/advance", f"{p}advance_params.TestClockAdvanceParams", advance)


def create(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/test_helpers/test_clocks`."""
    _check_range(params["frozen_time"])
    now = ctx.now()
    clock: StripeObject = {
        "id": new_id("clock"),
        "object": KIND,
        "created": now,
        "deletes_after": now + LIFETIME_SECONDS,
        "frozen_time": params["frozen_time"],
        "livemode": False,
        "name": params.get("name"),
        "status": "ready",
        "status_details": {},
    }
    ctx.store.insert(KIND, clock)
    ctx.emit("test_helpers.test_clock.created", clock)
    return render(ctx.store, clock, expand_of(params))


def _check_range(frozen_time: int) -> None:
    """A clock's time is a Unix timestamp from 1970 to the end of year 9999 (the range of
    Stripe's timestamps as far as the emulator's calendar reaches: `billing_time`)."""
    if not 0 <= frozen_time <= MAX_TIMESTAMP:
        raise invalid(
            f"Invalid timestamp: must be an integer Unix timestamp from 0 to {MAX_TIMESTAMP}.",
            param="frozen_time",
        )


def retrieve(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/test_helpers/test_clocks/{id}`."""
    clock = fetch(ctx, KIND, path["test_clock"], "test_clock")
    return render(ctx.store, clock, expand_of(params))


def list_clocks(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/test_helpers/test_clocks`."""
    return list_response(ctx.store, kind=KIND, params=params, url="/v1/test_helpers/test_clocks")


def delete(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`DELETE /v1/test_helpers/test_clocks/{id}`: its customers go with it, as on Stripe."""
    clock = fetch(ctx, KIND, path["test_clock"], "test_clock")
    for customer in ctx.store.collection("customer").lookup("test_clock", clock["id"]):
        delete_customer(ctx, customer)
    ctx.store.delete(KIND, clock["id"])
    ctx.emit("test_helpers.test_clock.deleted", clock)
    return deleted_stub(clock)


def advance(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/test_helpers/test_clocks/{id}/advance`: time only moves forward."""
    before = fetch(ctx, KIND, path["test_clock"], "test_clock")
    target = params["frozen_time"]
    _check_range(target)
    if target <= before["frozen_time"]:
        raise invalid(
            "The frozen_time must be after the test clock's current frozen_time.",
            param="frozen_time",
        )
    if target - before["frozen_time"] > MAX_ADVANCE_SECONDS:
        raise invalid(
            "Cannot advance a test clock more than two years at once.", param="frozen_time"
        )
    advancing = copy.deepcopy(before)
    advancing["status"] = "advancing"
    ctx.store.replace(KIND, advancing)
    ctx.emit("test_helpers.test_clock.advancing", advancing)
    # Each hook walks its objects through what falls due up to `target` in time order,
    # moving the stored clock's `frozen_time` to each moment as it goes.
    for hook in ctx.emulator.clock_hooks:
        hook(ctx, advancing, target)
    after = copy.deepcopy(ctx.store.get(KIND, before["id"]) or advancing)
    after["status"] = "ready"
    after["frozen_time"] = target
    ctx.store.replace(KIND, after)
    ctx.emit("test_helpers.test_clock.ready", after)
    return render(ctx.store, after, expand_of(params))
