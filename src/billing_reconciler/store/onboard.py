"""Onboard credits (`customer.onboard_credits_with_org`): once per org, ever (DESIGN §15, §17).

Wherever an account is opened (the API's auto-create and explicit create, a contract customer
of the customers domain), the same grant is made in the transaction that opens it. The ledger
id is derived from the org id (`onboard_grant_id`), so a later account of the same org, a
retry or a replayed step finds it granted and grants nothing.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from billing_reconciler.store._common import Clock, utc_now
from billing_reconciler.store.ledger import SOURCE_AWARDED, LedgerRepository, onboard_grant_id

# DESIGN §16: "onboard credits have source `system.awarded`".
ONBOARD_SOURCE = SOURCE_AWARDED


def grant_onboard_credits(
    session: Session, *, account_id: str, org_id: str, amount: int, clock: Clock = utc_now
) -> bool:
    """Grant `amount` to the account unless the org ever had its onboard grant; True if
    granted now."""
    if amount <= 0:
        return False
    ledger = LedgerRepository(session, clock=clock)
    grant_id = onboard_grant_id(org_id)
    if ledger.get(grant_id) is not None:
        return False
    ledger.credit(
        account_id, id=grant_id, amount=amount, source=ONBOARD_SOURCE, description="onboard credits"
    )
    return True
