"""Notices to a running `reconcile serve` from another process, through the webhook inbox.

The inbox is the one thing every replica and every CLI process shares that the leader already
watches (its pump claims unprocessed rows every `ServeSettings.inbox_poll_seconds`, on SQLite
and PostgreSQL alike), so a notice is an inbox row of our own type, never a Stripe event:
Stripe's event types have no `billing_reconciler.` prefix and its event ids start `evt_`.

`reconcile resume` stores `RESUMED` in the same transaction that lifts the suspension. The
leader's pump claims it and queues a whole-domain reconcile of every domain, so what the runs
planned while applying was suspended is applied within about a second of the resume, not at
each domain's next refresh (never, for a domain whose schedule is disabled). A notice nobody
claims (no serve running) is claimed by the next leader, which reconciles every domain at start
anyway.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from billing_reconciler.store import InboxRepository

RESUMED = "billing_reconciler.resumed"
"""The inbox type of the notice `reconcile resume` leaves for a running serve."""

_NOTICE_ID_PREFIX = "br_notice_"


def is_notice(event_type: str) -> bool:
    """True for an inbox row the controller wrote itself (not a Stripe event)."""
    return event_type.startswith("billing_reconciler.")


def store_resumed_notice(session: Session, *, actor: str) -> str:
    """Leave the `RESUMED` notice in the inbox (in the caller's transaction); its id."""
    notice_id = f"{_NOTICE_ID_PREFIX}{uuid.uuid4().hex}"
    payload: Mapping[str, Any] = {"id": notice_id, "type": RESUMED, "actor": actor}
    InboxRepository(session).store_event(
        event_id=notice_id,
        event_type=RESUMED,
        object_id=None,
        livemode=False,
        api_version=None,
        payload=payload,
    )
    return notice_id
