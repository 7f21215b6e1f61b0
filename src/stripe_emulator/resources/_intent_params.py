"""The SDK's intent params classes plus `payment_method_types`, which the pinned version
removed and Stripe refuses with `payment_method_types_no_longer_supported` (see `_payments`).

Everything else is the SDK's own TypedDict, unchanged: unknown parameters still get
`parameter_unknown`.
"""

import importlib
from typing import NotRequired

from stripe.params._payment_intent_confirm_params import (
    PaymentIntentConfirmParams as _PaymentIntentConfirmParams,
)
from stripe.params._payment_intent_create_params import (
    PaymentIntentCreateParams as _PaymentIntentCreateParams,
)
from stripe.params._payment_intent_update_params import (
    PaymentIntentUpdateParams as _PaymentIntentUpdateParams,
)
from stripe.params._setup_intent_confirm_params import (
    SetupIntentConfirmParams as _SetupIntentConfirmParams,
)
from stripe.params._setup_intent_create_params import (
    SetupIntentCreateParams as _SetupIntentCreateParams,
)
from stripe.params._setup_intent_update_params import (
    SetupIntentUpdateParams as _SetupIntentUpdateParams,
)

# The SDK's annotations are strings naming classes of their own module; `params.py` resolves
# them in the namespace of the module that defines the class, which is this one.
for _name in (
    "_payment_intent_confirm_params",
    "_payment_intent_create_params",
    "_payment_intent_update_params",
    "_setup_intent_confirm_params",
    "_setup_intent_create_params",
    "_setup_intent_update_params",
):
    for _key, _value in vars(importlib.import_module(f"stripe.params.{_name}")).items():
        if not _key.startswith("_") and not _key.endswith("Params"):
            globals().setdefault(_key, _value)


class PaymentIntentCreateParams(_PaymentIntentCreateParams):
    """`POST /v1/payment_intents`."""

    payment_method_types: NotRequired[list[str]]


class PaymentIntentUpdateParams(_PaymentIntentUpdateParams):
    """`POST /v1/payment_intents/{intent}`."""

    payment_method_types: NotRequired[list[str]]


class PaymentIntentConfirmParams(_PaymentIntentConfirmParams):
    """`POST /v1/payment_intents/{intent}/confirm`."""

    payment_method_types: NotRequired[list[str]]


class SetupIntentCreateParams(_SetupIntentCreateParams):
    """`POST /v1/setup_intents`."""

    payment_method_types: NotRequired[list[str]]


class SetupIntentUpdateParams(_SetupIntentUpdateParams):
    """`POST /v1/setup_intents/{intent}`."""

    payment_method_types: NotRequired[list[str]]


class SetupIntentConfirmParams(_SetupIntentConfirmParams):
    """`POST /v1/setup_intents/{intent}/confirm`."""

    payment_method_types: NotRequired[list[str]]
