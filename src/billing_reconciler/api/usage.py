"""Usage over HTTP: recording usages, the credit check, and the admin's reverts (DESIGN §17).

`POST .../billing/usages` records a batch of 1..1000 usages in one database transaction
(`store.usage.UsageRepository.record`): all or none. A usage's `id` is its idempotency key:
an identical resend changes nothing (200 when every usage of the request was a replay, 201
when anything was recorded; `created` and `replayed` say which); the same id with other
content (the meter part included) is 409 `id_conflict` naming the usage; a usage the balance
does not allow (`balance - amount >= credit_min`, the batch's earlier usages counted) is 422
`insufficient_credits` naming it. A usage naming a meter writes its meter-outbox row in the
same transaction; the customer's targeted reconcile then sends it to Stripe.

`POST .../billing/usages/{id}/revert` (admin scope) credits back part of a usage; its reverts
never add up to more than the usage's amount.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from billing_reconciler.api.auth import Scope, requires
from billing_reconciler.api.context import ApiContext
from billing_reconciler.api.errors import (
    ApiError,
    EnvelopeResponse,
    invalid,
    not_found,
    precondition,
)
from billing_reconciler.api.ledger import RESERVED_SOURCE_PREFIX, transaction
from billing_reconciler.api.models import (
    MAX_METER_IDENTIFIER,
    CheckIn,
    CreditCheck,
    Revert,
    RevertIn,
    UsageIn,
    UsagesIn,
    UsagesRecorded,
    is_unicode,
)
from billing_reconciler.api.onboarding import require_org
from billing_reconciler.api.routing import PREFIX, ApiRoute, OrgId, error_responses
from billing_reconciler.store import (
    ConflictError,
    IdConflictError,
    InsufficientCreditsError,
    NotFoundError,
)
from billing_reconciler.store.usage import (
    Batch,
    MeterEvent,
    OverRevertError,
    Usage,
    UsageRepository,
    applied_meters,
    record_in_one_statement,
    usage_account,
)

DEFAULT_SOURCE: Final = "usage"
#: Stripe refuses meter events older than this, or further ahead than `METER_MAX_AHEAD`.
METER_MAX_AGE: Final = timedelta(days=35)
METER_MAX_AHEAD: Final = timedelta(minutes=5)

UsageId = Path(
    min_length=1,
    max_length=255,
    description="The usage's id (its transaction id).",
)


class UsageRoute(ApiRoute):
    """`ApiRoute`, and a validation error about one usage of a batch (`usages[3].amount`)
    also names that usage's id in its details (`usage_id`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            response = await handler(request)
            if response.status_code == 422 and isinstance(response, JSONResponse):
                try:
                    return _with_usage_id(request, response)
                except Exception:  # the answer is already the envelope: keep it
                    return response
            return response

        return handle


def _with_usage_id(request: Request, response: JSONResponse) -> Response:
    try:
        answer = json.loads(bytes(response.body))
        details = answer["error"]["details"]
        field = str(details.get("field", ""))
        if answer["error"]["code"] != "invalid_argument" or "usage_id" in details:
            return response
        if not field.startswith("usages[") or "]" not in field:
            return response
        index = int(field[len("usages[") : field.index("]")])
        usage_id = json.loads(getattr(request, "_body", b"") or b"{}")["usages"][index]["id"]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return response
    if not isinstance(usage_id, str) or not is_unicode(usage_id):
        # An id that is not Unicode text (a lone surrogate) is itself the error: the field
        # (`usages[3].id`) names it, and it could not be echoed as it is.
        return response
    details["usage_id"] = usage_id
    return EnvelopeResponse(answer, status_code=response.status_code)


def _usage_account(session: Any, org: str) -> tuple[str, int]:
    """The org's active account (its id and credit_min), in one query: 404 for no org or no
    account, 409 for a disabled one."""
    found = usage_account(session, org)
    if found is None:
        raise not_found(f"no organization {org}", org_id=org)
    if found.account_id is None:
        raise not_found(f"organization {org} has no billing account", org_id=org)
    if found.state != "active":
        raise precondition(
            f"the billing account of organization {org} is {found.state}: enable it first",
            org_id=org,
            account_id=found.account_id,
            state=found.state,
        )
    return found.account_id, found.credit_min


def _replayed(
    session: Any, refusal: ApiError, usages: Sequence[UsageIn], sources: Sequence[str]
) -> UsagesRecorded | None:
    """A batch refused because the org's account is disabled (409) whose every usage was
    recorded before with the same content is still the replay a resend is (tester T1 F9: a
    retry straddling a disable must not hear that a recorded usage failed): the stored
    transactions, 200. None: the refusal stands."""
    account_id = refusal.details.get("account_id")
    if refusal.status != 409 or not isinstance(account_id, str):
        return None
    repository = UsageRepository(session)
    stored = repository.replays(
        account_id,
        [
            _usage(usage, source, _meter_as_given(usage))
            for usage, source in zip(usages, sources, strict=True)
        ],
        sources,
    )
    if stored is None:
        return None
    return UsagesRecorded(
        data=[transaction(t) for t in stored],
        created=[],
        replayed=[t.id for t in stored],
        balance=repository.balance(account_id),
    )


def _usages(
    given: Sequence[UsageIn], sources: Sequence[str], now: datetime, meters: frozenset[str]
) -> list[Usage]:
    """The request's usages for the store (a meter checked against `meters`)."""
    return [
        _usage(usage, source, _meter(usage, index, now, meters))
        for index, (usage, source) in enumerate(zip(given, sources, strict=True))
    ]


def _usage(usage: UsageIn, source: str, meter: MeterEvent | None) -> Usage:
    return Usage(
        id=usage.id,
        amount=usage.amount,
        source=source,
        description=usage.description,
        user_id=usage.user_id,
        metadata=dict(usage.metadata or {}),
        meter=meter,
    )


def _meter_as_given(usage: UsageIn) -> MeterEvent | None:
    """The usage's meter part as sent, unchecked (to compare with a stored usage)."""
    meter = usage.meter
    if meter is None:
        return None
    return MeterEvent(event_name=meter.event_name, value=meter.value, timestamp=meter.timestamp)


def _source(usage: UsageIn, index: int) -> str:
    source = (usage.source or DEFAULT_SOURCE).lower()
    if source.startswith(RESERVED_SOURCE_PREFIX):
        raise invalid(
            f"usages[{index}].source: {source!r} is reserved for the engine's own entries",
            field=f"usages[{index}].source",
            usage_id=usage.id,
        )
    return source


AGGREGATE_ID_PREFIX: Final = "agg_"
"""The identifiers of aggregated meter events begin with it (`credit_meters.
aggregate_identifier`: `agg_<hash>_<window start>_<part>`); a usage id is the identifier of
its own meter event, so a usage with a meter may not take it (Stripe would refuse one of the
two as a duplicate, whichever came second), in any case."""


def _check_meter_id(usage: UsageIn, index: int) -> None:
    """A usage naming a meter sends its id as the event's identifier: not in the aggregates'
    identifier space (refused before the store is read, as a reserved id is)."""
    if usage.meter is not None and usage.id.lower().startswith(AGGREGATE_ID_PREFIX):
        raise invalid(
            f"usages[{index}].id: ids beginning with {AGGREGATE_ID_PREFIX!r} (in any case) are "
            "reserved for aggregated meter events (reconcile.usage.aggregate): a usage with a "
            "meter sends its id as its meter event's identifier, which must not equal an "
            "aggregate's",
            field=f"usages[{index}].id",
            usage_id=usage.id,
        )


def _meter(usage: UsageIn, index: int, now: datetime, meters: frozenset[str]) -> MeterEvent | None:
    meter = usage.meter
    if meter is None:
        return None
    if len(usage.id) > MAX_METER_IDENTIFIER:
        raise invalid(
            f"usages[{index}].id: a usage with a meter sends its id as the Stripe meter "
            f"event's identifier, at most {MAX_METER_IDENTIFIER} characters (this one has "
            f"{len(usage.id)})",
            field=f"usages[{index}].id",
            usage_id=usage.id,
            limit=MAX_METER_IDENTIFIER,
        )
    if meter.event_name not in meters:
        known = ", ".join(sorted(meters)) or "none"
        raise invalid(
            f"usages[{index}].meter.event_name: no meter {meter.event_name!r} in the applied "
            f"catalog (meters: {known})",
            field=f"usages[{index}].meter.event_name",
            usage_id=usage.id,
            event_name=meter.event_name,
        )
    if meter.timestamp is not None:
        stamp = meter.timestamp
        if stamp < now - METER_MAX_AGE or stamp > now + METER_MAX_AHEAD:
            raise invalid(
                f"usages[{index}].meter.timestamp: Stripe accepts meter events of the last 35 "
                "days up to 5 minutes ahead only",
                field=f"usages[{index}].meter.timestamp",
                usage_id=usage.id,
            )
    return _meter_as_given(usage)


def usage_router(context: ApiContext) -> APIRouter:
    """Usages and the credit check (app scope)."""
    router = APIRouter(
        prefix=f"{PREFIX}/organizations/{{org}}/billing",
        tags=["usage"],
        route_class=UsageRoute,
        dependencies=[Depends(requires(context.tokens, Scope.APP))],
    )

    # The org's active account as its last usage request found it (org -> account id): the
    # fast path writes to it only if it is still the org's active account.
    accounts: dict[str, str] = {}

    @router.post(
        "/usages",
        status_code=201,
        response_model=UsagesRecorded,
        responses={200: {"model": UsagesRecorded}, **error_responses(404, 409)},
    )
    async def record_usages(org: OrgId, body: UsagesIn, response: Response) -> UsagesRecorded:
        """Record 1..1000 usages atomically (201); a request whose every usage was recorded
        before with the same content answers 200 and changes nothing."""
        now = context.clock()
        sources = [_source(usage, index) for index, usage in enumerate(body.usages)]
        for index, usage in enumerate(body.usages):
            _check_meter_id(usage, index)
        metered = any(usage.meter is not None for usage in body.usages)
        batch = await _record_at_once(org, body.usages, sources, now, metered)
        if batch is None:
            return await run_in_threadpool(
                _record_in_a_transaction, org, body, sources, now, metered, response
            )
        if metered:
            await run_in_threadpool(_reconcile_after, org, batch)
        return _answer(batch, response)

    def _record_in_a_transaction(
        org: str,
        body: UsagesIn,
        sources: list[str],
        now: datetime,
        metered: bool,
        response: Response,
    ) -> UsagesRecorded:
        """The general path (on a worker thread): the org's account read and checked, then
        `UsageRepository.record` in one transaction, every refusal answered exactly."""
        meters: frozenset[str] = frozenset()
        with context.store.session() as session:
            try:
                account_id, credit_min = _usage_account(session, org)
            except ApiError as error:
                replayed = _replayed(session, error, body.usages, sources)
                if replayed is None:
                    raise
                response.status_code = 200
                return replayed
            if metered:
                meters = applied_meters(session, context.installation_id())
            usages = _usages(body.usages, sources, now, meters)
            repository = UsageRepository(session, clock=context.clock)
            try:
                batch = repository.record(account_id, org, usages, credit_min=credit_min)
            except InsufficientCreditsError as error:
                first = body.usages[0].id == error.entry_id
                balance = (
                    f"{error.balance}"
                    if first
                    else f"{error.balance}, after the batch's earlier usages"
                )
                raise ApiError(
                    422,
                    "insufficient_credits",
                    f"usage {error.entry_id!r}: a debit of {error.amount} would take the "
                    f"balance ({balance}) below the "
                    f"account's credit_min ({error.credit_min}); nothing was recorded",
                    {
                        "usage_id": error.entry_id,
                        "amount": error.amount,
                        "balance": error.balance,
                        "credit_min": error.credit_min,
                        "org_id": org,
                    },
                ) from None
            except IdConflictError as error:
                reason = (
                    "is taken by a transaction on another account (ledger ids are global "
                    "across orgs: namespace them yourself, e.g. <org>:<id>)"
                    if error.other_account
                    else "was used before with different content"
                )
                raise ApiError(
                    409,
                    "id_conflict",
                    f"usage id {error.id!r} {reason}; nothing was recorded",
                    {"usage_id": error.id, "id": error.id, "org_id": org},
                ) from None
        accounts[org] = account_id
        if metered:
            _reconcile_after(org, batch)
        return _answer(batch, response)

    async def _record_at_once(
        org: str, given: Sequence[UsageIn], sources: list[str], now: datetime, metered: bool
    ) -> Batch | None:
        """PostgreSQL's fast path (`store.usage.record_in_one_statement`): a batch for the
        account the org's last request found, all of it new, written by one statement with no
        transaction round trips. None when that does not apply, or does not hold now (nothing
        written): the general path below answers, with its exact errors and replays, in the
        order it checks them."""
        account_id = accounts.get(org)
        if account_id is None or context.store.backend != "postgresql":
            return None
        try:
            meters: frozenset[str] = frozenset()
            if metered:
                meters = await run_in_threadpool(_applied_meters)
            usages = _usages(given, sources, now, meters)
        except ApiError:
            return None  # the general path says it (after the account's own answers)
        return await record_in_one_statement(
            context.store, account_id, org, usages, clock=context.clock
        )

    def _applied_meters() -> frozenset[str]:
        with context.store.session() as session:
            return applied_meters(session, context.installation_id())

    def _reconcile_after(org: str, batch: Batch) -> None:
        if any(r.created for r in batch.recorded):
            # A metered usage just recorded: its org's meter events are sent soon.
            context.reconcile_customer(org, "usage recorded")

    def _answer(batch: Batch, response: Response) -> UsagesRecorded:
        recorded = batch.recorded
        created = [r.transaction.id for r in recorded if r.created]
        response.status_code = 201 if created else 200
        return UsagesRecorded(
            data=[transaction(r.transaction) for r in recorded],
            created=created,
            replayed=[r.transaction.id for r in recorded if not r.created],
            balance=batch.balance,
        )

    @router.post("/check", response_model=CreditCheck, responses=error_responses(404, 409))
    def check_credits(org: OrgId, body: CheckIn) -> CreditCheck:
        """Whether a usage of `amount` would be allowed now (`balance - amount >=
        credit_min`); reserves nothing."""
        with context.store.session() as session:
            account_id, credit_min = _usage_account(session, org)
            allowed, balance = UsageRepository(session).check(
                account_id, body.amount, credit_min=credit_min
            )
        return CreditCheck(allowed=allowed, balance=balance, credit_min=credit_min)

    return router


def admin_usage_router(context: ApiContext) -> APIRouter:
    """`POST .../billing/usages/{id}/revert`: under the app prefix, admin scope."""
    router = APIRouter(
        prefix=f"{PREFIX}/organizations/{{org}}/billing",
        tags=["usage", "admin"],
        route_class=ApiRoute,
        dependencies=[Depends(requires(context.tokens, Scope.ADMIN))],
    )

    @router.post(
        "/usages/{usage_id}/revert",
        status_code=201,
        response_model=Revert,
        responses={200: {"model": Revert}, **error_responses(403, 404, 409)},
    )
    def revert_usage(
        org: OrgId, body: RevertIn, response: Response, usage_id: str = UsageId
    ) -> Revert:
        """Credit back `amount` of a usage (the reverts of a usage add up to at most its
        amount): a new revert each call, or with `id` once per id (the same id again answers
        200 as stored). 422 above what is left, 409 for a revert or a credit (or an `id`
        sent before with another amount), 404 for an unknown usage or another org's."""
        if "\x00" in usage_id or not is_unicode(usage_id):
            # No usage id holds either (refused when recorded); PostgreSQL cannot even look
            # a NUL up (tester T3-8: a DataError, answered 503).
            raise not_found(f"organization {org} has no usage {usage_id!r}", org_id=org)
        with context.store.session() as session:
            require_org(session, org)
            try:
                done = UsageRepository(session, clock=context.clock).revert(
                    org, usage_id, body.amount, key=body.id
                )
            except NotFoundError:
                raise not_found(
                    f"organization {org} has no usage {usage_id!r}", usage_id=usage_id, org_id=org
                ) from None
            except IdConflictError as error:
                raise ApiError(
                    409,
                    "id_conflict",
                    str(error),
                    {"id": body.id, "usage_id": usage_id, "org_id": org},
                ) from None
            except ConflictError as error:
                raise precondition(str(error), usage_id=usage_id, org_id=org) from None
            except OverRevertError as error:
                raise invalid(
                    f"usage {usage_id!r} has {error.remaining} credits left to revert; a "
                    f"revert of {error.amount} is more",
                    field="amount",
                    usage_id=usage_id,
                    amount=error.amount,
                    remaining=error.remaining,
                ) from None
        response.status_code = 201 if done.created else 200
        return Revert(
            transaction=transaction(done.transaction),
            usage_id=usage_id,
            reverted=done.reverted,
            remaining=done.usage.amount - done.reverted,
        )

    return router
