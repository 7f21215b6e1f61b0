"""The SDK's `checkout.SessionCreateParams` plus `payment_method_types`, which Stripe refuses
for the pinned version with `payment_method_types_no_longer_supported` (see `_payments`);
everything else is the SDK's own TypedDict, so unknown parameters still get
`parameter_unknown`."""

import importlib
from typing import NotRequired

from stripe.params.checkout._session_create_params import (
    SessionCreateParams as _SessionCreateParams,
)

# The SDK's annotations are strings naming classes of their own module; `params.py` resolves
# them in the namespace of the module that defines the class, which is this one.
for _key, _value in vars(
    importlib.import_module("stripe.params.checkout._session_create_params")
).items():
    if not _key.startswith("_") and _key != "SessionCreateParams":
        globals().setdefault(_key, _value)


class CheckoutSessionCreateParams(_SessionCreateParams):
    """`POST /v1/checkout/sessions`."""

    payment_method_types: NotRequired[list[str]]
