"""A typed, synchronous client of the host API (DESIGN §19), for host apps, demos and tests.

    with BillingClient("http://billing:8080", token=os.environ["BILLING_API_TOKEN"]) as billing:
        billing.put_organization("acme", title="Acme", owner_email="ops@acme.test")
        print(billing.get_balance("acme")["amount"])

Every method is one route; answers are the JSON resources as TypedDicts. An error answer
raises `BillingAPIError` with the status and the envelope's code, message and details. A
write that changes Stripe (`put_organization` opening an online account, `create_account`,
`patch_account`, `register_account`, `subscribe`, `change_subscription`,
`cancel_subscription`) waits server-side for Stripe's verdict; when that was not
in time (or the replica does not write) the server answers 202 and the method raises
`BillingPending` (the write is recorded: poll `get_account` later; not an error).
Depends on the standard library and httpx only (any httpx transport works, e.g. an ASGI app).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Required, Self, TypedDict, cast
from urllib.parse import quote

import httpx

PREFIX = "/v1beta1"


class BillingAPIError(Exception):
    """An error answer of the API (`code` is one of DESIGN §19's closed set)."""

    def __init__(self, status: int, code: str, message: str, details: Mapping[str, Any]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details)


class BillingPending(Exception):
    """202: the write is recorded, but Stripe's verdict was not in when the server answered.

    `reason`: `in_progress` (still running), `not_leader` (a follower replica: the leader's
    next refresh carries it to Stripe), `stopping`, or `not_applied` (applying suspended).
    `location` is the resource to poll; `request_id` names the request in the server's logs.
    """

    status = 202

    def __init__(self, request_id: str, reason: str, message: str, location: str | None) -> None:
        super().__init__(f"202 pending ({reason}): {message}")
        self.request_id = request_id
        self.reason = reason
        self.message = message
        self.location = location


class Organization(TypedDict):
    id: str
    title: str
    owner_email: str | None
    metadata: dict[str, str]
    created_at: str
    updated_at: str


class Member(TypedDict):
    user_id: str
    email: str | None
    role: str | None
    created_at: str


class Address(TypedDict, total=False):
    line1: str | None
    line2: str | None
    city: str | None
    state: str | None
    postal_code: str | None
    country: str | None


class TaxId(TypedDict):
    type: str
    value: str


class Account(TypedDict):
    id: str
    org_id: str
    stripe_customer_id: str | None
    state: Literal["active", "disabled"]
    offline: bool
    name: str | None
    email: str | None
    phone: str | None
    address: Address | None
    tax_ids: list[TaxId]
    currency: str | None
    credit_min: int
    due_in_days: int
    test_clock: str | None
    metadata: dict[str, str]
    created_at: str


class Balance(TypedDict):
    amount: int
    updated_at: str | None


class Transaction(TypedDict):
    id: str
    type: Literal["credit", "debit"]
    amount: int
    source: str
    description: str | None
    user_id: str | None
    metadata: dict[str, Any]
    created_at: str
    reverts: str | None


class Plan(TypedDict):
    name: str
    title: str
    description: str | None
    interval: str | None
    trial_days: int
    on_start_credits: int
    products: list[str]
    metadata: dict[str, Any]


class Price(TypedDict):
    name: str
    stripe_price_id: str | None
    currency: str | None
    amount: int | None
    interval: str | None
    lookup_key: str | None


class Product(TypedDict):
    name: str
    title: str | None
    description: str | None
    stripe_product_id: str | None
    prices: list[Price]


class Feature(TypedDict):
    name: str
    title: str | None
    stripe_feature_id: str | None
    lookup_key: str | None


class PendingChange(TypedDict):
    plan: str | None
    effective_at: str | None
    reason: Literal["change", "cancel"]


class Subscription(TypedDict):
    id: str
    org_id: str
    stripe_subscription_id: str | None
    plan: str
    state: str | None
    seats: int | None
    trial_ends_at: str | None
    current_period_start: str | None
    current_period_end: str | None
    cancel_at: str | None
    canceled_at: str | None
    pending_change: PendingChange | None
    created_at: str
    refusal: str | None


class PreviewLine(TypedDict):
    description: str
    quantity: int | None
    amount: int
    period_start: str
    period_end: str


class ChangePreview(TypedDict):
    """What a plan change would invoice (`preview_change`); amounts in minor units."""

    subscription_id: str
    plan: str
    current_plan: str
    immediate: bool
    effective_at: str | None
    proration_behavior: Literal["create_prorations", "none", "always_invoice"]
    currency: str
    amount_due_now: int
    proration_lines: list[PreviewLine]
    next_renewal_total: int
    next_renewal_at: str | None


class SubscriptionPage(TypedDict):
    data: list[Subscription]
    next_cursor: str | None


class Trialed(TypedDict):
    plan: str
    trialed: bool
    had_plan: bool


class Entitlement(TypedDict):
    feature: str
    entitled: bool
    allowed: bool
    plan: str | None


class MemberPage(TypedDict):
    data: list[Member]
    next_cursor: str | None


class TransactionPage(TypedDict):
    data: list[Transaction]
    next_cursor: str | None


# --- usage (DESIGN §17) ----------------------------------------------------------------------


class MeterEventIn(TypedDict, total=False):
    """A usage's meter event: `event_name` (required), `value` (default: the usage's amount),
    `timestamp` (RFC 3339; default: when recorded)."""

    event_name: Required[str]
    value: int
    timestamp: str


class UsageIn(TypedDict, total=False):
    """One usage of `record_usages`: `id` and `amount` are required."""

    id: Required[str]
    amount: Required[int]
    source: str
    description: str
    user_id: str
    metadata: dict[str, str]
    meter: MeterEventIn


class UsagesRecorded(TypedDict):
    data: list[Transaction]
    created: list[str]
    replayed: list[str]
    balance: int


class CreditCheck(TypedDict):
    allowed: bool
    balance: int
    credit_min: int


class Revert(TypedDict):
    transaction: Transaction
    usage_id: str
    reverted: int
    remaining: int


class OverdraftWindow(TypedDict):
    """An account's evaluated overdraft window (deficit 0: nothing was owed)."""

    org_id: str
    window_start: str
    window_end: str
    deficit: int
    unit_amount: int | None
    currency: str | None
    invoice_id: str | None
    state: str | None
    credited: bool


class OverdraftGenerated(TypedDict):
    window_end: str
    invoices: list[str]
    data: list[OverdraftWindow]
    waiting: list[str]
    """Orgs overdrawn in the window whose Stripe customer does not exist yet."""
    next_window_end: str
    """The end of the next window, not due yet (overdrawn since `window_end`: invoiced then)."""
    next_invoice_at: str
    """When that window falls due (its invoice day, 00:00 UTC)."""
    state: str


class Purchase(TypedDict):
    """A purchase of a product; `checkout_id` None for a delegated one."""

    id: str
    product: str
    quantity: int
    checkout_id: str | None
    created_at: str
    credits: int
    transaction_id: str
    account_id: str
    """The billing account credited (a replay may name the org's earlier account)."""


class AccountFields(TypedDict, total=False):
    """Body of `create_account` / `patch_account` (patch: only what is given changes)."""

    name: str | None
    email: str | None
    phone: str | None
    address: Address | None
    tax_ids: list[TaxId]
    currency: str
    offline: bool
    test_clock: str
    metadata: dict[str, str]


def _segment(value: str) -> str:
    # Ids are quoted so a stray '/' or '?' reaches the server as data (and is refused there).
    return quote(value, safe="")


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


class BillingClient:
    """`base_url` is the server (`http://host:8080`); `token` an app or admin token."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        response = self._http.request(
            method, PREFIX + path, json=json, params=query, headers=headers
        )
        if response.status_code >= 400:
            raise _error(response)
        if response.status_code == 202:
            raise _pending(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    @staticmethod
    def _org(org_id: str) -> str:
        return f"/organizations/{_segment(org_id)}"

    # --- organizations and members ----------------------------------------------------------

    def put_organization(
        self,
        org_id: str,
        *,
        title: str,
        owner_email: str | None = None,
        metadata: Mapping[str, str] | None = None,
        test_clock: str | None = None,
    ) -> Organization:
        """Create or update an org; `test_clock` is sent as `X-Stripe-Test-Clock`."""
        body: dict[str, Any] = {"title": title}
        if owner_email is not None:
            body["owner_email"] = owner_email
        if metadata is not None:
            body["metadata"] = dict(metadata)
        headers = {"X-Stripe-Test-Clock": test_clock} if test_clock else None
        return cast(Organization, self._call("PUT", self._org(org_id), json=body, headers=headers))

    def delete_organization(self, org_id: str, *, force: bool = False) -> None:
        self._call("DELETE", self._org(org_id), params={"force": "true" if force else None})

    def put_member(
        self, org_id: str, user_id: str, *, email: str | None = None, role: str | None = None
    ) -> Member:
        body = {k: v for k, v in (("email", email), ("role", role)) if v is not None}
        path = f"{self._org(org_id)}/members/{_segment(user_id)}"
        return cast(Member, self._call("PUT", path, json=body))

    def delete_member(self, org_id: str, user_id: str) -> None:
        self._call("DELETE", f"{self._org(org_id)}/members/{_segment(user_id)}")

    def list_members(
        self, org_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> MemberPage:
        params = {"limit": limit, "cursor": cursor}
        return cast(MemberPage, self._call("GET", f"{self._org(org_id)}/members", params=params))

    def iter_members(self, org_id: str, *, limit: int = 500) -> Iterator[Member]:
        """Every member, following `next_cursor`."""
        cursor: str | None = None
        while True:
            page = self.list_members(org_id, limit=limit, cursor=cursor)
            yield from page["data"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    # --- billing accounts -------------------------------------------------------------------

    def get_account(self, org_id: str) -> Account:
        return cast(Account, self._call("GET", f"{self._org(org_id)}/billing"))

    def create_account(self, org_id: str, fields: AccountFields | None = None) -> Account:
        body = dict(fields or {})
        return cast(Account, self._call("POST", f"{self._org(org_id)}/billing", json=body))

    def patch_account(self, org_id: str, fields: AccountFields) -> Account:
        body = dict(fields)
        return cast(Account, self._call("PATCH", f"{self._org(org_id)}/billing", json=body))

    def register_account(self, org_id: str) -> Account:
        return cast(Account, self._call("POST", f"{self._org(org_id)}/billing/register"))

    def enable_account(self, org_id: str) -> Account:
        return cast(Account, self._call("POST", f"{self._org(org_id)}/billing/enable"))

    def disable_account(self, org_id: str) -> Account:
        return cast(Account, self._call("POST", f"{self._org(org_id)}/billing/disable"))

    # --- ledger -----------------------------------------------------------------------------

    def get_balance(self, org_id: str) -> Balance:
        return cast(Balance, self._call("GET", f"{self._org(org_id)}/billing/balance"))

    def list_transactions(
        self,
        org_id: str,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> TransactionPage:
        """Newest first, in `[start, end)` (aware datetimes)."""
        params = {"limit": limit, "cursor": cursor, "start": _time(start), "end": _time(end)}
        path = f"{self._org(org_id)}/billing/transactions"
        return cast(TransactionPage, self._call("GET", path, params=params))

    # --- subscriptions ----------------------------------------------------------------------

    def list_subscriptions(
        self, org_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> SubscriptionPage:
        """Newest first: the current subscription and those replaced or ended."""
        params = {"limit": limit, "cursor": cursor}
        path = f"{self._org(org_id)}/billing/subscriptions"
        return cast(SubscriptionPage, self._call("GET", path, params=params))

    def iter_subscriptions(self, org_id: str, *, limit: int = 500) -> Iterator[Subscription]:
        """Every subscription, following `next_cursor`."""
        cursor: str | None = None
        while True:
            page = self.list_subscriptions(org_id, limit=limit, cursor=cursor)
            yield from page["data"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def get_subscription(self, org_id: str, subscription_id: str) -> Subscription:
        path = f"{self._org(org_id)}/billing/subscriptions/{_segment(subscription_id)}"
        return cast(Subscription, self._call("GET", path))

    def subscribe(
        self,
        org_id: str,
        *,
        plan: str,
        skip_trial: bool = False,
        cancel_after_trial: bool = False,
    ) -> Subscription:
        """Admin: subscribe without a checkout; waits for Stripe (`BillingPending` on 202)."""
        body = {"plan": plan, "skip_trial": skip_trial, "cancel_after_trial": cancel_after_trial}
        path = f"{self._org(org_id)}/billing/subscriptions"
        return cast(Subscription, self._call("POST", path, json=body))

    def change_subscription(
        self,
        org_id: str,
        subscription_id: str,
        *,
        plan: str | None = None,
        immediate: bool = False,
        cancel_upcoming_changes: bool = False,
    ) -> Subscription:
        """Change the plan (at the period end, or now with `immediate`), or drop the upcoming
        change (`cancel_upcoming_changes=True`, without `plan`)."""
        body: dict[str, Any] = (
            {"cancel_upcoming_changes": True}
            if cancel_upcoming_changes
            else {"plan": plan, "immediate": immediate}
        )
        path = f"{self._org(org_id)}/billing/subscriptions/{_segment(subscription_id)}/change"
        return cast(Subscription, self._call("POST", path, json=body))

    def preview_change(
        self, org_id: str, subscription_id: str, plan: str, *, immediate: bool = False
    ) -> ChangePreview:
        """What changing to `plan` (at the period end, or now with `immediate`) would
        invoice, with the configured proration; nothing changes. Refused exactly as
        `change_subscription` would be."""
        body: dict[str, Any] = {"plan": plan, "immediate": immediate, "preview": True}
        path = f"{self._org(org_id)}/billing/subscriptions/{_segment(subscription_id)}/change"
        return cast(ChangePreview, self._call("POST", path, json=body))

    def cancel_subscription(
        self, org_id: str, subscription_id: str, *, immediate: bool = False
    ) -> Subscription:
        """Cancel at the current period end, or now (`immediate`)."""
        path = f"{self._org(org_id)}/billing/subscriptions/{_segment(subscription_id)}/cancel"
        return cast(Subscription, self._call("POST", path, json={"immediate": immediate}))

    def trialed(self, org_id: str, plan: str) -> Trialed:
        """Whether the account had the plan's trial (or the plan: a trial only once)."""
        path = f"{self._org(org_id)}/billing/plans/{_segment(plan)}/trialed"
        return cast(Trialed, self._call("GET", path))

    def check_entitlement(self, org_id: str, feature: str) -> Entitlement:
        path = f"{self._org(org_id)}/billing/entitlements/{_segment(feature)}"
        return cast(Entitlement, self._call("GET", path))

    # --- admin ------------------------------------------------------------------------------

    def grant_credits(
        self,
        org_id: str,
        *,
        id: str,
        amount: int,
        source: str | None = None,
        description: str | None = None,
    ) -> Transaction:
        """Admin: grant credits; resending the same grant returns the stored transaction."""
        body: dict[str, Any] = {"id": id, "amount": amount}
        if source is not None:
            body["source"] = source
        if description is not None:
            body["description"] = description
        path = f"/admin{self._org(org_id)}/billing/credits"
        return cast(Transaction, self._call("POST", path, json=body))

    def purchase_credits(
        self, org_id: str, *, product: str, quantity: int = 1, id: str | None = None
    ) -> Purchase:
        """Admin: a delegated purchase (no payment, nothing in Stripe) of `quantity` units of
        a credits product: `quantity x credit_amount` credits, source `system.awarded`. Pass
        an `id` to make retries safe: the same id again returns the stored purchase and adds
        nothing (another product or quantity under it: `id_conflict`); without one, each
        call is a new purchase."""
        body: dict[str, Any] = {"product": {"name": product, "quantity": quantity}}
        if id is not None:
            body["id"] = id
        path = f"{self._org(org_id)}/billing/subscriptions"
        return cast(Purchase, self._call("POST", path, json=body))

    def put_details(
        self, org_id: str, *, credit_min: int | None = None, due_in_days: int | None = None
    ) -> Account:
        """Admin: set the account's `credit_min` and/or `due_in_days`."""
        body = {
            k: v
            for k, v in (("credit_min", credit_min), ("due_in_days", due_in_days))
            if v is not None
        }
        path = f"/admin{self._org(org_id)}/billing/details"
        return cast(Account, self._call("PUT", path, json=body))

    # --- usage ------------------------------------------------------------------------------

    def record_usages(self, org_id: str, usages: Sequence[UsageIn]) -> UsagesRecorded:
        """Record 1..1000 usages atomically. Resending the same usages is safe (they come
        back in `replayed`, nothing changes); `insufficient_credits` (422) and `id_conflict`
        (409) name the usage (`details["usage_id"]`) and record nothing."""
        path = f"{self._org(org_id)}/billing/usages"
        return cast(UsagesRecorded, self._call("POST", path, json={"usages": list(usages)}))

    def record_usage(self, org_id: str, usage: UsageIn) -> Transaction:
        """One usage (`record_usages` of one); its transaction."""
        return self.record_usages(org_id, [usage])["data"][0]

    def check_credits(self, org_id: str, amount: int) -> CreditCheck:
        """Whether a usage of `amount` would be allowed now (reserves nothing)."""
        path = f"{self._org(org_id)}/billing/check"
        return cast(CreditCheck, self._call("POST", path, json={"amount": amount}))

    def revert_usage(
        self, org_id: str, usage_id: str, amount: int, *, id: str | None = None
    ) -> Revert:
        """Admin: credit back `amount` of a usage (together at most the usage's amount).
        Without `id` each call is a new revert; with one (an idempotency key) a retry of
        the same id answers the stored revert and gives back nothing more."""
        path = f"{self._org(org_id)}/billing/usages/{_segment(usage_id)}/revert"
        body: dict[str, Any] = {"amount": amount}
        if id is not None:
            body["id"] = id
        return cast(Revert, self._call("POST", path, json=body))

    def generate_overdraft_invoices(self) -> OverdraftGenerated:
        """Admin: overdraft invoicing now (the latest due window; once per window ever)."""
        return cast(OverdraftGenerated, self._call("POST", "/admin/billing/invoices/generate"))

    # --- catalog ----------------------------------------------------------------------------

    def _every(self, path: str) -> list[Any]:
        """Every item of a catalog list, following `next_cursor` (500 a page)."""
        items: list[Any] = []
        cursor: str | None = None
        while True:
            page = self._call("GET", path, params={"limit": 500, "cursor": cursor})
            items.extend(page["data"])
            cursor = page["next_cursor"]
            if cursor is None:
                return items

    def list_plans(self) -> list[Plan]:
        """Every active plan, by name (all pages)."""
        return cast(list[Plan], self._every("/billing/plans"))

    def get_plan(self, name: str) -> Plan:
        return cast(Plan, self._call("GET", f"/billing/plans/{_segment(name)}"))

    def list_products(self) -> list[Product]:
        """Every product as last applied, by name (all pages)."""
        return cast(list[Product], self._every("/billing/products"))

    def list_features(self) -> list[Feature]:
        """Every feature as last applied, by name (all pages)."""
        return cast(list[Feature], self._every("/billing/features"))


def _error(response: httpx.Response) -> BillingAPIError:
    try:
        error = response.json()["error"]
        return BillingAPIError(
            response.status_code,
            str(error["code"]),
            str(error["message"]),
            error.get("details") or {},
        )
    except (ValueError, KeyError, TypeError):
        # Not our envelope (a proxy in between, say): keep the status, not the body.
        return BillingAPIError(response.status_code, "unknown", f"HTTP {response.status_code}", {})


def _pending(response: httpx.Response) -> BillingPending:
    try:
        body = response.json()
        return BillingPending(
            str(body["request_id"]),
            str(body["reason"]),
            str(body["message"]),
            response.headers.get("Location"),
        )
    except (ValueError, KeyError, TypeError):
        return BillingPending("", "in_progress", "HTTP 202", response.headers.get("Location"))
