"""Ending the live subscription of an account that goes away: an org's delete and an
account's disable (DESIGN §19).

`end_subscription` runs inside the caller's transaction, so the end is recorded with the
delete or the disable or not at all. Without `force` a live paid subscription (its plan bills
a non-zero price in the account's currency, as the subscribe route tells a free plan) is
refused with 409 `failed_precondition` (an intent with no Stripe subscription, as a subscribe
Stripe refused, bills nothing and is not refused for). Otherwise the live subscription's
intent asks for an immediate cancel (`invoice_now` and `prorate`, as
`POST .../cancel {immediate: true}` does),
which the subscriptions domain carries out for the account on its next reconcile; an intent
with nothing in Stripe (an offline account's) just ends.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from billing_reconciler.api.context import ApiContext
from billing_reconciler.api.errors import precondition
from billing_reconciler.api.subscriptions import (
    AppliedCatalog,
    Shape,
    mirror_of,
    subscriptions_path,
)
from billing_reconciler.store import AccountRecord
from billing_reconciler.store.subscriptions import (
    TERMINAL_STATUSES,
    IntentRepository,
    MirroredSubscription,
    SubscriptionIntent,
    SubscriptionMirrorRepository,
)


def end_subscription(
    context: ApiContext, session: Session, org: str, account: AccountRecord, *, force: bool
) -> None:
    """Refuse while a paid subscription is live (unless `force`); else ask for the end of the
    live one (see the module docstring)."""
    intents = IntentRepository(session, clock=context.clock)
    intent = intents.current(account.id)
    if intent is None:
        return
    mirrored = mirror_of(intent, SubscriptionMirrorRepository(session).for_account(account.id))
    if mirrored is not None and mirrored.status in TERMINAL_STATUSES:
        return  # ended in Stripe; its mirror moves the intent on
    # Nothing in Stripe (a subscribe Stripe refused, an offline account's): nothing is billed,
    # so nothing to refuse for; the end below covers whatever else of ours is live.
    if not force and mirrored is not None and _paid(context, session, account, intent, mirrored):
        details: dict[str, str] = {
            "org_id": org,
            "account_id": account.id,
            "subscription_id": intent.id,
            "plan": intent.plan,
        }
        if mirrored is not None:
            details["stripe_subscription_id"] = mirrored.stripe_id
        raise precondition(
            f"organization {org} has a live paid subscription {intent.id} on plan "
            f"{intent.plan}: cancel it first (POST {subscriptions_path(org)}/{intent.id}/cancel) "
            "or delete with ?force=true (it is then cancelled at once)",
            **details,
        )
    if account.offline and mirrored is None:
        intents.end(account.id)  # nothing in Stripe: the intent just ends
    elif intent.cancel_mode != "immediate":
        intents.request_cancel(account.id, immediate=True, requested_by="organization deleted")


def _paid(
    context: ApiContext,
    session: Session,
    account: AccountRecord,
    intent: SubscriptionIntent,
    mirrored: MirroredSubscription | None,
) -> bool:
    """The live subscription bills a price that is not 0 in the account's currency: its
    plan (the mirrored one's marker, else the intent's) is not free. A plan that cannot be
    priced (removed, not applied) counts as paid, as the subscribe route counts it."""
    catalog = AppliedCatalog(session, context.installation_id())
    currency = (account.currency or context.config().billing.currency).lower()
    names = {intent.plan, *([mirrored.plan] if mirrored is not None and mirrored.plan else [])}
    for name in names:
        plan = catalog.plan(name)
        shape = None if plan is None else catalog.shape(plan, currency)
        if not (isinstance(shape, Shape) and shape.free):
            return True
    return False
