"""Tax ids: `/v1/customers/{customer}/tax_ids` and the top-level `/v1/tax_ids`.

A tax id belongs to a customer (`owner.type = customer`) or to the account itself
(`owner.type = self`, only through `/v1/tax_ids`); Connect owners (`account`, `application`)
are refused, the emulator has no connected accounts. `type` must be one of the SDK's
`TaxId.type` values (`unknown` is legacy and cannot be created); a few common types have their
value format checked (`FORMATS`), the rest only need a value. Stripe's error for a bad value
is `400 tax_id_invalid` (param `value`, or `tax_id_data[i][value]` on a customer create).

Verification: Stripe checks `eu_vat` (VIES), `gb_vat` (HMRC) and `au_abn` (ABR)
asynchronously: a new id is `pending`, and a later `customer.tax_id.updated` carries the
result. The emulator has no registries: a value whose digits contain `000000000` becomes
`verified`, one with `111111111` `unverified`; the create still answers `pending` and the
`customer.tax_id.updated` (with `previous_attributes.verification`) follows within the same
request. These magic values are the emulator's (modelled on Stripe's test-mode values, not
checked against Stripe here); any other value stays `pending`. Every other type is
`unavailable`.

Events: `customer.tax_id.created/updated/deleted` for customer tax ids; the account's own emit
none (the SDK's `Event.type` has no `tax_id.*`). Deleting a customer removes its tax ids
without events.

A customer's tax ids are listed by id (`_tax_ids` on the stored customer, oldest first), so
the list stays flat as the account grows; the account's own are found by a scan.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import Any

from stripe_emulator.core import RequestContext
from stripe_emulator.errors import invalid, invalid_enum, no_such
from stripe_emulator.ids import new_id
from stripe_emulator.listing import expand_of, list_response
from stripe_emulator.params import Constant, OneOf, Params, schema_for
from stripe_emulator.render import render
from stripe_emulator.resources._common import deleted_stub, fetch
from stripe_emulator.routing import Router
from stripe_emulator.state import StripeObject

KIND = "tax_id"
CUSTOMER = "customer"
# The customer's private list of its tax ids (ids, oldest first).
CUSTOMER_TAX_IDS = "_tax_ids"

_EU_PREFIXES = {
    "AT": "AT",
    "BE": "BE",
    "BG": "BG",
    "CY": "CY",
    "CZ": "CZ",
    "DE": "DE",
    "DK": "DK",
    "EE": "EE",
    "EL": "GR",
    "ES": "ES",
    "FI": "FI",
    "FR": "FR",
    "HR": "HR",
    "HU": "HU",
    "IE": "IE",
    "IT": "IT",
    "LT": "LT",
    "LU": "LU",
    "LV": "LV",
    "MT": "MT",
    "NL": "NL",
    "PL": "PL",
    "PT": "PT",
    "RO": "RO",
    "SE": "SE",
    "SI": "SI",
    "SK": "SK",
    "XI": "GB",
}

# type -> the value's format (upper-cased, checked whole). From the examples of Stripe's
# tax id table (`DE123456789`, `GB123456789`, `12-3456789`, `12ABCDE3456FGZH`, ...).
FORMATS: dict[str, re.Pattern[str]] = {
    "eu_vat": re.compile(r"(" + "|".join(_EU_PREFIXES) + r")[0-9A-Z+*]{2,12}"),
    "gb_vat": re.compile(r"GB(\d{9}|\d{12}|GD\d{3}|HA\d{3})"),
    "us_ein": re.compile(r"\d{2}-\d{7}"),
    "in_gst": re.compile(r"\d{2}[A-Z]{5}\d{4}[A-Z][0-9A-Z]Z[0-9A-Z]"),
    "au_abn": re.compile(r"\d{11}"),
    "ca_bn": re.compile(r"\d{9}"),
    "ca_gst_hst": re.compile(r"\d{9}RT\d{4}"),
    "ch_vat": re.compile(r"CHE-\d{3}\.\d{3}\.\d{3} (MWST|TVA|IVA)"),
    "jp_cn": re.compile(r"\d{13}"),
    "jp_trn": re.compile(r"T\d{13}"),
    "no_vat": re.compile(r"\d{9}MVA"),
}

VERIFIED_TYPES = frozenset({"eu_vat", "gb_vat", "au_abn"})
_MAGIC_RESULTS = {"000000000": "verified", "111111111": "unverified"}


def register(router: Router) -> None:
    """Attach the customer and account tax id endpoints."""
    c = "_customer_tax_id_"
    of_customer = "/v1/customers/{customer}/tax_ids"
    router.add("POST", of_customer, f"{c}create_params.CustomerTaxIdCreateParams", create_for)
    router.add("GET", of_customer, f"{c}list_params.CustomerTaxIdListParams", list_for)
    one = of_customer + "/{id}"
    router.add("GET", one, f"{c}retrieve_params.CustomerTaxIdRetrieveParams", retrieve_for)
    router.add("DELETE", one, f"{c}delete_params.CustomerTaxIdDeleteParams", delete_for)
    t = "_tax_id_"
    router.add("POST", "/v1/tax_ids", f"{t}create_params.TaxIdCreateParams", create_top)
    router.add("GET", "/v1/tax_ids", f"{t}list_params.TaxIdListParams", list_top)
    router.add("GET", "/v1/tax_ids/{id}", f"{t}retrieve_params.TaxIdRetrieveParams", retrieve_top)
    router.add("DELETE", "/v1/tax_ids/{id}", f"{t}delete_params.TaxIdDeleteParams", delete_top)


@cache
def creatable_types() -> tuple[str, ...]:
    """`TaxId.type` values a request may use: the SDK's `Literal` minus legacy `unknown`."""
    node = schema_for("stripe.params._tax_id_create_params.TaxIdCreateParams").fields["type"]
    assert isinstance(node, OneOf)
    values: set[str] = set()
    for option in node.options:
        if isinstance(option, Constant):
            values |= option.values
    return tuple(sorted(values - {"unknown"}))


def check_tax_id(type_: str, value: str, *, param_prefix: str = "") -> str | None:
    """Validate `type`/`value` (params named under `param_prefix`, e.g. `tax_id_data[0]`);
    returns the tax id's country (None for `eu_oss_vat`)."""
    if type_ not in creatable_types():
        raise invalid_enum(_param(param_prefix, "type"), creatable_types())
    normalized = value.strip().upper()
    pattern = FORMATS.get(type_)
    if not normalized or (pattern is not None and not pattern.fullmatch(normalized)):
        raise invalid(
            f"Invalid value for {type_}.",
            param=_param(param_prefix, "value"),
            code="tax_id_invalid",
        )
    if type_ == "eu_vat":
        return _EU_PREFIXES[normalized[:2]]
    if type_ == "eu_oss_vat":
        return None
    return type_.split("_", 1)[0].upper()


def _param(prefix: str, name: str) -> str:
    return f"{prefix}[{name}]" if prefix else name


def new_tax_id(
    ctx: RequestContext, type_: str, value: str, *, customer_id: str | None
) -> StripeObject:
    """Store a tax id (already validated) and emit its `created` event; verification of the
    magic values follows as an `updated` event. Returns the object as created (`pending`)."""
    country = check_tax_id(type_, value)
    owner: StripeObject = {
        "customer": customer_id,
        "customer_account": None,
        "type": "customer" if customer_id else "self",
    }
    tax_id: StripeObject = {
        "id": new_id("txi"),
        "object": KIND,
        "country": country,
        "created": ctx.now(),
        "customer": customer_id,
        "customer_account": None,
        "livemode": False,
        "owner": owner,
        "type": type_,
        "value": value,
        "verification": {
            "status": "pending" if type_ in VERIFIED_TYPES else "unavailable",
            "verified_address": None,
            "verified_name": None,
        },
    }
    ctx.store.insert(KIND, tax_id)
    if customer_id is not None:
        _link(ctx, customer_id, tax_id["id"], add=True)
    _emit(ctx, tax_id, "created")
    created = copy.deepcopy(tax_id)
    _verify(ctx, tax_id)
    return created


def tax_ids_of(ctx: RequestContext, customer: StripeObject) -> list[StripeObject]:
    """A customer's tax ids, newest first."""
    ids: list[str] = customer.get(CUSTOMER_TAX_IDS, [])
    found = (ctx.store.get(KIND, i) for i in reversed(ids))
    return [t for t in found if t is not None]


def delete_all_of(ctx: RequestContext, customer: StripeObject) -> None:
    """Remove a deleted customer's tax ids (no events: the customer's deletion is the event)."""
    for tax_id in tax_ids_of(ctx, customer):
        ctx.store.delete(KIND, tax_id["id"])


def _verify(ctx: RequestContext, tax_id: StripeObject) -> None:
    if tax_id["type"] not in VERIFIED_TYPES:
        return
    digits = re.sub(r"\D", "", tax_id["value"])
    result = next((r for magic, r in _MAGIC_RESULTS.items() if magic in digits), None)
    if result is None:
        return
    before = copy.deepcopy(tax_id["verification"])
    after = copy.deepcopy(tax_id)
    after["verification"]["status"] = result
    ctx.store.replace(KIND, after)
    _emit(ctx, after, "updated", {"verification": before})


def _emit(
    ctx: RequestContext,
    tax_id: StripeObject,
    action: str,
    previous_attributes: dict[str, Any] | None = None,
) -> None:
    # Customer tax ids emit `customer.tax_id.*`; the account's own emit nothing (the SDK's
    # `Event.type` has no `tax_id.*`).
    if tax_id["customer"]:
        event = f"customer.tax_id.{action}"
        ctx.emit(event, tax_id, previous_attributes=previous_attributes)


def _link(ctx: RequestContext, customer_id: str, tax_id: str, *, add: bool) -> None:
    customer = fetch(ctx, CUSTOMER, customer_id, "customer")
    updated = copy.deepcopy(customer)
    ids = [i for i in updated.get(CUSTOMER_TAX_IDS, []) if i != tax_id]
    if add:
        ids.append(tax_id)
    updated[CUSTOMER_TAX_IDS] = ids
    ctx.store.replace(CUSTOMER, updated)


def create_for(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/customers/{customer}/tax_ids`."""
    customer = fetch(ctx, CUSTOMER, path["customer"], "customer")
    tax_id = new_tax_id(ctx, params["type"], params["value"], customer_id=customer["id"])
    return render(ctx.store, tax_id, expand_of(params))


def list_for(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/customers/{customer}/tax_ids`, newest first."""
    customer = fetch(ctx, CUSTOMER, path["customer"], "customer")
    return list_response(
        ctx.store,
        kind=KIND,
        params=params,
        url=f"/v1/customers/{customer['id']}/tax_ids",
        equals={"id": customer.get(CUSTOMER_TAX_IDS, [])},
    )


def retrieve_for(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/customers/{customer}/tax_ids/{id}`."""
    return render(ctx.store, _of_customer(ctx, path), expand_of(params))


def delete_for(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`DELETE /v1/customers/{customer}/tax_ids/{id}`."""
    return _delete(ctx, _of_customer(ctx, path))


def create_top(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/tax_ids` (`owner[type]` self, the default, or customer)."""
    customer_id = _owner_customer(ctx, params.get("owner"))
    tax_id = new_tax_id(ctx, params["type"], params["value"], customer_id=customer_id)
    return render(ctx.store, tax_id, expand_of(params))


def list_top(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/tax_ids`: the account's own (default) or `owner[customer]`'s."""
    customer_id = _owner_customer(ctx, params.get("owner"))
    if customer_id is not None:
        customer = fetch(ctx, CUSTOMER, customer_id, "customer", param="owner[customer]")
        equals: dict[str, Any] = {"id": customer.get(CUSTOMER_TAX_IDS, [])}
        return list_response(ctx.store, kind=KIND, params=params, url="/v1/tax_ids", equals=equals)
    return list_response(
        ctx.store,
        kind=KIND,
        params=params,
        url="/v1/tax_ids",
        predicate=lambda t: t["owner"]["type"] == "self",
    )


def retrieve_top(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/tax_ids/{id}`."""
    return render(ctx.store, fetch(ctx, KIND, path["id"], "tax_id"), expand_of(params))


def delete_top(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`DELETE /v1/tax_ids/{id}`."""
    return _delete(ctx, fetch(ctx, KIND, path["id"], "tax_id"))


def _delete(ctx: RequestContext, tax_id: StripeObject) -> StripeObject:
    ctx.store.delete(KIND, tax_id["id"])
    if tax_id["customer"]:
        _link(ctx, tax_id["customer"], tax_id["id"], add=False)
    _emit(ctx, tax_id, "deleted")
    return deleted_stub(tax_id)


def _of_customer(ctx: RequestContext, path: dict[str, str]) -> StripeObject:
    fetch(ctx, CUSTOMER, path["customer"], "customer")
    tax_id = fetch(ctx, KIND, path["id"], "tax_id")
    if tax_id["customer"] != path["customer"]:
        raise no_such("tax_id", path["id"])
    return tax_id


def _owner_customer(ctx: RequestContext, owner: dict[str, Any] | None) -> str | None:
    if owner is None or owner.get("type") == "self":
        return None
    kind = owner.get("type")
    if kind == "customer":
        customer = owner.get("customer")
        if customer is None:
            raise invalid(
                "owner[customer] is required when owner[type] is customer.",
                param="owner[customer]",
            )
        fetch(ctx, CUSTOMER, customer, "customer", param="owner[customer]", in_body=True)
        return str(customer)
    if kind in ("account", "application"):
        raise invalid(
            "The emulator has no connected accounts or applications: owner[type] must be "
            "self or customer.",
            param="owner[type]",
        )
    raise invalid_enum("owner[type]", ("account", "application", "customer", "self"))
