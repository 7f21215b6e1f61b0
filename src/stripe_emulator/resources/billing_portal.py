"""Customer portal sessions (`POST /v1/billing_portal/sessions`): a short-lived `url` for a
customer, emitting `billing_portal.session.created`. The portal itself (its pages, flows,
configurations) is not emulated; every session names one default configuration."""

from __future__ import annotations

from stripe_emulator.core import RequestContext
from stripe_emulator.errors import invalid
from stripe_emulator.ids import new_id
from stripe_emulator.listing import expand_of
from stripe_emulator.params import Params
from stripe_emulator.render import render
from stripe_emulator.resources._common import fetch
from stripe_emulator.routing import Router
from stripe_emulator.state import StripeObject

KIND = "billing_portal.session"
DEFAULT_CONFIGURATION = "bpc_emulatordefault000000"
_UNSUPPORTED = ("configuration", "flow_data", "on_behalf_of", "customer_account")


def register(router: Router) -> None:
    """Attach the portal session endpoint."""
    router.add(
        "POST",
        "/v1/billing_portal/sessions",
        "billing_portal._session_create_params.SessionCreateParams",
        create,
    )


def create(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/billing_portal/sessions` (`customer`, `return_url`, `locale`)."""
    for name in _UNSUPPORTED:
        if name in params:
            raise invalid(
                f"`{name}` is not supported by the emulator (see docs/emulator.md).", param=name
            )
    if "customer" not in params:
        raise invalid(
            "Missing required param: customer.", param="customer", code="parameter_missing"
        )
    customer = fetch(
        ctx, "customer", params["customer"], "customer", param="customer", in_body=True
    )
    session_id = new_id("bps")
    session: StripeObject = {
        "id": session_id,
        "object": KIND,
        "configuration": DEFAULT_CONFIGURATION,
        "created": ctx.now(),
        "customer": customer["id"],
        "customer_account": None,
        "flow": None,
        "livemode": False,
        "locale": params.get("locale"),
        "on_behalf_of": None,
        "return_url": params.get("return_url"),
        "url": f"https://billing.stripe.com/p/session/test_{session_id.removeprefix('bps_')}",
    }
    ctx.store.insert(KIND, session)
    ctx.emit("billing_portal.session.created", session)
    return render(ctx.store, session, expand_of(params))
