"""The only code that calls the stripe SDK: client, pacing, retries, pagination, mapping.

`StripeGateway` is the configured client; `observe_catalog` reads the live catalog as `model`
records; `write` applies one change with the caller's idempotency key. Errors come out as
`TransientStripeError` (retried here, within the policy) or `PermanentStripeError`.
"""

from billing_reconciler.stripe_gateway.client import (
    RequestOutcome,
    StripeGateway,
    key_mode,
    redact_key,
)
from billing_reconciler.stripe_gateway.customers import (
    CustomerEvents,
    EventCursor,
    ObservedCustomers,
    add_tax_id,
    create_customer,
    customer_events_since,
    customers_by_id,
    delete_tax_id,
    map_customer,
    observe_customers,
    update_customer,
)
from billing_reconciler.stripe_gateway.errors import (
    PermanentStripeError,
    StripeGatewayError,
    TransientStripeError,
    scrub,
    translate,
)
from billing_reconciler.stripe_gateway.mapping import (
    map_catalog,
    map_feature,
    map_meter,
    map_price,
    map_product,
    map_product_feature,
)
from billing_reconciler.stripe_gateway.observe import (
    count_active_subscriptions,
    list_all,
    observe_catalog,
)
from billing_reconciler.stripe_gateway.pacing import KeyMode, RateLimiter, default_rate_limit
from billing_reconciler.stripe_gateway.retry import NO_RETRY, RetryPolicy
from billing_reconciler.stripe_gateway.webhook_signature import (
    DEFAULT_TOLERANCE_SECONDS,
    SIGNATURE_HEADER,
    WebhookSignatureError,
    sign_webhook_payload,
    signature_timestamp,
    verify_webhook_signature,
)
from billing_reconciler.stripe_gateway.write import Operation, WriteResult, write

__all__ = [
    "DEFAULT_TOLERANCE_SECONDS",
    "NO_RETRY",
    "SIGNATURE_HEADER",
    "CustomerEvents",
    "EventCursor",
    "KeyMode",
    "ObservedCustomers",
    "Operation",
    "PermanentStripeError",
    "RateLimiter",
    "RequestOutcome",
    "RetryPolicy",
    "StripeGateway",
    "StripeGatewayError",
    "TransientStripeError",
    "WebhookSignatureError",
    "WriteResult",
    "add_tax_id",
    "count_active_subscriptions",
    "create_customer",
    "customer_events_since",
    "customers_by_id",
    "default_rate_limit",
    "delete_tax_id",
    "key_mode",
    "list_all",
    "map_catalog",
    "map_customer",
    "map_feature",
    "map_meter",
    "map_price",
    "map_product",
    "map_product_feature",
    "observe_catalog",
    "observe_customers",
    "redact_key",
    "scrub",
    "sign_webhook_payload",
    "signature_timestamp",
    "translate",
    "update_customer",
    "verify_webhook_signature",
    "write",
]
