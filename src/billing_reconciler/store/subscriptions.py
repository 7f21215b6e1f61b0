"""Subscriptions in the store (DESIGN §16): intents, the mirror of Stripe's, plan history.

- **Intents** (`IntentRepository`) are the desired side: per account the plan it should hold
  (`source`: `default_plan` at creation, a completed `checkout`, a direct `subscribe`, a
  `contract` customer), who asked and when, `skip_trial` / `cancel_after_trial`, a pending
  change and a cancel request. At most one `current` intent per account, enforced by a partial
  unique index (so two concurrent writers cannot both win); replacing one keeps the old row
  (state `replaced`, `replaced_by` the new id), ending one keeps it too (state `ended`):
  history is append-only. Intent ids are generated (`subi_` + 32 hex digits) unless the
  caller gives one (e.g. derived from a checkout id, so a replayed completion is idempotent);
  the subscription's creation derives its idempotency key from it.
- **The mirror** (`SubscriptionMirrorRepository`) holds each Stripe subscription on one of our
  accounts as last observed, keyed by its Stripe id; `record` rebuilds the observed
  `SubscriptionRecord` exactly. Ordering rule: each upsert carries when it was observed
  (`observed_at`, the clock by default); one observed before the stored one is stale and
  changes nothing, and a subscription Stripe ended (`canceled`, `incomplete_expired`: terminal
  in Stripe) never goes back to a non-terminal status.
- **Plan history** (`PlanHistoryRepository`): one row per period of a plan on a Stripe
  subscription, so a trial is granted once per plan per account (`trialed`, `had_plan`).

On-start credits need no table: their ledger id is `model_subscriptions.on_start_grant_id`,
and the ledger is idempotent by id. Seats are `MemberRepository.count` / `count_many`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, TypeVar

from sqlalchemy import Row, Select, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billing_reconciler.model_subscriptions import (
    LIVE_STATUSES,
    ItemRecord,
    PendingChange,
    SubscriptionOwner,
    SubscriptionRecord,
)
from billing_reconciler.store._common import Clock, content_hash, dialect_insert, utc_now
from billing_reconciler.store.errors import ConflictError, IdConflictError, NotFoundError
from billing_reconciler.store.tables import (
    BillingAccountModel,
    PlanHistoryModel,
    SubscriptionIntentModel,
    SubscriptionModel,
)

T = TypeVar("T")

#: Stripe statuses a subscription never leaves (DESIGN §16 mirror's ordering rule).
TERMINAL_STATUSES: Final[frozenset[str]] = frozenset({"canceled", "incomplete_expired"})

#: How many ids one bulk read puts in an IN list.
_CHUNK = 500


class IntentState(StrEnum):
    CURRENT = "current"
    REPLACED = "replaced"
    ENDED = "ended"


class IntentSource(StrEnum):
    DEFAULT_PLAN = "default_plan"
    CHECKOUT = "checkout"
    SUBSCRIBE = "subscribe"
    CONTRACT = "contract"


class CancelMode(StrEnum):
    IMMEDIATE = "immediate"
    PERIOD_END = "period_end"


class UpsertResult(StrEnum):
    """What `SubscriptionMirrorRepository.upsert` did."""

    INSERTED = "inserted"
    UPDATED = "updated"
    UNCHANGED = "unchanged"  # same content; only `observed_at` moved on
    STALE = "stale"  # observed before the stored one, or would revive an ended one


def new_intent_id() -> str:
    return "subi_" + uuid.uuid4().hex


def _chunks(values: Iterable[T]) -> Iterator[list[T]]:
    wanted = list(dict.fromkeys(values))
    for start in range(0, len(wanted), _CHUNK):
        yield wanted[start : start + _CHUNK]


def _at(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _seconds(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


# --- intents ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscriptionIntent:
    """An account's subscription intent; `pending_change.effective_at` is Unix seconds."""

    id: str
    account_id: str
    org_id: str
    plan: str
    source: str
    state: str
    requested_by: str | None
    skip_trial: bool
    cancel_after_trial: bool
    pending_change: PendingChange | None
    pending_requested_by: str | None
    pending_requested_at: datetime | None
    cancel_mode: str | None  # immediate | period_end | None (no cancel requested)
    cancel_requested_by: str | None
    cancel_requested_at: datetime | None
    replaced_by: str | None
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None

    @property
    def current(self) -> bool:
        return self.state == IntentState.CURRENT

    @property
    def cancel_requested(self) -> bool:
        return self.cancel_mode is not None


#: The intent's columns, for bulk reads as plain rows (keys: the model's attribute names).
_INTENT_COLUMNS: Final = tuple(
    getattr(SubscriptionIntentModel, attr.key)
    for attr in SubscriptionIntentModel.__mapper__.column_attrs
)


def _intent(model: SubscriptionIntentModel | Row[Any]) -> SubscriptionIntent:
    pending = None
    if model.pending_reason is not None:
        pending = PendingChange(
            plan=model.pending_plan,
            effective_at=_seconds(model.pending_effective_at),
            immediate=model.pending_immediate,
            reason=model.pending_reason,
        )
    return SubscriptionIntent(
        id=model.id,
        account_id=model.account_id,
        org_id=model.org_id,
        plan=model.plan,
        source=model.source,
        state=model.state,
        requested_by=model.requested_by,
        skip_trial=model.skip_trial,
        cancel_after_trial=model.cancel_after_trial,
        pending_change=pending,
        pending_requested_by=model.pending_requested_by,
        pending_requested_at=model.pending_requested_at,
        cancel_mode=model.cancel_mode,
        cancel_requested_by=model.cancel_requested_by,
        cancel_requested_at=model.cancel_requested_at,
        replaced_by=model.replaced_by,
        created_at=model.created_at,
        updated_at=model.updated_at,
        ended_at=model.ended_at,
    )


def _check_pending(change: PendingChange) -> None:
    if change.reason == "change":
        if not change.plan:
            raise ValueError("a pending plan change names the plan")
    elif change.reason == "cancel":
        if change.plan is not None:
            raise ValueError("a pending cancel has no plan")
    else:
        raise ValueError(f"invalid pending change reason {change.reason!r}: change or cancel")


def _set_pending(
    model: SubscriptionIntentModel,
    change: PendingChange | None,
    requested_by: str | None,
    now: datetime | None,
) -> None:
    model.pending_plan = None if change is None else change.plan
    model.pending_effective_at = None if change is None else _at(change.effective_at)
    model.pending_immediate = False if change is None else change.immediate
    model.pending_reason = None if change is None else change.reason
    model.pending_requested_by = None if change is None else requested_by
    model.pending_requested_at = None if change is None else now


class IntentRepository:
    """Subscription intents: the desired side of each account's subscription."""

    def __init__(self, session: Session, *, clock: Clock = utc_now) -> None:
        self._session = session
        self._clock = clock

    # reads

    def get(self, intent_id: str) -> SubscriptionIntent | None:
        model = self._one(SubscriptionIntentModel.id == intent_id)
        return None if model is None else _intent(model)

    def current(self, account_id: str) -> SubscriptionIntent | None:
        model = self._one(
            SubscriptionIntentModel.account_id == account_id,
            SubscriptionIntentModel.state == IntentState.CURRENT.value,
        )
        return None if model is None else _intent(model)

    def history(self, account_id: str) -> list[SubscriptionIntent]:
        """Every intent of the account, oldest first (the current one last)."""
        query = (
            select(SubscriptionIntentModel)
            .where(SubscriptionIntentModel.account_id == account_id)
            .order_by(SubscriptionIntentModel.created_at, SubscriptionIntentModel.id)
            .execution_options(populate_existing=True)
        )
        return [_intent(model) for model in self._session.scalars(query)]

    def current_for_accounts(self, account_ids: Iterable[str]) -> dict[str, SubscriptionIntent]:
        """The current intent of each of the accounts that has one, by account id."""
        found: dict[str, SubscriptionIntent] = {}
        for chunk in _chunks(account_ids):
            query = select(*_INTENT_COLUMNS).where(
                SubscriptionIntentModel.state == IntentState.CURRENT.value,
                SubscriptionIntentModel.account_id.in_(chunk),
            )
            for row in self._session.execute(query):
                found[row.account_id] = _intent(row)
        return found

    def list_current(
        self, *, after_account_id: str | None = None, limit: int = 1000
    ) -> list[SubscriptionIntent]:
        """Current intents ordered by account id, `limit` at a time after `after_account_id`
        (keyset paging on the (state, account_id) index: each page costs the same)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        query = (
            select(*_INTENT_COLUMNS)
            .where(SubscriptionIntentModel.state == IntentState.CURRENT.value)
            .order_by(SubscriptionIntentModel.account_id)
            .limit(limit)
        )
        if after_account_id is not None:
            query = query.where(SubscriptionIntentModel.account_id > after_account_id)
        return [_intent(row) for row in self._session.execute(query)]

    def count_current(self) -> int:
        return int(
            self._session.scalar(
                select(func.count())
                .select_from(SubscriptionIntentModel)
                .where(SubscriptionIntentModel.state == IntentState.CURRENT.value)
            )
            or 0
        )

    # writes

    def record(
        self,
        account_id: str,
        *,
        plan: str,
        source: str,
        requested_by: str | None = None,
        skip_trial: bool = False,
        cancel_after_trial: bool = False,
        intent_id: str | None = None,
    ) -> tuple[SubscriptionIntent, bool]:
        """Record the account's current intent; (the intent, True when recorded now).

        Idempotent: when the account's current intent (or the intent of the given id) has the
        same plan, source, skip_trial and cancel_after_trial, it is answered (False) and
        nothing changes. ConflictError `already_exists` when the account has a current intent
        with other content (use `replace`), also when a concurrent writer recorded one first;
        IdConflictError when `intent_id` names an intent with other content; NotFoundError
        when there is no such account.
        """
        content = _content(plan, source, skip_trial, cancel_after_trial)
        if intent_id is not None:
            existing = self.get(intent_id)
            if existing is not None:
                return self._same_or_id_conflict(existing, account_id, content), False
        current = self.current(account_id)
        if current is not None:
            if intent_id is None and _content_of(current) == content:
                return current, False
            raise _has_current(current)
        org_id = self._org_of(account_id)
        model = self._new(
            account_id, org_id, content, requested_by=requested_by, intent_id=intent_id
        )
        try:
            with self._session.begin_nested():
                self._session.add(model)
                self._session.flush()
        except IntegrityError as error:
            # A concurrent writer recorded the account's current intent (or this id) first.
            raced = self.get(intent_id) if intent_id is not None else self.current(account_id)
            if (
                raced is not None
                and raced.current
                and raced.account_id == account_id
                and _content_of(raced) == content
            ):
                return raced, False
            raise ConflictError(
                f"account {account_id!r} already has a current subscription intent"
                f" (recorded concurrently; or intent id {model.id!r} is taken)",
                code="already_exists",
            ) from error
        return _intent(model), True

    def replace(
        self,
        account_id: str,
        *,
        plan: str,
        source: str,
        requested_by: str | None = None,
        skip_trial: bool = False,
        cancel_after_trial: bool = False,
        intent_id: str | None = None,
        expected_intent_id: str | None = None,
    ) -> tuple[SubscriptionIntent, bool]:
        """A new current intent replacing the account's current one (kept, state `replaced`,
        `replaced_by` the new id; e.g. a paid plan replacing a live free one). With no current
        intent it is `record`. Idempotent for an `intent_id` already current with the same
        content. `expected_intent_id`: ConflictError `failed_precondition` unless that is the
        current intent (optimistic check). A concurrent replace of the same account loses
        with ConflictError `already_exists`.
        """
        content = _content(plan, source, skip_trial, cancel_after_trial)
        if intent_id is not None:
            existing = self.get(intent_id)
            if existing is not None:
                return self._same_or_id_conflict(existing, account_id, content), False
        old = self._locked_current(account_id)
        if expected_intent_id is not None and (old is None or old.id != expected_intent_id):
            raise ConflictError(
                f"the current subscription intent of account {account_id!r} is"
                f" {None if old is None else old.id!r}, not {expected_intent_id!r}",
                code="failed_precondition",
            )
        if old is None:
            return self.record(
                account_id,
                plan=plan,
                source=source,
                requested_by=requested_by,
                skip_trial=skip_trial,
                cancel_after_trial=cancel_after_trial,
                intent_id=intent_id,
            )
        now = self._clock()
        model = self._new(
            account_id, old.org_id, content, requested_by=requested_by, intent_id=intent_id
        )
        try:
            with self._session.begin_nested():
                old.state = IntentState.REPLACED.value
                old.replaced_by = model.id
                old.ended_at = now
                old.updated_at = now
                self._session.flush()
                self._session.add(model)
                self._session.flush()
        except IntegrityError as error:
            raise ConflictError(
                f"account {account_id!r}: its current subscription intent was replaced"
                f" concurrently (or intent id {model.id!r} is taken)",
                code="already_exists",
            ) from error
        return _intent(model), True

    def end(self, account_id: str) -> SubscriptionIntent | None:
        """The account's current intent is over (its subscription ended as asked): state
        `ended`, kept. None when the account has no current intent (a replay)."""
        model = self._locked_current(account_id)
        if model is None:
            return None
        now = self._clock()
        model.state = IntentState.ENDED.value
        model.ended_at = now
        model.updated_at = now
        self._session.flush()
        return _intent(model)

    def set_pending_change(
        self, account_id: str, change: PendingChange, *, requested_by: str | None = None
    ) -> SubscriptionIntent:
        """Set the current intent's pending change (a plan change, or a cancel: `plan` None,
        reason `cancel`); the same change again changes nothing. NotFoundError without a
        current intent; ConflictError `failed_precondition` for a change to the plan it has."""
        _check_pending(change)
        model = self._require_current(account_id)
        if change.reason == "change" and change.plan == model.plan:
            raise ConflictError(
                f"account {account_id!r} is on plan {model.plan!r} already",
                code="failed_precondition",
            )
        if _intent(model).pending_change == change:
            return _intent(model)
        now = self._clock()
        _set_pending(model, change, requested_by, now)
        model.updated_at = now
        self._session.flush()
        return _intent(model)

    def clear_pending_change(self, account_id: str) -> SubscriptionIntent:
        """Drop the pending change (`cancel_upcoming_changes`); a pending cancel at period end
        takes its cancel request with it. Nothing pending: unchanged."""
        model = self._require_current(account_id)
        if model.pending_reason is None:
            return _intent(model)
        if model.pending_reason == "cancel" and model.cancel_mode == CancelMode.PERIOD_END:
            _set_cancel(model, None, None, None)
        _set_pending(model, None, None, None)
        model.updated_at = self._clock()
        self._session.flush()
        return _intent(model)

    def apply_pending_change(self, account_id: str) -> SubscriptionIntent:
        """The pending plan change took effect in Stripe: the intent's plan becomes it and
        nothing is pending. ConflictError `failed_precondition` when no plan change is
        pending (a pending cancel ends the intent: `end`)."""
        model = self._require_current(account_id)
        if model.pending_reason != "change" or model.pending_plan is None:
            raise ConflictError(
                f"account {account_id!r} has no pending plan change", code="failed_precondition"
            )
        model.plan = model.pending_plan
        _set_pending(model, None, None, None)
        model.updated_at = self._clock()
        self._session.flush()
        return _intent(model)

    def request_cancel(
        self,
        account_id: str,
        *,
        immediate: bool,
        effective_at: int | None = None,
        requested_by: str | None = None,
    ) -> SubscriptionIntent:
        """Ask for the current intent's subscription to be cancelled: at once (any pending
        change is dropped), or at the period end `effective_at` (Unix seconds; the pending
        change becomes `{plan: None, reason: cancel, effective_at}`, DESIGN §16). The same
        request again changes nothing. NotFoundError without a current intent."""
        model = self._require_current(account_id)
        mode = CancelMode.IMMEDIATE if immediate else CancelMode.PERIOD_END
        pending = None if immediate else PendingChange(None, effective_at, reason="cancel")
        if model.cancel_mode == mode and _intent(model).pending_change == pending:
            return _intent(model)
        now = self._clock()
        _set_cancel(model, mode, requested_by, now)
        _set_pending(model, pending, requested_by, now)
        model.updated_at = now
        self._session.flush()
        return _intent(model)

    # helpers

    def _new(
        self,
        account_id: str,
        org_id: str,
        content: tuple[str, str, bool, bool],
        *,
        requested_by: str | None,
        intent_id: str | None,
    ) -> SubscriptionIntentModel:
        plan, source, skip_trial, cancel_after_trial = content
        now = self._clock()
        model = SubscriptionIntentModel(
            id=intent_id or new_intent_id(),
            account_id=account_id,
            org_id=org_id,
            plan=plan,
            source=source,
            state=IntentState.CURRENT.value,
            requested_by=requested_by,
            skip_trial=skip_trial,
            cancel_after_trial=cancel_after_trial,
            replaced_by=None,
            created_at=now,
            updated_at=now,
            ended_at=None,
        )
        _set_pending(model, None, None, None)
        _set_cancel(model, None, None, None)
        return model

    def _same_or_id_conflict(
        self,
        existing: SubscriptionIntent,
        account_id: str,
        content: tuple[str, str, bool, bool],
    ) -> SubscriptionIntent:
        if existing.account_id != account_id or _content_of(existing) != content:
            raise IdConflictError(
                f"subscription intent {existing.id!r} exists with other content", id=existing.id
            )
        return existing

    def _org_of(self, account_id: str) -> str:
        org_id = self._session.scalar(
            select(BillingAccountModel.org_id).where(BillingAccountModel.id == account_id)
        )
        if org_id is None:
            raise NotFoundError(f"no billing account {account_id!r}")
        return org_id

    def _one(self, *where: Any) -> SubscriptionIntentModel | None:
        return self._session.scalars(
            select(SubscriptionIntentModel).where(*where).execution_options(populate_existing=True)
        ).one_or_none()

    def _locked_current(self, account_id: str) -> SubscriptionIntentModel | None:
        return self._session.scalars(
            select(SubscriptionIntentModel)
            .where(
                SubscriptionIntentModel.account_id == account_id,
                SubscriptionIntentModel.state == IntentState.CURRENT.value,
            )
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one_or_none()

    def _require_current(self, account_id: str) -> SubscriptionIntentModel:
        model = self._locked_current(account_id)
        if model is None:
            raise NotFoundError(f"account {account_id!r} has no current subscription intent")
        return model


def _content(
    plan: str, source: str, skip_trial: bool, cancel_after_trial: bool
) -> tuple[str, str, bool, bool]:
    if not plan:
        raise ValueError("a subscription intent names a plan")
    try:
        checked = IntentSource(source).value
    except ValueError:
        sources = ", ".join(s.value for s in IntentSource)
        raise ValueError(f"invalid intent source {source!r}: one of {sources}") from None
    return plan, checked, bool(skip_trial), bool(cancel_after_trial)


def _content_of(intent: SubscriptionIntent) -> tuple[str, str, bool, bool]:
    return intent.plan, intent.source, intent.skip_trial, intent.cancel_after_trial


def _has_current(current: SubscriptionIntent) -> ConflictError:
    return ConflictError(
        f"account {current.account_id!r} already has a current subscription intent"
        f" {current.id!r} (plan {current.plan!r}); replace it instead",
        code="already_exists",
    )


def _set_cancel(
    model: SubscriptionIntentModel,
    mode: CancelMode | None,
    requested_by: str | None,
    now: datetime | None,
) -> None:
    model.cancel_mode = None if mode is None else mode.value
    model.cancel_requested_by = requested_by if mode is not None else None
    model.cancel_requested_at = now if mode is not None else None


# --- the mirror of Stripe's subscriptions ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MirroredSubscription:
    """A Stripe subscription as last observed, with the account and org it belongs to, the
    plan it bills (its marker's unless told), the seats applied and the intent it was
    created for (its marker's `br_intent`, when ours)."""

    record: SubscriptionRecord
    account_id: str
    org_id: str
    plan: str | None
    seats: int | None
    intent_id: str | None
    observed_at: datetime
    created_at: datetime
    updated_at: datetime

    @property
    def stripe_id(self) -> str:
        return self.record.stripe_id

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def live(self) -> bool:
        return self.record.live


def _owner_dict(owner: SubscriptionOwner | None) -> dict[str, Any] | None:
    """Every field of the marker (generic: a field added to `SubscriptionOwner` is kept)."""
    return None if owner is None else {name: getattr(owner, name) for name in _OWNER_FIELDS}


def _item_dict(item: ItemRecord) -> dict[str, Any]:
    return {name: getattr(item, name) for name in _ITEM_FIELDS}


#: Field names of the records the mirror's JSON columns hold, in declaration order (read once:
#: `dataclasses.fields` per row was a tenth of a fleet read's CPU).
_ITEM_FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in fields(ItemRecord))
_OWNER_FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in fields(SubscriptionOwner))
_ITEM_NAMES: Final[frozenset[str]] = frozenset(_ITEM_FIELDS)
_OWNER_NAMES: Final[frozenset[str]] = frozenset(_OWNER_FIELDS)


def _known(names: frozenset[str], stored: dict[str, Any]) -> dict[str, Any]:
    """The stored keys a record still has (rows written before a field was added keep its
    default; a key of a field since removed is dropped)."""
    if stored.keys() <= names:
        return stored
    return {key: value for key, value in stored.items() if key in names}


def _mirror_values(
    record: SubscriptionRecord,
    account_id: str,
    org_id: str,
    plan: str | None,
    seats: int | None,
) -> dict[str, Any]:
    """The mirror row of `record` (without the bookkeeping times), and its content hash."""
    interval = record.pending_invoice_item_interval
    values: dict[str, Any] = {
        "stripe_id": record.stripe_id,
        "account_id": account_id,
        "org_id": org_id,
        "customer_id": record.customer_id,
        "intent_id": (record.owner.intent_id or None) if record.owner is not None else None,
        "plan": plan,
        "seats": seats,
        "status": record.status,
        "currency": record.currency,
        "items": [_item_dict(item) for item in record.items],
        "collection_method": record.collection_method,
        "days_until_due": record.days_until_due,
        "automatic_tax": record.automatic_tax,
        "current_period_start": _at(record.current_period_start),
        "current_period_end": _at(record.current_period_end),
        "trial_start": _at(record.trial_start),
        "trial_end": _at(record.trial_end),
        "cancel_at": _at(record.cancel_at),
        "cancel_at_period_end": record.cancel_at_period_end,
        "canceled_at": _at(record.canceled_at),
        "ended_at": _at(record.ended_at),
        "schedule_id": record.schedule_id,
        "pending_invoice_item_interval": None if interval is None else list(interval),
        "latest_invoice_id": record.latest_invoice_id,
        "test_clock": record.test_clock,
        "stripe_created": _at(record.created),
        "metadata_": dict(record.metadata),
        "owner": _owner_dict(record.owner),
    }
    hashed = {
        key: (value.isoformat() if isinstance(value, datetime) else value)
        for key, value in values.items()
    }
    values["content_hash"] = content_hash(hashed)
    return values


#: The mirror's columns, read as plain rows (no ORM instances: building one per row and
#: registering it in the session was most of a 100,000-row read). Row keys are the model's
#: attribute names (`metadata_`).
_MIRROR_COLUMNS: Final = tuple(
    getattr(SubscriptionModel, attr.key) for attr in SubscriptionModel.__mapper__.column_attrs
)


def _mirror_select() -> Select[Any]:
    return select(*_MIRROR_COLUMNS)


def _mirrored(row: Row[Any]) -> MirroredSubscription:
    stored_owner = row.owner
    owner = (
        None if stored_owner is None else SubscriptionOwner(**_known(_OWNER_NAMES, stored_owner))
    )
    interval = row.pending_invoice_item_interval
    record = SubscriptionRecord(
        stripe_id=row.stripe_id,
        customer_id=row.customer_id,
        status=row.status,
        currency=row.currency,
        items=tuple(ItemRecord(**_known(_ITEM_NAMES, item)) for item in row.items),
        collection_method=row.collection_method,
        days_until_due=row.days_until_due,
        automatic_tax=row.automatic_tax,
        trial_start=_seconds(row.trial_start),
        trial_end=_seconds(row.trial_end),
        cancel_at=_seconds(row.cancel_at),
        cancel_at_period_end=row.cancel_at_period_end,
        canceled_at=_seconds(row.canceled_at),
        ended_at=_seconds(row.ended_at),
        schedule_id=row.schedule_id,
        pending_invoice_item_interval=None if interval is None else (interval[0], interval[1]),
        latest_invoice_id=row.latest_invoice_id,
        test_clock=row.test_clock,
        created=_seconds(row.stripe_created) or 0,
        metadata=dict(row.metadata_),
        owner=owner,
    )
    return MirroredSubscription(
        record=record,
        account_id=row.account_id,
        org_id=row.org_id,
        plan=row.plan,
        seats=row.seats,
        intent_id=row.intent_id,
        observed_at=row.observed_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@dataclass(frozen=True, slots=True)
class MirrorEntry:
    """One record for `SubscriptionMirrorRepository.upsert_many`: the record, its account
    and org, the seats applied and the plan it bills (None: the marker's plan)."""

    record: SubscriptionRecord
    account_id: str
    org_id: str
    seats: int | None = None
    plan: str | None = None

    def values(self) -> dict[str, Any]:
        plan = self.plan
        if plan is None and self.record.owner is not None and self.record.owner.plan:
            plan = self.record.owner.plan
        return _mirror_values(self.record, self.account_id, self.org_id, plan, self.seats)


#: Attribute names of the mirror's row that differ from their column's.
_COLUMN_OF: Final[dict[str, str]] = {"metadata_": "metadata"}


def _newest_first(query: Select[Any]) -> Select[Any]:
    return query.order_by(
        SubscriptionModel.stripe_created.desc(), SubscriptionModel.stripe_id.desc()
    )


class SubscriptionMirrorRepository:
    """The Stripe subscriptions of our accounts, as last observed (DESIGN §16, Mirror)."""

    def __init__(self, session: Session, *, clock: Clock = utc_now) -> None:
        self._session = session
        self._clock = clock

    def upsert(
        self,
        record: SubscriptionRecord,
        *,
        account_id: str,
        org_id: str,
        seats: int | None = None,
        plan: str | None = None,
        observed_at: datetime | None = None,
    ) -> UpsertResult:
        """Mirror `record`, observed at `observed_at` (default: now), into the store.

        `plan` defaults to the record's marker's plan. Idempotent: the same content again is
        UNCHANGED (only `observed_at` moves on). STALE, and nothing is written, when the
        stored row was observed later, or when Stripe had ended the stored subscription
        (`canceled`, `incomplete_expired`) and the record has it in another status. The
        account must exist (a foreign key): an unknown one is an IntegrityError that ends
        the transaction.
        """
        entry = MirrorEntry(record, account_id, org_id, seats=seats, plan=plan)
        return self.upsert_many([entry], observed_at=observed_at)[record.stripe_id]

    def upsert_many(
        self, entries: Iterable[MirrorEntry], *, observed_at: datetime | None = None
    ) -> dict[str, UpsertResult]:
        """`upsert` of many records observed together (a full observation's page), by
        Stripe id; a Stripe id given twice keeps its last entry. Per 500 records: one read
        of the stored rows (locked), one INSERT of the new ones, one UPDATE moving
        `observed_at` of the unchanged ones, and one UPDATE per changed one."""
        now = self._clock()
        observed = now if observed_at is None else observed_at
        by_id = {entry.record.stripe_id: entry for entry in entries}
        results: dict[str, UpsertResult] = {}
        for chunk in _chunks(by_id):
            results.update(self._upsert_chunk([by_id[i] for i in chunk], observed, now))
        return results

    def _upsert_chunk(
        self, entries: list[MirrorEntry], observed: datetime, now: datetime
    ) -> dict[str, UpsertResult]:
        values = {entry.record.stripe_id: entry.values() for entry in entries}
        statuses = {entry.record.stripe_id: entry.record.status for entry in entries}
        stored = {
            row.stripe_id: row
            for row in self._session.execute(
                select(
                    SubscriptionModel.stripe_id,
                    SubscriptionModel.content_hash,
                    SubscriptionModel.observed_at,
                    SubscriptionModel.status,
                )
                .where(SubscriptionModel.stripe_id.in_(list(values)))
                .with_for_update()
            )
        }
        results: dict[str, UpsertResult] = {}
        new = [stripe_id for stripe_id in values if stripe_id not in stored]
        if new:
            rows = [
                {
                    **{_COLUMN_OF.get(key, key): value for key, value in values[i].items()},
                    "observed_at": observed,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in new
            ]
            inserted = set(
                self._session.scalars(
                    dialect_insert(self._session, SubscriptionModel.__table__)
                    .values(rows)
                    .on_conflict_do_nothing(index_elements=[SubscriptionModel.stripe_id])
                    .returning(SubscriptionModel.stripe_id)
                )
            )
            results.update(dict.fromkeys(inserted, UpsertResult.INSERTED))
            raced = [i for i in new if i not in inserted]
            if raced:  # a concurrent writer inserted them first: compare with its rows
                entries_of = {entry.record.stripe_id: entry for entry in entries}
                results.update(self._upsert_chunk([entries_of[i] for i in raced], observed, now))
        unchanged: list[str] = []
        changed: list[dict[str, Any]] = []
        for stripe_id, row in stored.items():
            status = statuses[stripe_id]
            if observed < row.observed_at or (
                row.status in TERMINAL_STATUSES and status not in TERMINAL_STATUSES
            ):
                results[stripe_id] = UpsertResult.STALE
            elif row.content_hash == values[stripe_id]["content_hash"]:
                results[stripe_id] = UpsertResult.UNCHANGED
                unchanged.append(stripe_id)
            else:
                results[stripe_id] = UpsertResult.UPDATED
                changed.append({**values[stripe_id], "observed_at": observed, "updated_at": now})
        if unchanged:
            self._session.execute(
                update(SubscriptionModel)
                .where(SubscriptionModel.stripe_id.in_(unchanged))
                .values(observed_at=observed)
                .execution_options(synchronize_session=False)
            )
        if changed:
            # ORM bulk UPDATE by primary key (attribute names), one statement per row.
            self._session.execute(update(SubscriptionModel), changed)
        return results

    def get(self, stripe_id: str) -> MirroredSubscription | None:
        row = self._session.execute(
            _mirror_select().where(SubscriptionModel.stripe_id == stripe_id)
        ).one_or_none()
        return None if row is None else _mirrored(row)

    def for_account(self, account_id: str) -> list[MirroredSubscription]:
        """Every mirrored subscription of the account, newest (Stripe `created`) first."""
        query = _newest_first(_mirror_select().where(SubscriptionModel.account_id == account_id))
        return [_mirrored(row) for row in self._session.execute(query)]

    def live_for_account(self, account_id: str) -> MirroredSubscription | None:
        """The account's live subscription (a status in LIVE_STATUSES), the newest if Stripe
        holds more than one (a replaced free one not yet cancelled)."""
        query = _newest_first(
            _mirror_select().where(
                SubscriptionModel.account_id == account_id,
                SubscriptionModel.status.in_(sorted(LIVE_STATUSES)),
            )
        ).limit(1)
        row = self._session.execute(query).first()
        return None if row is None else _mirrored(row)

    def for_accounts(self, account_ids: Iterable[str]) -> dict[str, list[MirroredSubscription]]:
        """Every mirrored subscription of each account that has one, newest first (one query
        per 500 accounts, read as rows)."""
        found: dict[str, list[MirroredSubscription]] = {}
        for chunk in _chunks(account_ids):
            query = _newest_first(_mirror_select().where(SubscriptionModel.account_id.in_(chunk)))
            for row in self._session.execute(query):
                found.setdefault(row.account_id, []).append(_mirrored(row))
        return found

    def live_for_accounts(self, account_ids: Iterable[str]) -> dict[str, MirroredSubscription]:
        """The live subscription of each account that has one (the newest, as
        `live_for_account`)."""
        return {
            account_id: live[0]
            for account_id, subscriptions in self.for_accounts(account_ids).items()
            if (live := [s for s in subscriptions if s.live])
        }

    def list_live(
        self, *, after_stripe_id: str | None = None, limit: int = 1000
    ) -> list[MirroredSubscription]:
        """Live subscriptions ordered by Stripe id, `limit` at a time after `after_stripe_id`
        (keyset paging, for fleet reads such as price migration)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        query = (
            _mirror_select()
            .where(SubscriptionModel.status.in_(sorted(LIVE_STATUSES)))
            .order_by(SubscriptionModel.stripe_id)
            .limit(limit)
        )
        if after_stripe_id is not None:
            query = query.where(SubscriptionModel.stripe_id > after_stripe_id)
        return [_mirrored(row) for row in self._session.execute(query)]


# --- plan history --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanPeriod:
    """A period of a plan on one of the account's Stripe subscriptions; `ended_at` None
    while it lasts."""

    account_id: str
    plan: str
    stripe_subscription_id: str
    started_at: datetime
    ended_at: datetime | None
    trialed: bool


def _period(model: PlanHistoryModel) -> PlanPeriod:
    return PlanPeriod(
        account_id=model.account_id,
        plan=model.plan,
        stripe_subscription_id=model.stripe_subscription_id,
        started_at=model.started_at,
        ended_at=model.ended_at,
        trialed=model.trialed,
    )


class PlanHistoryRepository:
    """The plans each account held (trial only once per plan per account, DESIGN §16)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def start(
        self,
        account_id: str,
        plan: str,
        *,
        stripe_subscription_id: str,
        started_at: datetime,
        trialed: bool = False,
    ) -> tuple[PlanPeriod, bool]:
        """Open a period of `plan` on the subscription; (the period, True when opened now).

        Idempotent: when the subscription has an open period of the plan, or a period of it
        that started at `started_at`, that one is answered (False); `trialed` True marks it
        trialed (never the reverse).
        """
        if not plan or not stripe_subscription_id:
            raise ValueError("a plan period names its plan and Stripe subscription")
        existing = self._existing(account_id, plan, stripe_subscription_id, started_at)
        if existing is None:
            inserted = self._session.execute(
                dialect_insert(self._session, PlanHistoryModel.__table__)
                .values(
                    account_id=account_id,
                    plan=plan,
                    stripe_subscription_id=stripe_subscription_id,
                    started_at=started_at,
                    ended_at=None,
                    trialed=trialed,
                )
                .on_conflict_do_nothing(
                    index_elements=["account_id", "plan", "stripe_subscription_id"],
                    index_where=text("ended_at IS NULL"),
                )
                .returning(PlanHistoryModel.id)
            ).first()
            if inserted is not None:
                model = self._session.get(PlanHistoryModel, inserted.id, populate_existing=True)
                assert model is not None
                return _period(model), True
            existing = self._existing(account_id, plan, stripe_subscription_id, started_at)
            assert existing is not None, "the open period a concurrent writer opened"
        if trialed and not existing.trialed:
            existing.trialed = True
            self._session.flush()
        return _period(existing), False

    def end(
        self,
        account_id: str,
        *,
        stripe_subscription_id: str,
        ended_at: datetime,
        plan: str | None = None,
    ) -> int:
        """Close the subscription's open periods (of `plan` only, when given); how many were
        open. Closed periods keep their end: a replay closes nothing."""
        query = select(PlanHistoryModel).where(
            PlanHistoryModel.account_id == account_id,
            PlanHistoryModel.stripe_subscription_id == stripe_subscription_id,
            PlanHistoryModel.ended_at.is_(None),
        )
        if plan is not None:
            query = query.where(PlanHistoryModel.plan == plan)
        models = list(
            self._session.scalars(query.with_for_update().execution_options(populate_existing=True))
        )
        for model in models:
            model.ended_at = ended_at
        self._session.flush()
        return len(models)

    def history(self, account_id: str) -> list[PlanPeriod]:
        """The account's plan periods, oldest first."""
        query = (
            select(PlanHistoryModel)
            .where(PlanHistoryModel.account_id == account_id)
            .order_by(PlanHistoryModel.started_at, PlanHistoryModel.id)
            .execution_options(populate_existing=True)
        )
        return [_period(model) for model in self._session.scalars(query)]

    def had_plan(self, account_id: str, plan: str) -> bool:
        """Whether the account ever held `plan` (now or before)."""
        return self._any(PlanHistoryModel.account_id == account_id, PlanHistoryModel.plan == plan)

    def trialed(self, account_id: str, plan: str) -> bool:
        """Whether the account ever had a trial of `plan`."""
        return self._any(
            PlanHistoryModel.account_id == account_id,
            PlanHistoryModel.plan == plan,
            PlanHistoryModel.trialed.is_(True),
        )

    def plans_had(self, account_ids: Iterable[str]) -> dict[str, frozenset[str]]:
        """The plans each of the accounts ever held (accounts with none are absent)."""
        found: dict[str, set[str]] = {}
        for chunk in _chunks(account_ids):
            rows = self._session.execute(
                select(PlanHistoryModel.account_id, PlanHistoryModel.plan)
                .where(PlanHistoryModel.account_id.in_(chunk))
                .distinct()
            )
            for account_id, plan in rows:
                found.setdefault(account_id, set()).add(plan)
        return {account_id: frozenset(plans) for account_id, plans in found.items()}

    def _any(self, *where: Any) -> bool:
        return self._session.scalar(select(PlanHistoryModel.id).where(*where).limit(1)) is not None

    def _existing(
        self, account_id: str, plan: str, stripe_subscription_id: str, started_at: datetime
    ) -> PlanHistoryModel | None:
        return self._session.scalars(
            select(PlanHistoryModel)
            .where(
                PlanHistoryModel.account_id == account_id,
                PlanHistoryModel.plan == plan,
                PlanHistoryModel.stripe_subscription_id == stripe_subscription_id,
                (PlanHistoryModel.ended_at.is_(None)) | (PlanHistoryModel.started_at == started_at),
            )
            .order_by(PlanHistoryModel.ended_at.is_(None).desc(), PlanHistoryModel.id.desc())
            .limit(1)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).first()


# --- seat checks (the host API's member writes) ---------------------------------------------


def lock_organization(session: Session, org_id: str) -> bool:
    """Lock the org's row until the transaction ends, so concurrent member adds of one org
    count their seats one after the other (DESIGN §16 `seat_limit`: never overshot). False
    when there is no such org. On SQLite the store's IMMEDIATE transactions already run
    writers one at a time."""
    from billing_reconciler.store.tables import OrganizationModel

    found = session.scalar(
        select(OrganizationModel.org_id).where(OrganizationModel.org_id == org_id).with_for_update()
    )
    return found is not None
