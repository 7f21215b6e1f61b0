"""The cancel-now step (`Action.ARCHIVE`): an immediate cancel request or a disabled account
(`invoice_now`, `prorate`), or a free subscription a paid one replaces (nothing invoiced).
Pure."""

from __future__ import annotations

from billing_reconciler.domains.subscription_draft import Draft
from billing_reconciler.domains.subscription_keys import CANCELS, ENDS, OP_CANCEL, SUBSCRIPTION_STEP
from billing_reconciler.domains.subscription_types import AccountSubscriptions
from billing_reconciler.model_subscriptions import SubscriptionRecord, subscription_key
from billing_reconciler.planning.plan import Action, FieldChange, Reason, Step


def cancel_now(
    draft: Draft,
    bundle: AccountSubscriptions,
    sub: SubscriptionRecord,
    *,
    replaced: bool,
    phase: int = CANCELS,
) -> None:
    """Cancel now: a cancel request or a disabled account (`invoice_now` and `prorate`, as
    Frontier), or a free subscription a paid one replaces (nothing to invoice)."""
    intent_id = bundle.intent.intent_id if bundle.intent is not None else ""
    params = {
        "op": OP_CANCEL,
        "subscription": sub.stripe_id,
        "invoice_now": not replaced,
        "prorate": not replaced,
        "settings": [],
    }
    draft.add(
        phase,
        Step(
            action=Action.ARCHIVE,
            kind=SUBSCRIPTION_STEP,
            # A replaced one is another object than the intent's subscription (created in
            # this plan under `subscription/<org>`): its own key, so recording its cancel
            # never drops what was recorded for the new one.
            # A disabled account's is too: a new account of the org plans under
            # `subscription/<org>` beside it.
            key=(
                f"{subscription_key(bundle.org_id)}/{sub.stripe_id}"
                if replaced or phase == ENDS
                else subscription_key(bundle.org_id)
            ),
            reason=Reason.DESIRED_CHANGED,
            params=params,
            changes=(FieldChange("status", sub.status, "canceled"),),
            stripe_id=sub.stripe_id,
            impact=(
                f"replaced by the intent's plan {bundle.intent.plan!r}"
                if replaced and bundle.intent is not None
                else f"billing account {bundle.account.account_id} is disabled"
                if phase == ENDS
                else None
            ),
            idempotency_key=draft.key("cancel", sub.stripe_id, intent_id),
        ),
    )
