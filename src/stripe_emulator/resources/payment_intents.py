"""PaymentIntents: create, retrieve, update, confirm, cancel, capture, list; card outcomes from
the test cards; `customer_balance` with bank-transfer instructions funded through
`POST /v1/test_helpers/customers/{customer}/fund_cash_balance`; a minimal `charge` per
payment attempt (`latest_charge`, `GET /v1/charges/{charge}`).

Status machine (Stripe's): requires_payment_method -> requires_confirmation (a payment
method, not confirmed) -> requires_action (authentication, bank transfer) | requires_capture
(`capture_method=manual`) | succeeded; a decline goes back to requires_payment_method with
`last_payment_error` and answers 402; cancel from any status but succeeded/canceled.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Any

from stripe_emulator.core import RequestContext
from stripe_emulator.errors import StripeError, invalid
from stripe_emulator.ids import new_id
from stripe_emulator.listing import expand_of, list_response
from stripe_emulator.params import Params
from stripe_emulator.render import render
from stripe_emulator.resources import cash_balances, payment_methods
from stripe_emulator.resources._common import (
    apply_metadata,
    check_enum,
    currency,
    fetch,
    new_metadata,
    nullable,
)
from stripe_emulator.resources._intent_params import (
    PaymentIntentConfirmParams,
    PaymentIntentCreateParams,
    PaymentIntentUpdateParams,
)
from stripe_emulator.resources._payments import (
    add_route,
    authentication_action,
    error_object,
    expandable_when_null,
    includable,
    payment_method_from,
    raise_last_error,
    random_secret,
    refuse_payment_method_types,
    refuse_unsupported,
    require_payment_method,
    time_for,
    unexpected_state,
)
from stripe_emulator.resources.currencies import ISO_4217, MINIMUM_AMOUNTS
from stripe_emulator.routing import Router
from stripe_emulator.state import StripeObject

KIND = "payment_intent"
LABEL = "PaymentIntent"
UNSUPPORTED = (
    "confirmation_token",
    "customer_account",
    "mandate",
    "mandate_data",
    "payment_method_configuration",
    "on_behalf_of",
    "transfer_data",
    "application_fee_amount",
    "hooks",
    "payment_details",
    "radar_options",
    "amount_details",
    "amount_to_confirm",
)
CHARGE = "charge"
CAPTURE_METHODS = ("automatic", "automatic_async", "manual")
CANCELLATION_REASONS = ("duplicate", "fraudulent", "requested_by_customer", "abandoned")
SETUP_FUTURE_USAGE = ("off_session", "on_session")
CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")
CANCELABLE = (
    "requires_payment_method",
    "requires_capture",
    "requires_confirmation",
    "requires_action",
    "processing",
)
MAX_AMOUNT = 99_999_999

# Called with (context, intent, succeeded) when an intent's confirmation ends in `succeeded`
# (card confirm, the 3D Secure control, cash-balance funding) or fails (decline, failed
# authentication). Objects waiting on an intent (an invoice whose payment needed
# authentication, a checkout session) register here; a hook must ignore intents it does not
# know, since it also runs for the first confirmation of an intent its own module creates.
IntentHook = Callable[[RequestContext, StripeObject, bool], None]
INTENT_HOOKS: list[IntentHook] = []


def on_intent_outcome(hook: IntentHook) -> None:
    """Register `hook` (once) to run after an intent succeeds or fails."""
    if hook not in INTENT_HOOKS:
        INTENT_HOOKS.append(hook)


def _outcome(ctx: RequestContext, intent: StripeObject, succeeded: bool) -> None:
    for hook in INTENT_HOOKS:
        hook(ctx, intent, succeeded)


def register(router: Router) -> None:
    """Attach the payment intent, charge and cash-balance test-helper endpoints."""
    p = "_payment_intent_"
    base = "/v1/payment_intents"
    one = base + "/{intent}"
    add_route(router, "POST", base, PaymentIntentCreateParams, create)
    router.add("GET", base, f"{p}list_params.PaymentIntentListParams", list_intents)
    router.add("GET", one, f"{p}retrieve_params.PaymentIntentRetrieveParams", retrieve)
    add_route(router, "POST", one, PaymentIntentUpdateParams, update)
    add_route(router, "POST", one + "/confirm", PaymentIntentConfirmParams, confirm)
    router.add("POST", one + "/cancel", f"{p}cancel_params.PaymentIntentCancelParams", cancel)
    router.add("POST", one + "/capture", f"{p}capture_params.PaymentIntentCaptureParams", capture)
    router.add(
        "POST",
        one + "/apply_customer_balance",
        f"{p}apply_customer_balance_params.PaymentIntentApplyCustomerBalanceParams",
        apply_customer_balance,
    )
    router.add(
        "GET", "/v1/charges/{charge}", "_charge_retrieve_params.ChargeRetrieveParams", get_charge
    )
    router.add(
        "POST",
        "/v1/test_helpers/customers/{customer}/fund_cash_balance",
        "test_helpers._customer_fund_cash_balance_params.CustomerFundCashBalanceParams",
        fund_cash_balance_endpoint,
    )
    expandable_when_null(
        KIND,
        "application",
        "customer",
        "latest_charge",
        "on_behalf_of",
        "payment_method",
        "review",
        "source",
    )
    includable(CHARGE, "refunds")
    expandable_when_null(
        CHARGE,
        "application",
        "application_fee",
        "balance_transaction",
        "customer",
        "failure_balance_transaction",
        "on_behalf_of",
        "payment_intent",
        "review",
        "source_transfer",
    )


# --- create / retrieve / update / list ---------------------------------------------------


def create(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/payment_intents` (with `confirm=true` it confirms at once)."""
    refuse_payment_method_types(params)
    _refuse_unsupported(params)
    cur = _currency(params["currency"])
    _check_amount(params["amount"], cur)
    check_enum(params.get("capture_method"), "capture_method", CAPTURE_METHODS)
    check_enum(params.get("setup_future_usage"), "setup_future_usage", SETUP_FUTURE_USAGE)
    check_enum(params.get("confirmation_method"), "confirmation_method", ("automatic", "manual"))
    customer = params.get("customer")
    if customer is not None:
        fetch(ctx, "customer", customer, "customer", param="customer", in_body=True)
    if not params.get("confirm"):
        for name in ("off_session", "error_on_requires_action", "return_url"):
            if name in params:
                raise invalid(f"You may only pass `{name}` when `confirm=true`.", param=name)
    allowed = params.get("allowed_payment_method_types")
    automatic = params.get("automatic_payment_methods")
    if allowed is not None and automatic is not None and automatic.get("enabled"):
        raise invalid(
            "You may only specify one of these parameters: allowed_payment_method_types, "
            "automatic_payment_methods.",
            param="automatic_payment_methods",
        )
    now = time_for(ctx, customer)
    intent_id = new_id("pi")
    types = list(allowed) if allowed else ["card"]
    intent: StripeObject = {
        "id": intent_id,
        "object": KIND,
        "allowed_payment_method_types": list(allowed) if allowed else None,
        "amount": params["amount"],
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": (
            None
            if allowed
            else {
                "allow_redirects": (automatic or {}).get("allow_redirects", "always"),
                "enabled": (automatic or {}).get("enabled", True),
            }
        ),
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": params.get("capture_method", "automatic_async"),
        "client_secret": f"{intent_id}_secret_{random_secret(25)}",
        "confirmation_method": params.get("confirmation_method", "automatic"),
        "created": now,
        "currency": cur,
        "customer": customer,
        "customer_account": None,
        "description": params.get("description"),
        "excluded_payment_method_types": params.get("excluded_payment_method_types"),
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "managed_payments": None,
        "metadata": new_metadata(params.get("metadata")),
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_configuration_details": (
            None if allowed else {"id": "pmc_emulator_default", "parent": None}
        ),
        "payment_method_options": {},
        "payment_method_types": types,
        "processing": None,
        "receipt_email": params.get("receipt_email"),
        "review": None,
        "setup_future_usage": params.get("setup_future_usage"),
        "shipping": _shipping(params.get("shipping")),
        "source": None,
        "statement_descriptor": params.get("statement_descriptor"),
        "statement_descriptor_suffix": params.get("statement_descriptor_suffix"),
        "status": "requires_payment_method",
        "transfer_data": None,
        "transfer_group": params.get("transfer_group"),
        "_options": params.get("payment_method_options") or {},
        "_funded": 0,
    }
    pm = _payment_method_from(ctx, intent, params)
    if pm is not None:
        intent["payment_method"] = pm["id"]
        intent["status"] = "requires_confirmation"
    intent["payment_method_options"] = _options(intent)
    ctx.store.insert(KIND, intent)
    ctx.emit("payment_intent.created", intent)
    if params.get("confirm"):
        intent = _confirm(ctx, intent, params)
    return render(ctx.store, intent, expand_of(params))


def retrieve(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/payment_intents/{intent}`."""
    return render(ctx.store, _intent(ctx, path), expand_of(params))


def list_intents(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/payment_intents` (`customer`, `created`)."""
    if "customer_account" in params:
        raise invalid("Accounts v2 are not supported by the emulator.", param="customer_account")
    customer = params.get("customer")
    predicate = None if customer is None else (lambda pi: pi.get("customer") == customer)
    return list_response(
        ctx.store, kind=KIND, params=params, url="/v1/payment_intents", predicate=predicate
    )


def update(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/payment_intents/{intent}` (Stripe emits no event for an update)."""
    refuse_payment_method_types(params)
    _refuse_unsupported(params)
    before = _intent(ctx, path)
    if before["status"] in ("succeeded", "canceled", "processing"):
        raise _unexpected_state(before, "update")
    after = copy.deepcopy(before)
    if "amount" in params or "currency" in params:
        if before["status"] == "requires_capture":
            raise invalid(
                "The amount of a PaymentIntent awaiting capture cannot be updated.",
                param="amount",
            )
        cur = _currency(params["currency"]) if "currency" in params else after["currency"]
        amount: int = params["amount"] if "amount" in params else after["amount"]
        _check_amount(amount, cur)
        after["amount"], after["currency"] = amount, cur
    check_enum(params.get("capture_method"), "capture_method", CAPTURE_METHODS)
    check_enum(nullable(params.get("setup_future_usage")), "setup_future_usage", SETUP_FUTURE_USAGE)
    if "customer" in params:
        fetch(ctx, "customer", params["customer"], "customer", param="customer", in_body=True)
        after["customer"] = params["customer"]
    for name in (
        "description",
        "receipt_email",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "transfer_group",
        "capture_method",
        "setup_future_usage",
    ):
        if name in params:
            after[name] = nullable(params[name])
    if "shipping" in params:
        after["shipping"] = _shipping(nullable(params["shipping"]))
    if "allowed_payment_method_types" in params:
        after["allowed_payment_method_types"] = list(params["allowed_payment_method_types"])
        after["payment_method_types"] = list(params["allowed_payment_method_types"])
        after["automatic_payment_methods"] = None
    if "excluded_payment_method_types" in params:
        after["excluded_payment_method_types"] = nullable(params["excluded_payment_method_types"])
    if "payment_method_options" in params:
        after["_options"] = params["payment_method_options"] or {}
    pm = _payment_method_from(ctx, after, params)
    if pm is not None:
        after["payment_method"] = pm["id"]
        after["status"] = "requires_confirmation"
        after["next_action"] = None
    after["metadata"] = apply_metadata(after["metadata"], params.get("metadata"))
    after["payment_method_options"] = _options(after)
    ctx.store.replace(KIND, after)
    return render(ctx.store, after, expand_of(params))


# --- confirm -----------------------------------------------------------------------------


def confirm(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/payment_intents/{intent}/confirm`."""
    refuse_payment_method_types(params)
    _refuse_unsupported(params)
    intent = _intent(ctx, path)
    if intent["status"] not in CONFIRMABLE:
        raise _unexpected_state(intent, "confirm")
    after = copy.deepcopy(intent)
    for name in ("receipt_email", "setup_future_usage"):
        if name in params:
            after[name] = nullable(params[name])
    check_enum(after.get("setup_future_usage"), "setup_future_usage", SETUP_FUTURE_USAGE)
    if "capture_method" in params:
        check_enum(params["capture_method"], "capture_method", CAPTURE_METHODS)
        after["capture_method"] = params["capture_method"]
    if "shipping" in params:
        after["shipping"] = _shipping(nullable(params["shipping"]))
    if "payment_method_options" in params:
        after["_options"] = params["payment_method_options"] or {}
    if "allowed_payment_method_types" in params:
        after["allowed_payment_method_types"] = list(params["allowed_payment_method_types"])
        after["payment_method_types"] = list(params["allowed_payment_method_types"])
        after["automatic_payment_methods"] = None
    pm = _payment_method_from(ctx, after, params)
    if pm is not None:
        after["payment_method"] = pm["id"]
    after["payment_method_options"] = _options(after)
    ctx.store.replace(KIND, after)
    return render(ctx.store, _confirm(ctx, after, params), expand_of(params))


def _confirm(ctx: RequestContext, intent: StripeObject, params: Params) -> StripeObject:
    require_payment_method(intent, label=LABEL, kind=KIND)
    pm_id = intent["payment_method"]
    pm = ctx.store.get(payment_methods.KIND, pm_id)
    assert pm is not None
    payment_methods.check_reusable(pm, param="payment_method")
    after = copy.deepcopy(intent)
    after["last_payment_error"] = None
    after["next_action"] = None
    after["_off_session"] = bool(params.get("off_session"))
    if pm["type"] == "customer_balance":
        return _start_bank_transfer(ctx, after)
    card = payment_methods.behaviour(pm)
    assert card is not None
    needs_auth = card.authentication == "always" or (
        card.authentication == "until_setup" and not pm.get("_setup_done")
    )
    if needs_auth:
        if params.get("off_session") or params.get("error_on_requires_action"):
            return _decline(ctx, after, pm, "authentication_required")
        after["status"] = "requires_action"
        after["next_action"] = authentication_action(after, params, kind=KIND)
        ctx.store.replace(KIND, after)
        ctx.emit("payment_intent.requires_action", after)
        return after
    if card.decline_code is not None:
        return _decline(ctx, after, pm, card.decline_code)
    return _authorized(ctx, after, pm)


def _decline(
    ctx: RequestContext, intent: StripeObject, pm: StripeObject, decline_code: str
) -> StripeObject:
    charge = _charge(ctx, intent, pm, failure=decline_code)
    intent["last_payment_error"] = payment_methods.last_error_for_decline(
        ctx, pm, decline_code, charge["id"]
    )
    intent["latest_charge"] = charge["id"]
    intent["payment_method"] = None
    intent["status"] = "requires_payment_method"
    ctx.store.replace(KIND, intent)
    ctx.emit("charge.failed", charge)
    ctx.emit("payment_intent.payment_failed", intent)
    _outcome(ctx, intent, False)
    raise_last_error(
        ctx,
        intent["last_payment_error"],
        intent_key="payment_intent",
        intent=render(ctx.store, intent),
    )


def _authorized(ctx: RequestContext, intent: StripeObject, pm: StripeObject) -> StripeObject:
    manual = intent["capture_method"] == "manual"
    charge = _charge(ctx, intent, pm, failure=None, captured=not manual)
    intent["latest_charge"] = charge["id"]
    if manual:
        intent["status"] = "requires_capture"
        intent["amount_capturable"] = intent["amount"]
    else:
        intent["status"] = "succeeded"
        intent["amount_received"] = intent["amount"]
    _keep_payment_method(ctx, intent, pm)
    ctx.store.replace(KIND, intent)
    ctx.emit("charge.succeeded", charge)
    if manual:
        ctx.emit("payment_intent.amount_capturable_updated", intent)
    else:
        ctx.emit("payment_intent.succeeded", intent)
        _outcome(ctx, intent, True)
    return intent


def _keep_payment_method(ctx: RequestContext, intent: StripeObject, pm: StripeObject) -> None:
    # setup_future_usage saves the card to the customer (and counts as its setup); a card
    # used without a customer cannot be used again.
    current = ctx.store.get(payment_methods.KIND, pm["id"]) or pm
    if intent["setup_future_usage"] and intent["customer"]:
        current = payment_methods.attach_to(ctx, current, intent["customer"])
        updated = copy.deepcopy(current)
        updated["_setup_done"] = True
        ctx.store.replace(payment_methods.KIND, updated)
    elif current["customer"] is None:
        updated = copy.deepcopy(current)
        updated["_consumed"] = True
        ctx.store.replace(payment_methods.KIND, updated)


def complete_authentication(ctx: RequestContext, intent_id: str, outcome: str) -> StripeObject:
    """What the customer does on the 3D Secure page: `succeed` or `fail` (operator control)."""
    intent = fetch(ctx, KIND, intent_id, "payment_intent")
    if intent["status"] != "requires_action" or (intent["next_action"] or {}).get("type") not in (
        "use_stripe_sdk",
        "redirect_to_url",
    ):
        raise invalid(
            f"PaymentIntent {intent_id} is not awaiting authentication (status {intent['status']})."
        )
    if outcome not in ("succeed", "fail"):
        raise invalid("outcome must be succeed or fail", param="outcome")
    after = copy.deepcopy(intent)
    after["next_action"] = None
    pm = ctx.store.get(payment_methods.KIND, after["payment_method"])
    assert pm is not None
    if outcome == "succeed":
        return _authorized(ctx, after, pm)
    after["last_payment_error"] = error_object(
        code="payment_intent_authentication_failure",
        message=(
            "The provided PaymentMethod has failed authentication. You can provide "
            "payment_method_data or a new PaymentMethod to attempt to fulfill this "
            "PaymentIntent again."
        ),
        type_="invalid_request_error",
        payment_method=payment_methods.public(ctx, pm),
    )
    after["payment_method"] = None
    after["status"] = "requires_payment_method"
    ctx.store.replace(KIND, after)
    ctx.emit("payment_intent.payment_failed", after)
    _outcome(ctx, after, False)
    return after


# --- customer balance (bank transfers) ---------------------------------------------------


def _start_bank_transfer(ctx: RequestContext, intent: StripeObject) -> StripeObject:
    customer = intent["customer"]
    if customer is None:
        raise invalid(
            "A customer is required to use the customer_balance payment method.",
            param="customer",
        )
    options = (intent["_options"] or {}).get("customer_balance") or {}
    transfer_type = (options.get("bank_transfer") or {}).get("type") or (
        cash_balances.BANK_TRANSFER_TYPES.get(intent["currency"])
    )
    if transfer_type is None or transfer_type not in cash_balances.BANK_TRANSFER_TYPES.values():
        raise invalid(
            f"The emulator offers bank transfers in usd, eur and gbp only (got "
            f"{intent['currency']}).",
            param="payment_method_options[customer_balance][bank_transfer][type]",
        )
    intent["status"] = "requires_action"
    intent["next_action"] = {
        "type": "display_bank_transfer_instructions",
        "display_bank_transfer_instructions": {
            "amount_remaining": intent["amount"] - intent["_funded"],
            "currency": intent["currency"],
            "financial_addresses": [_financial_address(customer, transfer_type)],
            "hosted_instructions_url": (
                f"https://payments.stripe.com/bank_transfers/instructions/{intent['id']}"
            ),
            "reference": _reference(intent["id"]),
            "type": transfer_type,
        },
    }
    ctx.store.replace(KIND, intent)
    applied = _apply_cash(ctx, intent) if cash_balances.automatic(ctx, customer) else intent
    if applied["status"] == "requires_action":
        ctx.emit("payment_intent.requires_action", applied)
    return applied


def _apply_cash(
    ctx: RequestContext, intent: StripeObject, limit: int | None = None
) -> StripeObject:
    """Move what the customer's cash balance holds (at most `limit`) onto one waiting
    intent."""
    customer, cur = intent["customer"], intent["currency"]
    remaining = intent["amount"] - intent["_funded"]
    take = min(cash_balances.available(ctx, customer, cur), remaining)
    if limit is not None:
        take = min(take, limit)
    if take <= 0:
        return intent
    cash_balances.move(
        ctx,
        customer,
        cur,
        -take,
        type_="applied_to_payment",
        details={"applied_to_payment": {"payment_intent": intent["id"]}},
    )
    after = copy.deepcopy(intent)
    after["_funded"] += take
    instructions = after["next_action"]["display_bank_transfer_instructions"]
    instructions["amount_remaining"] = remaining - take
    if remaining - take > 0:
        ctx.store.replace(KIND, after)
        ctx.emit("payment_intent.partially_funded", after)
        return after
    pm = ctx.store.get(payment_methods.KIND, after["payment_method"])
    assert pm is not None
    after["next_action"] = None
    after["status"] = "succeeded"
    after["amount_received"] = after["amount"]
    charge = _charge(ctx, after, pm, failure=None)
    after["latest_charge"] = charge["id"]
    ctx.store.replace(KIND, after)
    ctx.emit("charge.succeeded", charge)
    ctx.emit("payment_intent.succeeded", after)
    _outcome(ctx, after, True)
    return after


def fund_cash_balance(
    ctx: RequestContext,
    customer_id: str,
    amount: int,
    currency_code: str,
    reference: str | None = None,
) -> StripeObject:
    """Credit a customer's cash balance (a test bank transfer) and apply it to its waiting
    `customer_balance` payment intents, oldest first; returns the `funded` transaction."""
    fetch(ctx, "customer", customer_id, "customer", param="customer")
    if amount <= 0:
        raise invalid("The amount must be a positive integer.", param="amount")
    cur = _currency(currency_code)
    transfer_type = cash_balances.BANK_TRANSFER_TYPES.get(cur)
    if transfer_type is None:
        raise invalid(
            "The emulator funds cash balances in usd, eur and gbp only.", param="currency"
        )
    funded = cash_balances.move(
        ctx,
        customer_id,
        cur,
        amount,
        type_="funded",
        details={"funded": {"bank_transfer": _funded_details(transfer_type, reference)}},
    )
    waiting = [
        pi
        for pi in ctx.store.collection(KIND).objects.values()
        if pi["customer"] == customer_id
        and pi["currency"] == cur
        and pi["status"] == "requires_action"
        and (pi["next_action"] or {}).get("type") == "display_bank_transfer_instructions"
    ]
    for intent in sorted(waiting, key=lambda pi: pi["created"]):
        if cash_balances.available(ctx, customer_id, cur) <= 0:
            break
        if cash_balances.automatic(ctx, customer_id):
            _apply_cash(ctx, intent)
    if cash_balances.available(ctx, customer_id, cur) > 0:
        balance = cash_balances.balance_of(ctx, customer_id)
        ctx.emit("cash_balance.funds_available", cash_balances.render_balance(balance))
    return funded


def apply_customer_balance(
    ctx: RequestContext, params: Params, path: dict[str, str]
) -> StripeObject:
    """`POST /v1/payment_intents/{intent}/apply_customer_balance`: reconcile by hand (what
    `reconciliation_mode=manual` needs), `amount` defaulting to what remains."""
    intent = _intent(ctx, path)
    waiting = (intent["next_action"] or {}).get("type") == "display_bank_transfer_instructions"
    if intent["status"] != "requires_action" or not waiting:
        raise invalid(
            "Only a customer_balance PaymentIntent awaiting funds can have the customer "
            "balance applied.",
            param="intent",
            code="payment_intent_unexpected_state",
        )
    if "currency" in params and _currency(params["currency"]) != intent["currency"]:
        raise invalid("The currency must match the PaymentIntent's currency.", param="currency")
    remaining = intent["amount"] - intent["_funded"]
    amount = params.get("amount", remaining)
    if not 0 < amount <= remaining:
        raise invalid(
            f"The amount must be positive and at most the amount remaining ({remaining}).",
            param="amount",
        )
    if cash_balances.available(ctx, intent["customer"], intent["currency"]) < amount:
        raise invalid(
            "The customer's cash balance does not hold that amount.",
            param="amount",
            code="balance_insufficient",
        )
    return render(ctx.store, _apply_cash(ctx, intent, amount), expand_of(params))


def fund_cash_balance_endpoint(
    ctx: RequestContext, params: Params, path: dict[str, str]
) -> StripeObject:
    """`POST /v1/test_helpers/customers/{customer}/fund_cash_balance`."""
    funded = fund_cash_balance(
        ctx, path["customer"], params["amount"], params["currency"], params.get("reference")
    )
    return render(ctx.store, funded, expand_of(params))


def _funded_details(transfer_type: str, reference: str | None) -> StripeObject:
    details: StripeObject = {"reference": reference, "type": transfer_type}
    if transfer_type == "us_bank_transfer":
        details["us_bank_transfer"] = {"network": "ach", "sender_name": "Emulator Sender"}
    elif transfer_type == "eu_bank_transfer":
        details["eu_bank_transfer"] = {
            "bic": "EMULDEFFXXX",
            "iban_last4": "0000",
            "sender_name": "Emulator Sender",
        }
    else:
        details["gb_bank_transfer"] = {
            "account_number_last4": "0000",
            "sender_name": "Emulator Sender",
            "sort_code": "000000",
        }
    return details


def _financial_address(customer: str, transfer_type: str) -> StripeObject:
    # A fake account per customer, stable across intents (Stripe assigns one per customer).
    digits = str(int(hashlib.sha256(customer.encode()).hexdigest(), 16))[:12]
    holder = {
        "city": "San Francisco",
        "country": "US",
        "line1": "1 Emulator Way",
        "line2": None,
        "postal_code": "94107",
        "state": "CA",
    }
    bank = {**holder, "line1": "1 Test Bank Plaza"}
    if transfer_type == "us_bank_transfer":
        return {
            "aba": {
                "account_holder_address": holder,
                "account_holder_name": "Emulator Test Account",
                "account_number": digits,
                "account_type": "checking",
                "bank_address": bank,
                "bank_name": "Emulator Test Bank",
                "routing_number": "110000000",
            },
            "supported_networks": ["ach", "domestic_wire_us"],
            "type": "aba",
        }
    if transfer_type == "eu_bank_transfer":
        eu = {**holder, "city": "Berlin", "country": "DE", "postal_code": "10115", "state": None}
        return {
            "iban": {
                "account_holder_address": eu,
                "account_holder_name": "Emulator Test Account",
                "bank_address": eu,
                "bic": "EMULDEFFXXX",
                "country": "DE",
                "iban": f"DE89370400440{digits[:9]}",
            },
            "supported_networks": ["sepa"],
            "type": "iban",
        }
    gb = {**holder, "city": "London", "country": "GB", "postal_code": "EC1A 1BB", "state": None}
    return {
        "sort_code": {
            "account_holder_address": gb,
            "account_holder_name": "Emulator Test Account",
            "account_number": digits[:8],
            "bank_address": gb,
            "sort_code": "108800",
        },
        "supported_networks": ["bacs", "fps"],
        "type": "sort_code",
    }


def _reference(intent_id: str) -> str:
    return hashlib.sha256(intent_id.encode()).hexdigest()[:10].upper()


# --- cancel / capture --------------------------------------------------------------------


def cancel(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/payment_intents/{intent}/cancel` (applied cash goes back to the balance)."""
    intent = _intent(ctx, path)
    if intent["status"] not in CANCELABLE:
        raise _unexpected_state(intent, "cancel")
    check_enum(params.get("cancellation_reason"), "cancellation_reason", CANCELLATION_REASONS)
    after = copy.deepcopy(intent)
    if after["_funded"] > 0:
        cash_balances.move(
            ctx,
            after["customer"],
            after["currency"],
            after["_funded"],
            type_="unapplied_from_payment",
            details={"unapplied_from_payment": {"payment_intent": after["id"]}},
        )
        after["_funded"] = 0
    held = intent["status"] == "requires_capture"
    after["status"] = "canceled"
    after["canceled_at"] = time_for(ctx, after["customer"])
    after["cancellation_reason"] = params.get("cancellation_reason")
    after["next_action"] = None
    after["amount_capturable"] = 0
    ctx.store.replace(KIND, after)
    if held:
        # "For PaymentIntents with a status of requires_capture, the remaining
        # amount_capturable is automatically refunded" (docs.stripe.com/api/payment_intents/cancel):
        # the uncaptured charge is released.
        charge = ctx.store.get(CHARGE, after["latest_charge"])
        if charge is not None:
            released = copy.deepcopy(charge)
            released["refunded"] = True
            released["amount_refunded"] = intent["amount_capturable"]
            ctx.store.replace(CHARGE, released)
            ctx.emit("charge.refunded", released)
    ctx.emit("payment_intent.canceled", after)
    if held:
        # The authorized payment will never succeed: waiting objects learn it as a failure.
        _outcome(ctx, after, False)
    return render(ctx.store, after, expand_of(params))


def capture(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/payment_intents/{intent}/capture` (`capture_method=manual` only)."""
    intent = _intent(ctx, path)
    if intent["status"] != "requires_capture":
        raise _unexpected_state(intent, "capture")
    amount: int = params.get("amount_to_capture") or intent["amount_capturable"]
    if not 0 < amount <= intent["amount_capturable"]:
        raise invalid(
            "The amount to capture must be positive and at most the amount capturable "
            f"({intent['amount_capturable']}).",
            param="amount_to_capture",
        )
    after = copy.deepcopy(intent)
    after["status"] = "succeeded"
    after["amount_received"] = amount
    after["amount_capturable"] = 0
    after["metadata"] = apply_metadata(after["metadata"], params.get("metadata"))
    for name in ("statement_descriptor", "statement_descriptor_suffix"):
        if name in params:
            after[name] = params[name]
    charge = ctx.store.get(CHARGE, after["latest_charge"])
    assert charge is not None
    captured = copy.deepcopy(charge)
    captured["captured"] = True
    captured["amount_captured"] = amount
    ctx.store.replace(CHARGE, captured)
    ctx.store.replace(KIND, after)
    ctx.emit("charge.captured", captured)
    ctx.emit("payment_intent.succeeded", after)
    # The capture is when a manual-capture payment succeeds: the same hooks as a confirm's.
    _outcome(ctx, after, True)
    return render(ctx.store, ctx.store.get(KIND, after["id"]) or after, expand_of(params))


# --- charges -------------------------------------------------------------------------------


def get_charge(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/charges/{charge}` (the charges payment intents create)."""
    return render(ctx.store, fetch(ctx, CHARGE, path["charge"], "charge"), expand_of(params))


def _charge(
    ctx: RequestContext,
    intent: StripeObject,
    pm: StripeObject,
    *,
    failure: str | None,
    captured: bool = True,
) -> StripeObject:
    ok = failure is None
    if pm["type"] == "card":
        card = pm["card"]
        details: StripeObject = {
            "card": {
                "amount_authorized": intent["amount"] if ok else None,
                "authorization_code": None,
                "extended_authorization": {"status": "disabled"},
                "incremental_authorization": {"status": "unavailable"},
                "installments": None,
                "multicapture": {"status": "unavailable"},
                "network_token": {"used": False},
                "overcapture": {
                    "maximum_amount_capturable": intent["amount"],
                    "status": "unavailable",
                },
                "brand": card["brand"],
                "checks": copy.deepcopy(card["checks"]),
                "country": card["country"],
                "exp_month": card["exp_month"],
                "exp_year": card["exp_year"],
                "fingerprint": card["fingerprint"],
                "funding": card["funding"],
                "last4": card["last4"],
                "mandate": None,
                "network": card["brand"],
                "network_transaction_id": None,
                "regulated_status": card["regulated_status"],
                "three_d_secure": None,
                "transaction_link_id": None,
                "wallet": None,
            },
            "type": "card",
        }
    else:
        details = {"customer_balance": {}, "type": "customer_balance"}
    message = None
    if failure is not None:
        error = payment_methods.last_error_for_decline(ctx, pm, failure, None)
        message = error["message"]
    charge_id = new_id("ch")
    charge: StripeObject = {
        "id": charge_id,
        "object": CHARGE,
        "amount": intent["amount"],
        "amount_captured": intent["amount"] if ok and captured else 0,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": None,
        "billing_details": copy.deepcopy(pm["billing_details"]),
        "calculated_statement_descriptor": "EMULATOR",
        "captured": ok and captured,
        "created": time_for(ctx, intent["customer"]),
        "currency": intent["currency"],
        "customer": intent["customer"],
        "description": intent["description"],
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": None
        if ok
        else ("card_declined" if failure != "authentication_required" else failure),
        "failure_message": message,
        "fraud_details": {},
        "livemode": False,
        "metadata": copy.deepcopy(intent["metadata"]),
        "on_behalf_of": None,
        "outcome": {
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "approved_by_network" if ok else "declined_by_network",
            "reason": failure,
            "risk_level": "normal",
            "seller_message": "Payment complete."
            if ok
            else "The bank did not return any further details with this decline.",
            "type": "authorized" if ok else "issuer_declined",
        },
        "paid": ok,
        "payment_intent": intent["id"],
        "payment_method": pm["id"],
        "payment_method_details": details,
        "receipt_email": intent["receipt_email"],
        "receipt_number": None,
        "receipt_url": None,
        "refunded": False,
        # Includable since 2022-11-15: served only with `expand[]=refunds`.
        "refunds": {
            "object": "list",
            "data": [],
            "has_more": False,
            "url": f"/v1/charges/{charge_id}/refunds",
        },
        "review": None,
        "shipping": copy.deepcopy(intent["shipping"]),
        "source": None,
        "source_transfer": None,
        "statement_descriptor": intent["statement_descriptor"],
        "statement_descriptor_suffix": intent["statement_descriptor_suffix"],
        "status": "succeeded" if ok else "failed",
        "transfer_data": None,
        "transfer_group": intent["transfer_group"],
    }
    ctx.store.insert(CHARGE, charge)
    return charge


# --- helpers -----------------------------------------------------------------------------


def _intent(ctx: RequestContext, path: dict[str, str]) -> StripeObject:
    return fetch(ctx, KIND, path["intent"], "payment_intent", param="intent")


def _refuse_unsupported(params: Params) -> None:
    # Each is 400 naming it (docs/emulator.md, "Left out"): no Connect, mandates,
    # confirmation tokens, Radar, payment records or amount breakdowns in the emulator.
    refuse_unsupported(params, UNSUPPORTED)


def _owner_message(intent: StripeObject) -> Callable[[StripeObject, str], str]:
    def message(pm: StripeObject, owner: str) -> str:
        if intent["customer"] is None:
            return (
                f"The provided PaymentMethod {pm['id']} belongs to Customer {owner}. Please "
                "include the Customer in the `customer` parameter on the PaymentIntent."
            )
        return (
            f"The provided PaymentMethod {pm['id']} belongs to Customer {owner} and "
            f"cannot be used with Customer {intent['customer']}."
        )

    return message


def _payment_method_from(
    ctx: RequestContext, intent: StripeObject, params: Params
) -> StripeObject | None:
    """The payment method named by `payment_method` / `payment_method_data`, checked
    against the intent's customer and allowed types (raw card data refused)."""
    return payment_method_from(
        ctx,
        intent,
        params,
        label=LABEL,
        kind=KIND,
        owner_message=_owner_message(intent),
        raw_cards=False,
    )


def _options(intent: StripeObject) -> StripeObject:
    requested = intent["_options"] or {}
    options: StripeObject = {}
    for kind in intent["payment_method_types"]:
        given = requested.get(kind) or {}
        if kind == "card":
            card: StripeObject = {
                "installments": None,
                "mandate_options": None,
                "network": None,
                "request_three_d_secure": given.get("request_three_d_secure", "automatic"),
            }
            for key in ("capture_method", "setup_future_usage"):
                if key in given:
                    card[key] = nullable(given[key])
            options[kind] = card
        elif kind == "customer_balance":
            transfer = given.get("bank_transfer") or {}
            options[kind] = {
                "bank_transfer": {
                    "type": transfer.get("type")
                    or cash_balances.BANK_TRANSFER_TYPES.get(intent["currency"]),
                    **(
                        {"requested_address_types": transfer["requested_address_types"]}
                        if "requested_address_types" in transfer
                        else {}
                    ),
                },
                "funding_type": given.get("funding_type", "bank_transfer"),
            }
        else:
            options[kind] = copy.deepcopy(given)
    return options


def _shipping(raw: Any) -> StripeObject | None:
    if raw is None:
        return None
    address = raw.get("address") or {}
    return {
        "address": {
            k: address.get(k) for k in ("city", "country", "line1", "line2", "postal_code", "state")
        },
        "carrier": raw.get("carrier"),
        "name": raw.get("name"),
        "phone": raw.get("phone"),
        "tracking_number": raw.get("tracking_number"),
    }


def _currency(value: str) -> str:
    cur = currency(value)
    if cur not in ISO_4217:
        raise invalid(
            f"Invalid currency: {value}. Stripe currently supports these currencies: "
            "see https://stripe.com/docs/currencies.",
            param="currency",
            code="parameter_invalid_string",
        )
    return cur


def _check_amount(amount: int, cur: str) -> None:
    if amount < 1:
        raise invalid("This value must be greater than or equal to 1.", param="amount")
    minimum = MINIMUM_AMOUNTS.get(cur)
    if minimum is not None and amount < minimum:
        raise invalid(
            f"Amount must be at least {minimum} {cur} minor units.",
            param="amount",
            code="amount_too_small",
        )
    if amount > MAX_AMOUNT:
        raise invalid(
            "Amount must be no more than 99999999.", param="amount", code="amount_too_large"
        )


def _unexpected_state(intent: StripeObject, action: str) -> StripeError:
    return unexpected_state(intent, action, label=LABEL, kind=KIND)
