"""One module per Stripe resource; `build_router` wires them all."""

from __future__ import annotations

from stripe_emulator.core import Emulator
from stripe_emulator.routing import Router


def build_router(emulator: Emulator) -> Router:
    """The router with every resource's endpoints (and their clock hooks) registered."""
    from stripe_emulator.resources import (
        billing_portal,
        checkout_sessions,
        customers,
        events,
        features,
        invoices,
        meters,
        payment_intents,
        payment_methods,
        prices,
        products,
        setup_intents,
        subscription_schedules,
        subscriptions,
        tax_ids,
        test_clocks,
        webhook_endpoints,
    )

    router = Router()
    modules = (
        products,
        prices,
        customers,
        tax_ids,
        meters,
        features,
        webhook_endpoints,
        events,
        test_clocks,
        payment_methods,
        payment_intents,
        setup_intents,
        invoices,
        subscriptions,
        subscription_schedules,
        checkout_sessions,
        billing_portal,
    )
    for module in modules:
        module.register(router)
    subscriptions.ensure_indexes(emulator.store)
    if subscriptions.advance_clock not in emulator.clock_hooks:
        emulator.clock_hooks.append(subscriptions.advance_clock)
    # Schedules starting on a test clock run first: they drive the subscriptions' walk up to
    # each start themselves, so starts and renewals stay in time order.
    subscription_schedules.ensure_clock_hook(emulator.clock_hooks)
    return router
