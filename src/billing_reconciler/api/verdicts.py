"""A reconcile's `Verdict` (`api.pending`) as the answer of the write that waited for it.

- `failed` (Stripe or the plan refused it): 409 `failed_precondition`, or 402
  `payment_failed` when Stripe answered 402 (a declined card), naming Stripe's code and param;
- `unavailable` (the last attempt failed with a retryable error): 503 `provider_unavailable`;
- `pending` / `deferred`: 202 with an `Accepted` body and `Location` = the resource to poll;
- `done`: the route answers the resource as the reconcile left it in the store.

Every refusal here says the request is recorded: the fact was committed before the reconcile
ran, and the controller keeps reconciling it (after a fix of the refused field, or a retry).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from fastapi.responses import JSONResponse

from billing_reconciler.api.errors import ApiError
from billing_reconciler.api.models import Accepted
from billing_reconciler.api.pending import PendingReason, Verdict

_MESSAGES: Final[dict[PendingReason, str]] = {
    "in_progress": "recorded; the reconcile with Stripe is still running",
    "not_leader": (
        "recorded on a replica that does not write to Stripe; the leader's next refresh "
        "carries it to Stripe"
    ),
    "stopping": "recorded; this replica is shutting down and the next leader reconciles it",
    "not_applied": (
        "recorded; the reconcile ran but did not write to Stripe (applying is suspended, or "
        "leadership moved)"
    ),
}


def raise_if_refused(
    verdict: Verdict, *, tax_ids: Sequence[tuple[str, str]] = (), **details: Any
) -> None:
    """`failed` and `unavailable` as the §19 error answers; anything else returns.

    `tax_ids` are the account's (type, value) in its order: a refused `tax_ids[i].value`
    (the gateway counts in canonical order, sorted) is named by its place in that order."""
    failure = verdict.failure
    if failure is None or verdict.state not in ("failed", "unavailable"):
        return
    body: dict[str, Any] = {"request_id": verdict.request_id, **details}
    if failure.stripe_code is not None:
        body["stripe_code"] = failure.stripe_code
    if failure.stripe_param is not None:
        body["field"] = _in_account_order(failure.stripe_param, tax_ids)
    if verdict.state == "unavailable":
        raise ApiError(
            503,
            "provider_unavailable",
            f"recorded, but Stripe could not be reached to apply it ({failure.message}); the "
            "controller keeps retrying",
            body,
        )
    if failure.http_status == 402:
        raise ApiError(402, "payment_failed", f"Stripe declined it: {failure.message}", body)
    raise ApiError(
        409,
        "failed_precondition",
        f"recorded, but the reconcile with Stripe failed: {failure.message}; correct the "
        "request and send it again",
        body,
    )


_TAX_ID_FIELD: Final = re.compile(r"^tax_ids\[(\d+)\]\.(\w+)$")


def _in_account_order(field: str, tax_ids: Sequence[tuple[str, str]]) -> str:
    found = _TAX_ID_FIELD.fullmatch(field)
    canonical = sorted(set(tax_ids))
    if found is None or int(found.group(1)) >= len(canonical):
        return field
    place = list(tax_ids).index(canonical[int(found.group(1))])
    return f"tax_ids[{place}].{found.group(2)}"


def accepted(verdict: Verdict, location: str, reason: PendingReason | None = None) -> JSONResponse:
    """The 202 answer (`reason` overrides the verdict's, e.g. `not_applied` after `done`)."""
    why: PendingReason = reason or verdict.reason or "in_progress"
    body = Accepted(
        request_id=verdict.request_id, status="pending", reason=why, message=_MESSAGES[why]
    )
    return JSONResponse(body.model_dump(), status_code=202, headers={"Location": location})


def is_pending(verdict: Verdict) -> bool:
    return verdict.state in ("pending", "deferred")
