"""SetupIntents: create, retrieve, update, confirm, cancel, list.

Status machine (Stripe's): requires_payment_method -> requires_confirmation -> requires_action
(cards that authenticate on setup: `pm_card_authenticationRequiredOnSetup`,
`pm_card_authenticationRequired`) | succeeded; a card whose check declines goes back to
requires_payment_method with `last_setup_error` and answers 402; cancel from any status but
succeeded/canceled. A succeeded setup with a customer attaches the payment method to it.
"""

from __future__ import annotations

import copy

from stripe_emulator.core import RequestContext
from stripe_emulator.errors import StripeError, invalid
from stripe_emulator.ids import new_id
from stripe_emulator.listing import expand_of, list_response
from stripe_emulator.params import Params
from stripe_emulator.render import render
from stripe_emulator.resources import payment_methods
from stripe_emulator.resources._common import (
    apply_metadata,
    check_enum,
    fetch,
    new_metadata,
    nullable,
)
from stripe_emulator.resources._intent_params import (
    SetupIntentConfirmParams,
    SetupIntentCreateParams,
    SetupIntentUpdateParams,
)
from stripe_emulator.resources._payments import (
    add_route,
    authentication_action,
    error_object,
    expandable_when_null,
    payment_method_from,
    raise_last_error,
    random_secret,
    refuse_payment_method_types,
    refuse_unsupported,
    require_payment_method,
    time_for,
    unexpected_state,
)
from stripe_emulator.routing import Router
from stripe_emulator.state import StripeObject

KIND = "setup_intent"
LABEL = "SetupIntent"
# Each is 400 naming it (docs/emulator.md, "Left out"); `single_use` is refused in create.
UNSUPPORTED = (
    "confirmation_token",
    "customer_account",
    "mandate_data",
    "payment_method_configuration",
    "on_behalf_of",
)
USAGES = ("off_session", "on_session")
CANCELLATION_REASONS = ("abandoned", "duplicate", "requested_by_customer")
CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")
CANCELABLE = ("requires_payment_method", "requires_confirmation", "requires_action", "processing")


def register(router: Router) -> None:
    """Attach the setup intent endpoints."""
    p = "_setup_intent_"
    base = "/v1/setup_intents"
    one = base + "/{intent}"
    add_route(router, "POST", base, SetupIntentCreateParams, create)
    router.add("GET", base, f"{p}list_params.SetupIntentListParams", list_intents)
    router.add("GET", one, f"{p}retrieve_params.SetupIntentRetrieveParams", retrieve)
    add_route(router, "POST", one, SetupIntentUpdateParams, update)
    add_route(router, "POST", one + "/confirm", SetupIntentConfirmParams, confirm)
    router.add("POST", one + "/cancel", f"{p}cancel_params.SetupIntentCancelParams", cancel)
    expandable_when_null(
        KIND,
        "application",
        "customer",
        "latest_attempt",
        "mandate",
        "on_behalf_of",
        "payment_method",
        "single_use_mandate",
    )


def create(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/setup_intents` (with `confirm=true` it confirms at once)."""
    refuse_payment_method_types(params)
    _refuse_unsupported(params)
    check_enum(params.get("usage"), "usage", USAGES)
    customer = params.get("customer")
    if customer is not None:
        fetch(ctx, "customer", customer, "customer", param="customer", in_body=True)
    if "single_use" in params:
        raise invalid(
            "`single_use` mandates are not supported by the emulator.", param="single_use"
        )
    allowed = params.get("allowed_payment_method_types")
    automatic = params.get("automatic_payment_methods")
    if allowed is not None and automatic is not None and automatic.get("enabled"):
        raise invalid(
            "You may only specify one of these parameters: allowed_payment_method_types, "
            "automatic_payment_methods.",
            param="automatic_payment_methods",
        )
    intent_id = new_id("seti")
    intent: StripeObject = {
        "id": intent_id,
        "object": KIND,
        "allowed_payment_method_types": list(allowed) if allowed else None,
        "application": None,
        "attach_to_self": params.get("attach_to_self"),
        "automatic_payment_methods": (
            None
            if allowed
            else {
                "allow_redirects": (automatic or {}).get("allow_redirects", "always"),
                "enabled": (automatic or {}).get("enabled", True),
            }
        ),
        "cancellation_reason": None,
        "client_secret": f"{intent_id}_secret_{random_secret(32)}",
        "created": time_for(ctx, customer),
        "customer": customer,
        "customer_account": None,
        "description": params.get("description"),
        "excluded_payment_method_types": params.get("excluded_payment_method_types"),
        "flow_directions": params.get("flow_directions"),
        "last_setup_error": None,
        "latest_attempt": None,
        "livemode": False,
        "mandate": None,
        "metadata": new_metadata(params.get("metadata")),
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_configuration_details": (
            None if allowed else {"id": "pmc_emulator_default", "parent": None}
        ),
        "payment_method_options": {},
        "payment_method_types": list(allowed) if allowed else ["card"],
        "single_use_mandate": None,
        "status": "requires_payment_method",
        "usage": params.get("usage", "off_session"),
    }
    pm = _payment_method_from(ctx, intent, params)
    if pm is not None:
        intent["payment_method"] = pm["id"]
        intent["status"] = "requires_confirmation"
    intent["payment_method_options"] = _options(intent, params.get("payment_method_options"))
    ctx.store.insert(KIND, intent)
    ctx.emit("setup_intent.created", intent)
    if params.get("confirm"):
        intent = _confirm(ctx, intent, params)
    return render(ctx.store, intent, expand_of(params))


def retrieve(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/setup_intents/{intent}`."""
    return render(ctx.store, _intent(ctx, path), expand_of(params))


def list_intents(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/setup_intents` (`customer`, `payment_method`, `attach_to_self`, `created`)."""
    if "customer_account" in params:
        raise invalid("Accounts v2 are not supported by the emulator.", param="customer_account")
    wanted = {k: params[k] for k in ("customer", "payment_method", "attach_to_self") if k in params}

    def matches(intent: StripeObject) -> bool:
        return all(intent.get(k) == v for k, v in wanted.items())

    return list_response(
        ctx.store, kind=KIND, params=params, url="/v1/setup_intents", predicate=matches
    )


def update(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/setup_intents/{intent}` (Stripe emits no event for an update)."""
    refuse_payment_method_types(params)
    _refuse_unsupported(params)
    before = _intent(ctx, path)
    if before["status"] in ("succeeded", "canceled", "processing"):
        raise _unexpected_state(before, "update")
    after = copy.deepcopy(before)
    if "customer" in params:
        fetch(ctx, "customer", params["customer"], "customer", param="customer", in_body=True)
        after["customer"] = params["customer"]
    for name in ("description", "attach_to_self", "flow_directions"):
        if name in params:
            after[name] = nullable(params[name])
    if "allowed_payment_method_types" in params:
        after["allowed_payment_method_types"] = list(params["allowed_payment_method_types"])
        after["payment_method_types"] = list(params["allowed_payment_method_types"])
        after["automatic_payment_methods"] = None
    if "excluded_payment_method_types" in params:
        after["excluded_payment_method_types"] = nullable(params["excluded_payment_method_types"])
    pm = _payment_method_from(ctx, after, params)
    if pm is not None:
        after["payment_method"] = pm["id"]
        after["status"] = "requires_confirmation"
        after["next_action"] = None
    if "payment_method_options" in params:
        after["payment_method_options"] = _options(after, params["payment_method_options"])
    after["metadata"] = apply_metadata(after["metadata"], params.get("metadata"))
    ctx.store.replace(KIND, after)
    return render(ctx.store, after, expand_of(params))


def confirm(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/setup_intents/{intent}/confirm`."""
    refuse_payment_method_types(params)
    _refuse_unsupported(params)
    intent = _intent(ctx, path)
    if intent["status"] not in CONFIRMABLE:
        raise _unexpected_state(intent, "confirm")
    after = copy.deepcopy(intent)
    if "allowed_payment_method_types" in params:
        after["allowed_payment_method_types"] = list(params["allowed_payment_method_types"])
        after["payment_method_types"] = list(params["allowed_payment_method_types"])
        after["automatic_payment_methods"] = None
    pm = _payment_method_from(ctx, after, params)
    if pm is not None:
        after["payment_method"] = pm["id"]
    if "payment_method_options" in params:
        after["payment_method_options"] = _options(after, params["payment_method_options"])
    ctx.store.replace(KIND, after)
    return render(ctx.store, _confirm(ctx, after, params), expand_of(params))


def _confirm(ctx: RequestContext, intent: StripeObject, params: Params) -> StripeObject:
    require_payment_method(intent, label=LABEL, kind=KIND)
    pm = ctx.store.get(payment_methods.KIND, intent["payment_method"])
    assert pm is not None
    payment_methods.check_reusable(pm, param="payment_method")
    after = copy.deepcopy(intent)
    after["last_setup_error"] = None
    after["next_action"] = None
    card = payment_methods.behaviour(pm)
    if card is not None and card.authentication != "none":
        after["status"] = "requires_action"
        after["next_action"] = authentication_action(after, params, kind=KIND)
        ctx.store.replace(KIND, after)
        ctx.emit("setup_intent.requires_action", after)
        return after
    if card is not None and card.declines_on_setup and card.decline_code is not None:
        after["last_setup_error"] = payment_methods.last_error_for_decline(
            ctx, pm, card.decline_code, None
        )
        after["payment_method"] = None
        after["status"] = "requires_payment_method"
        ctx.store.replace(KIND, after)
        ctx.emit("setup_intent.setup_failed", after)
        raise_last_error(
            ctx,
            after["last_setup_error"],
            intent_key="setup_intent",
            intent=render(ctx.store, after),
        )
    return _succeeded(ctx, after, pm)


def _succeeded(ctx: RequestContext, intent: StripeObject, pm: StripeObject) -> StripeObject:
    if intent["customer"] is not None:
        pm = payment_methods.attach_to(ctx, pm, intent["customer"])
    saved = copy.deepcopy(ctx.store.get(payment_methods.KIND, pm["id"]) or pm)
    saved["_setup_done"] = True
    ctx.store.replace(payment_methods.KIND, saved)
    intent["status"] = "succeeded"
    intent["next_action"] = None
    ctx.store.replace(KIND, intent)
    ctx.emit("setup_intent.succeeded", intent)
    return intent


def complete_authentication(ctx: RequestContext, intent_id: str, outcome: str) -> StripeObject:
    """What the customer does on the 3D Secure page: `succeed` or `fail` (operator control)."""
    intent = fetch(ctx, KIND, intent_id, "setup_intent")
    if intent["status"] != "requires_action":
        raise invalid(
            f"SetupIntent {intent_id} is not awaiting authentication (status {intent['status']})."
        )
    if outcome not in ("succeed", "fail"):
        raise invalid("outcome must be succeed or fail", param="outcome")
    after = copy.deepcopy(intent)
    pm = ctx.store.get(payment_methods.KIND, after["payment_method"])
    assert pm is not None
    if outcome == "succeed":
        return _succeeded(ctx, after, pm)
    after["last_setup_error"] = error_object(
        code="setup_intent_authentication_failure",
        message=(
            "The latest attempt to set up the payment method has failed because "
            "authentication failed."
        ),
        type_="invalid_request_error",
        payment_method=payment_methods.public(ctx, pm),
    )
    after["next_action"] = None
    after["payment_method"] = None
    after["status"] = "requires_payment_method"
    ctx.store.replace(KIND, after)
    ctx.emit("setup_intent.setup_failed", after)
    return after


def cancel(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/setup_intents/{intent}/cancel`."""
    intent = _intent(ctx, path)
    if intent["status"] not in CANCELABLE:
        raise _unexpected_state(intent, "cancel")
    check_enum(params.get("cancellation_reason"), "cancellation_reason", CANCELLATION_REASONS)
    after = copy.deepcopy(intent)
    after["status"] = "canceled"
    after["cancellation_reason"] = params.get("cancellation_reason")
    after["next_action"] = None
    ctx.store.replace(KIND, after)
    ctx.emit("setup_intent.canceled", after)
    return render(ctx.store, after, expand_of(params))


def _intent(ctx: RequestContext, path: dict[str, str]) -> StripeObject:
    return fetch(ctx, KIND, path["intent"], "setup_intent", param="intent")


def _refuse_unsupported(params: Params) -> None:
    refuse_unsupported(params, UNSUPPORTED)


def _owner_message(pm: StripeObject, owner: str) -> str:
    return (
        f"The provided PaymentMethod {pm['id']} belongs to Customer {owner} and cannot be "
        "used with this SetupIntent's customer."
    )


def _payment_method_from(
    ctx: RequestContext, intent: StripeObject, params: Params
) -> StripeObject | None:
    return payment_method_from(
        ctx, intent, params, label=LABEL, kind=KIND, owner_message=_owner_message, raw_cards=True
    )


def _options(intent: StripeObject, requested: Params | None) -> StripeObject:
    options: StripeObject = {}
    for kind in intent["payment_method_types"]:
        given = (requested or {}).get(kind) or {}
        if kind == "card":
            options[kind] = {
                "mandate_options": None,
                "network": given.get("network"),
                "request_three_d_secure": given.get("request_three_d_secure", "automatic"),
            }
        else:
            options[kind] = copy.deepcopy(given)
    return options


def _unexpected_state(intent: StripeObject, action: str) -> StripeError:
    return unexpected_state(intent, action, label=LABEL, kind=KIND)
