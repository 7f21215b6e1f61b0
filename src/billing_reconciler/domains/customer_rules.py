"""The customers domain's rules: accounts + Stripe customers -> the ordered plan. Pure.

Per org, in apply order (each group one batch, independent steps sent concurrently):
1. `billing_account` create: a contract customer without an account (store only; the
   executor also grants the onboard credits, once per org ever);
2. `customer` create: an online account without a customer (key from
   `model_customers.creation_idempotency_key`: store salt, installation, org, account),
   markers of §14, tax ids as `tax_id_data`; an unlinked account whose customer Stripe
   already lists (marker `customer/<org_id>` of this installation, claimed by no account: a
   crash after the create, or a lost store) is linked instead (a restore, not a change), and
   a contract customer whose account was lost with the store is opened again and linked;
3. `customer` update: fields pushed (local changed, or both changed: local wins and the
   conflict is reported as drift and on the field);
4. `billing_account` update: a contract's YAML written into the store (`desired_changed`),
   fields pulled from Stripe (`remote_changed`, the customer edited them in the portal), a
   currency Stripe set first;
5. `billing_account` archive: the account's managed customer was deleted in Stripe (or is
   missing from a full listing): the account is disabled, never re-created silently.
A currency Stripe holds that differs from the account's is a warning: once set, it is fixed.
A contract account whose org has only a disabled account is reported and left alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from billing_reconciler.desired.state import CustomerSpec
from billing_reconciler.domains.base import PlanContext
from billing_reconciler.domains.customer_merge import (
    METADATA,
    METADATA_PREFIX,
    CurrencyOutcome,
    CustomerMerge,
    FieldValue,
    contract_local,
    last_applied_to_json,
    merge_currency,
    merge_customer,
    metadata_key,
    tax_id_changes,
    update_params,
)
from billing_reconciler.domains.customer_merge import FieldChange as MergeChange
from billing_reconciler.domains.customer_types import CustomersObserved, StoredAccount
from billing_reconciler.model import JSONValue
from billing_reconciler.model_customers import (
    CustomerFields,
    CustomerRecord,
    controller_metadata,
    creation_idempotency_key,
    customer_key,
    deleted_in_stripe_reason,
    org_id_of_key,
    owned_metadata,
)
from billing_reconciler.planning.plan import (
    Action,
    DriftItem,
    FieldChange,
    Notice,
    Plan,
    Reason,
    Step,
    canonical_json,
    digest,
)

#: Step kinds: a Stripe customer (create, push), a billing account row (contract create,
#: contract settings, pull, disable), the events cursor (a restore), a customer of ours a
#: full listing found without an account (a restore: `customer/<org_id>` remembered with its
#: Stripe id, so a later targeted or incremental pass retrieves and links it, never creates).
CUSTOMER_STEP: Final = "customer"
ACCOUNT_STEP: Final = "billing_account"
CURSOR_STEP: Final = "customer_cursor"
SEEN_STEP: Final = "customer_seen"
CURSOR_KEY = f"{CURSOR_STEP}/events"
ACCOUNT_CREATES, CREATES, PUSHES, STORE_WRITES, DISABLES = 1, 2, 3, 4, 5


def account_key(org_id: str) -> str:
    return f"{ACCOUNT_STEP}/{org_id}"


def _account_step(
    action: Action,
    org_id: str,
    *,
    reason: Reason,
    params: Mapping[str, Any],
    idempotency_key: str,
    changes: tuple[FieldChange, ...] = (),
    stripe_id: str | None = None,
    impact: str | None = None,
) -> Step:
    """A step on the org's billing account row (the store's; `stripe_id`: its customer)."""
    return Step(
        action=action,
        kind=ACCOUNT_STEP,
        key=account_key(org_id),
        reason=reason,
        params=params,
        changes=changes,
        stripe_id=stripe_id,
        impact=impact,
        idempotency_key=idempotency_key,
    )


@dataclass(slots=True)
class _Draft:
    """The plan being built, by phase."""

    context: PlanContext
    phases: dict[int, list[Step]] = field(default_factory=dict)
    restores: list[Step] = field(default_factory=list)
    drift: list[DriftItem] = field(default_factory=list)
    orphans: list[Notice] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Indexes of the observed customers, built once per plan (not per account: 100k accounts
    # would make the plan quadratic).
    _live: dict[str, CustomerRecord] | None = None
    _unclaimed: dict[str, list[CustomerRecord]] | None = None

    def live(self, observed: CustomersObserved) -> dict[str, CustomerRecord]:
        """The observed live customers by id."""
        if self._live is None:
            self._live = {c.stripe_id: c for c in observed.live.customers if c.stripe_id}
        return self._live

    def unclaimed(self, observed: CustomersObserved) -> dict[str, list[CustomerRecord]]:
        """Live customers of this installation that no account claims, by their marker key."""
        if self._unclaimed is None:
            claimed = {a.stripe_id for a in observed.accounts if a.stripe_id}
            claimed |= observed.claimed_ids
            self._unclaimed = {}
            for customer in observed.live.customers:
                if (
                    customer.stripe_id
                    and customer.stripe_id not in claimed
                    and customer.owner is not None
                    and customer.owner.installation_id == self.context.installation_id
                ):
                    self._unclaimed.setdefault(customer.owner.key, []).append(customer)
        return self._unclaimed

    def add(self, phase: int, step: Step, *, at: int | None = None) -> None:
        steps = self.phases.setdefault(phase, [])
        steps.insert(len(steps) if at is None else at, dataclasses.replace(step, batch=phase))

    def key(self, *parts: str) -> str:
        """A key salted with the store's identity (a lost store's successor never derives a
        key its predecessor sent) that no step completed within Stripe's idempotency window
        holds: the same write intended again takes the next generation (as the catalog's)."""
        return unspent_key(
            "br:" + digest(self.context.key_salt, self.context.installation_id, *parts),
            self.context.spent_keys,
        )


def unspent_key(intent: str, spent: frozenset[str]) -> str:
    key, generation = intent, 0
    while key in spent:
        generation += 1
        key = "br:" + digest(intent, f"generation {generation}")
    return key


def last_spent_key(intent: str, spent: frozenset[str]) -> str | None:
    """The key `unspent_key(intent, spent)` last gave that is spent (its latest attempt Stripe
    answered), or None when `intent`'s first key is unspent (never tried in the window)."""
    key, generation, last = intent, 0, None
    while key in spent:
        last = key
        generation += 1
        key = "br:" + digest(intent, f"generation {generation}")
    return last


def contract_account_id(context: PlanContext, org_id: str) -> str:
    """The id of a contract customer's account, decided by the plan (the customer create in
    the same plan derives its key from it). At most one per org and store: an org with any
    account is never given a new contract account, and a new store has a new salt."""
    return "acct_" + digest(context.key_salt, context.installation_id, "contract", org_id)


def customers_plan(
    specs: Mapping[str, CustomerSpec], observed: CustomersObserved, context: PlanContext
) -> Plan:
    draft = _Draft(context)
    accounts = {a.org_id: a for a in observed.accounts}
    orgs: Iterable[str] = sorted(set(accounts) | set(specs))
    scope = context.options.scope
    if scope is not None:
        orgs = [org for org in orgs if customer_key(org) in scope]
    for org in orgs:
        _plan_org(draft, org, accounts.get(org), specs.get(org), observed)
    steps = tuple(step for phase in sorted(draft.phases) for step in draft.phases[phase])
    _duplicates(draft, observed, accounts)
    if observed.complete:
        _remember_unclaimed(draft, observed, accounts)
    _cursor(draft, observed)
    return Plan(
        steps=steps,
        installation_id=context.installation_id,
        desired_revision=context.state.revision,
        fingerprint=_fingerprint(observed),
        created_at=context.now,
        drift=tuple(draft.drift),
        orphans=tuple(draft.orphans),
        notices=tuple(draft.notices),
        warnings=tuple(draft.warnings),
        restores=tuple(draft.restores),
    )


@dataclass(slots=True)
class _ContractWrite:
    """What a contract's YAML writes into its account row (settings and fields): one store
    step per org, however many of them changed."""

    params: dict[str, Any] = field(default_factory=dict)
    changes: list[FieldChange] = field(default_factory=list)


def _plan_org(
    draft: _Draft,
    org: str,
    account: StoredAccount | None,
    spec: CustomerSpec | None,
    observed: CustomersObserved,
) -> None:
    if account is None:
        if spec is not None:
            _new_contract_account(draft, spec, observed)
        return
    if spec is None and account.contract:
        draft.orphans.append(
            Notice(
                account_key(org),
                ACCOUNT_STEP,
                account.stripe_id,
                "no longer declared in desired/customers: kept as an ordinary account",
            )
        )
    contract = None if spec is None else _ContractWrite()
    if spec is not None and contract is not None:
        _contract_settings(draft, spec, account, contract)
        if org in observed.orgs_without_row:
            _contract_org(spec, contract)
    at = len(draft.phases.get(STORE_WRITES, ()))
    _plan_customer(draft, org, account, spec, observed, contract)
    if contract is not None:
        _contract_step(draft, account, contract, at=at)


def _plan_customer(
    draft: _Draft,
    org: str,
    account: StoredAccount,
    spec: CustomerSpec | None,
    observed: CustomersObserved,
    contract: _ContractWrite | None,
) -> None:
    """The account's customer: created, linked, or merged (pushes, pulls, a contract's YAML
    fields into `contract`)."""
    declared = spec.customer_fields() if spec is not None else None
    offline = spec.offline if spec is not None else account.offline
    if offline:
        if declared is not None and contract is not None:
            _store_fields(contract, account, contract_local(declared, account.fields))
        return
    remote = _remote_of(draft, account, observed)
    if remote is None:
        return
    if remote.stripe_id is None:
        local = account.fields if declared is None else contract_local(declared, account.fields)
        _create(draft, org, local, account)
        return
    linking = account.stripe_id is None
    if not linking and spec is None and _unchanged(account, remote):
        return
    # Linking (a crash after the create, or a lost store and the host's PUT again): the
    # account has no last-applied record of this customer, so the merge pulls every field
    # the store does not set (an edit made in Stripe, never pushed as a clear) and reports a
    # field both sides set differently as a conflict (local wins).
    merge = merge_customer(
        local=account.fields,
        remote=remote.fields,
        last_applied=account.last_values(),
        declared=declared,
        local_currency=account.currency,
        remote_currency=remote.currency,
        local_metadata=account.metadata,
        remote_metadata=remote.metadata,
        last_metadata=last_metadata(account.last_applied),
    )
    _apply_merge(draft, account, remote, merge, contract)
    if linking:
        _link(draft, account, remote)


def last_metadata(last_applied: Mapping[str, Any]) -> dict[str, str]:
    """The metadata keys we last wrote, with their values (`last_applied["metadata"]`)."""
    raw = last_applied.get(METADATA)
    if not isinstance(raw, Mapping):
        return {}
    # A record written before `auto_created` was the controller's own key may hold it: not
    # the merge's (`owned_metadata`).
    return owned_metadata({str(k): v for k, v in raw.items() if isinstance(v, str) and v})


def _unchanged(account: StoredAccount, remote: CustomerRecord) -> bool:
    """The account, its customer and its last-applied record agree (most of a fleet, every
    pass): the merge would write nothing and `_apply_merge` emit nothing, so both are skipped.
    Local == remote leaves no field to merge; the last-applied JSON equal to theirs, key by
    key, leaves nothing for a pull to record (a stored form that differs, e.g. tax ids in
    another order, is rewritten by the full path); the account's metadata equal to the keys
    last written, and Stripe holding each of them, leaves no key to push, pull or record; an
    equal or absent remote currency leaves no currency to pull or refuse."""
    fields = account.fields.canonical()
    same = (remote.name, remote.email, remote.phone, remote.address, remote.tax_ids) == (
        fields.name,
        fields.email,
        fields.phone,
        fields.address,
        fields.tax_ids,
    )
    if not same and remote.fields != fields:  # equal values, another (not canonical) form
        return False
    if remote.currency != account.currency and (
        merge_currency(local=account.currency, remote=remote.currency).outcome
        is not CurrencyOutcome.UNCHANGED
    ):
        return False
    mine = owned_metadata(account.metadata)
    if mine != last_metadata(account.last_applied) or any(
        remote.metadata.get(k) != v for k, v in mine.items()
    ):
        return False
    return last_applied_to_json(fields).items() <= account.last_applied.items()


def _link(draft: _Draft, account: StoredAccount, remote: CustomerRecord) -> None:
    """Restore the account's link to its listed customer. The last-applied values are the
    merge's to record (its push, pull or bookkeeping restore), not the link's."""
    draft.restores.append(
        _account_step(
            Action.UPDATE,
            account.org_id,
            reason=Reason.STORE_LOST,
            params={"stripe_customer_id": remote.stripe_id},
            stripe_id=remote.stripe_id,
            idempotency_key=draft.key("link", account.account_id, remote.stripe_id or ""),
        )
    )


def _remote_of(
    draft: _Draft, account: StoredAccount, observed: CustomersObserved
) -> CustomerRecord | None:
    """The account's live customer; a record without a stripe id: create one; None: no
    customer work this pass (not observed, or the account is being disabled)."""
    live = draft.live(observed)
    if account.stripe_id is None:
        linked = _linkable(draft, account.org_id, observed)
        if linked is None:
            return CustomerRecord(key=customer_key(account.org_id), org_id=account.org_id)
        return linked
    remote = live.get(account.stripe_id)
    gone = account.stripe_id in observed.live.deleted_ids or (observed.complete and remote is None)
    if gone:
        _disable(draft, account)
        return None
    return remote


def _linkable(draft: _Draft, org_id: str, observed: CustomersObserved) -> CustomerRecord | None:
    """A live customer of ours for this org that no account of the store claims: its marker
    names this installation and `customer/<org_id>` (DESIGN §14). It is what a crash after the
    create, or a lost store, leaves: linking it is a restore, never a second customer. The
    customer of a disabled account is claimed (a new account of the org gets its own)."""
    candidates = draft.unclaimed(observed).get(customer_key(org_id), ())
    return min(candidates, key=lambda c: str(c.stripe_id), default=None)


def known_customer_id(context: PlanContext, org_id: str) -> str | None:
    """The customer of ours a full listing found for `org_id` while the org had no account
    (see `_remember_unclaimed`): a pass that does not list every customer retrieves it before
    it would create one."""
    seen = context.applied.get(customer_key(org_id))
    return None if seen is None else seen.stripe_id


def _remember_unclaimed(
    draft: _Draft, observed: CustomersObserved, accounts: Mapping[str, StoredAccount]
) -> None:
    """A full listing's customers of ours that no account claims and whose org has no active
    account (what a lost store leaves): remembered in the store (a bookkeeping restore), so
    the org's account, when the host opens it again, is linked to its customer by a targeted
    or incremental pass that never lists them all (one customer per org, DESIGN §15)."""
    for key, candidates in sorted(draft.unclaimed(observed).items()):
        org = org_id_of_key(key)
        if org is None or org in accounts:
            continue
        first = min(candidates, key=lambda c: str(c.stripe_id))
        if known_customer_id(draft.context, org) == first.stripe_id:
            continue
        params = {"stripe_id": first.stripe_id}
        draft.restores.append(
            Step(
                action=Action.UPDATE,
                kind=SEEN_STEP,
                key=key,
                reason=Reason.BOOKKEEPING,
                params=params,
                stripe_id=first.stripe_id,
                idempotency_key=draft.key("seen", canonical_json(params)),
            )
        )


def _duplicates(
    draft: _Draft, observed: CustomersObserved, accounts: Mapping[str, StoredAccount]
) -> None:
    """Two live customers of this installation with one `br_key` break one customer per org
    (DESIGN §15): never silent. The account's (or the one a link would take) is kept; the
    others are left alone for a person to delete or unmark. A customer a disabled account
    holds is not one of them: it is that account's (its invoices and history), and the org's
    new account has its own."""
    by_key: dict[str, list[CustomerRecord]] = {}
    for customer in observed.live.customers:
        owner = customer.owner
        if (
            customer.stripe_id
            and customer.stripe_id not in observed.claimed_ids
            and owner is not None
            and owner.installation_id == draft.context.installation_id
        ):
            by_key.setdefault(owner.key, []).append(customer)
    scope = draft.context.options.scope
    for key, customers in sorted(by_key.items()):
        if len(customers) < 2 or (scope is not None and key not in scope):
            continue
        ids = sorted(str(c.stripe_id) for c in customers)
        account = accounts.get(customers[0].org_id)
        kept = account.stripe_id if account is not None and account.stripe_id in ids else ids[0]
        draft.warnings.append(
            f"{key}: {len(ids)} customers of ours in Stripe carry br_key {key} "
            f"({', '.join(ids)}); an org has one customer: {kept} is kept, the others are "
            "left alone (delete them in Stripe or remove their br_key)"
        )


def _new_contract_account(draft: _Draft, spec: CustomerSpec, observed: CustomersObserved) -> None:
    if spec.org_id in observed.inactive_orgs:
        # Declared, so not an orphan: a disabled declared account, left alone (waiting for the
        # host), with the Stripe customer it holds.
        if spec.org_id in observed.deleted_orgs:
            why = (
                "declared in desired/customers, but the host deleted the org and its account "
                f"is disabled: PUT /organizations/{spec.org_id} again (it opens no new account "
                "for a declared org: this one stays the org's), then enable it through the API "
                "(POST .../billing/enable), which keeps its Stripe customer; never re-created "
                "silently"
            )
        else:
            why = (
                "declared in desired/customers, but the org's account is disabled: enable it "
                "through the API, or create a new billing account if its Stripe customer was "
                "deleted (never re-created silently)"
            )
        draft.notices.append(
            Notice(
                account_key(spec.org_id),
                ACCOUNT_STEP,
                observed.inactive_customers.get(spec.org_id),
                why,
            )
        )
        return
    fields = spec.customer_fields()
    account_id = contract_account_id(draft.context, spec.org_id)
    params: dict[str, Any] = {
        "org_id": spec.org_id,
        **_shown(fields),
        "currency": spec.currency,
        "offline": spec.offline,
        "credit_min": spec.credit_min,
        "due_in_days": spec.due_in_days,
        "onboard_credits": draft.context.state.config.billing.customer.onboard_credits_with_org,
        "account_id": account_id,
    }
    linked = None if spec.offline else _linkable(draft, spec.org_id, observed)
    if linked is not None:
        # The store lost the account, Stripe still has its customer: the account is opened
        # again in the store and linked (a restore, no Stripe call), with the customer's fields
        # as last applied and every field (address part) the YAML leaves out taken from
        # Stripe (never cleared there by the next pass); a difference from the YAML is pushed
        # by the next pass.
        params.update(last_applied_to_json(contract_local(fields, linked.fields)))
        params["stripe_customer_id"] = linked.stripe_id
        params["last_applied"] = last_applied_to_json(linked.fields)
        draft.restores.append(
            _account_step(
                Action.CREATE,
                spec.org_id,
                reason=Reason.STORE_LOST,
                params=params,
                stripe_id=linked.stripe_id,
                idempotency_key=draft.key("restore", account_id, linked.stripe_id or ""),
            )
        )
        return
    draft.add(
        ACCOUNT_CREATES,
        _account_step(
            Action.CREATE,
            spec.org_id,
            reason=Reason.NEW,
            params=params,
            idempotency_key=draft.key("account", spec.org_id, canonical_json(params)),
        ),
    )
    if not spec.offline:
        draft.add(
            CREATES,
            _create_step(
                draft, spec.org_id, fields, account_id=account_id, test_clock=None, metadata={}
            ),
        )


def _contract_settings(
    draft: _Draft, spec: CustomerSpec, account: StoredAccount, contract: _ContractWrite
) -> None:
    settings: dict[str, Any] = {
        "offline": spec.offline,
        "credit_min": spec.credit_min,
        "due_in_days": spec.due_in_days,
        "contract": True,
    }
    current: dict[str, Any] = {
        "offline": account.offline,
        "credit_min": account.credit_min,
        "due_in_days": account.due_in_days,
        "contract": account.contract,
    }
    if spec.currency != account.currency:
        if account.currency is None:
            settings["currency"], current["currency"] = spec.currency, None
        else:
            draft.warnings.append(
                f"{customer_key(spec.org_id)}: desired/customers says currency {spec.currency}, "
                f"the account's is {account.currency}; a currency once set never changes"
            )
    changed = {k: v for k, v in settings.items() if current.get(k) != v}
    if not changed:
        return
    contract.params["settings"] = changed
    contract.changes += [FieldChange(k, current.get(k), v) for k, v in sorted(changed.items())]


def _contract_org(spec: CustomerSpec, contract: _ContractWrite) -> None:
    """The organization row of a contract org the host never PUT (the host API 404s an org
    without one), written by the contract's store step: the contract's name and email."""
    organization: dict[str, JSONValue] = {"title": spec.name, "owner_email": spec.email}
    contract.params["organization"] = organization
    contract.changes.append(FieldChange("organization", None, organization))


def _contract_step(
    draft: _Draft, account: StoredAccount, contract: _ContractWrite, *, at: int
) -> None:
    """The one store step of what the contract's YAML writes into its account (settings and
    fields; no Stripe call, no last-applied: the fields a pull writes are left to it), before
    the org's pull (`at`: where the org's store writes start)."""
    if not contract.params:
        return
    params = {**contract.params, "last_applied": {}}
    draft.add(
        STORE_WRITES,
        at=at,
        step=_account_step(
            Action.UPDATE,
            account.org_id,
            reason=Reason.DESIRED_CHANGED,
            params=params,
            changes=tuple(contract.changes),
            idempotency_key=draft.key("contract", account.account_id, canonical_json(params)),
        ),
    )


def _create(draft: _Draft, org: str, local: CustomerFields, account: StoredAccount) -> None:
    draft.add(
        CREATES,
        _create_step(
            draft,
            org,
            local,
            account_id=account.account_id,
            test_clock=account.test_clock,
            # The user's keys and those we stamp ourselves (`auto_created`), never merged.
            metadata={
                **owned_metadata(account.metadata),
                **controller_metadata(account.metadata),
            },
        ),
    )


def _create_step(
    draft: _Draft,
    org: str,
    fields: CustomerFields,
    *,
    account_id: str,
    test_clock: str | None,
    metadata: Mapping[str, str],
) -> Step:
    params: dict[str, Any] = {
        "org_id": org,
        "installation_id": draft.context.installation_id,
        **_shown(fields),
    }
    if metadata:
        params["metadata"] = dict(metadata)
    if test_clock:
        params["test_clock"] = test_clock
    params["revision"] = draft.context.state.revision
    return Step(
        action=Action.CREATE,
        kind=CUSTOMER_STEP,
        key=customer_key(org),
        reason=Reason.NEW,
        params=params,
        # Derived from (store, installation, org, account): a rerun after a crash replays
        # Stripe's first answer; a second account of the org (the first disabled) and a new
        # store derive keys never sent. Duplicates across a lost store are prevented by
        # linking the listed customer (`_linkable`), never by the key.
        idempotency_key=unspent_key(
            creation_idempotency_key(
                installation_id=draft.context.installation_id,
                org_id=org,
                account_id=account_id,
                salt=draft.context.key_salt,
                test_clock=test_clock,
            ),
            draft.context.spent_keys,
        ),
    )


def _apply_merge(
    draft: _Draft,
    account: StoredAccount,
    remote: CustomerRecord,
    merge: CustomerMerge,
    contract: _ContractWrite | None,
) -> None:
    """The merge as steps: at most one Stripe update (every pushed field, metadata key and
    tax id), one store step of the pulls (and a currency Stripe set), the contract's YAML
    fields in its store step; a last-applied record that only catches up (both sides already
    agree) is bookkeeping, a restore, never an empty step."""
    in_sync = _in_sync(account, merge)
    pushed = merge.push
    if pushed:
        _push(draft, account, remote, merge, in_sync)
        in_sync = {}
    pulled = merge.pull
    if contract is not None:
        # A contract's YAML is written into the store too, so the API shows what applies.
        _store_fields(contract, account, merge.merged, exclude=frozenset(c.field for c in pulled))
    if pulled or merge.currency.outcome is CurrencyOutcome.PULL:
        _pull(draft, account, merge, in_sync)
    elif in_sync:
        params = {"fields": {}, "last_applied": in_sync}
        draft.restores.append(
            _account_step(
                Action.UPDATE,
                account.org_id,
                reason=Reason.BOOKKEEPING,
                params=params,
                idempotency_key=draft.key(
                    "last applied",
                    account.account_id,
                    canonical_json(account.last_applied),
                    canonical_json(params),
                ),
            )
        )
    if merge.currency.outcome is CurrencyOutcome.REFUSED:
        draft.warnings.append(
            f"{customer_key(account.org_id)}: Stripe bills customer {remote.stripe_id} in "
            f"{merge.currency.remote}, the account's currency is {merge.currency.local}; "
            "a currency once set never changes (left as is)"
        )


def _in_sync(account: StoredAccount, merge: CustomerMerge) -> dict[str, Any]:
    """The last-applied values no change of the merge writes that differ from the stored
    ones (both sides agree, the record catches up); metadata keys as `{key: value}`, None
    for a key no longer ours."""
    written = {c.field for c in merge.changes}
    in_sync: dict[str, Any] = {
        name: value
        for name, value in last_applied_to_json(merge.merged).items()
        if name not in written and account.last_applied.get(name, _MISSING) != value
    }
    before = last_metadata(account.last_applied)
    keys = sorted(set(before) | set(merge.metadata))
    meta = {
        k: merge.metadata.get(k)
        for k in keys
        if METADATA_PREFIX + k not in written and before.get(k) != merge.metadata.get(k)
    }
    if meta:
        in_sync[METADATA] = meta
    return in_sync


def _last_of(merge: CustomerMerge, changes: Iterable[MergeChange]) -> dict[str, Any]:
    """The last-applied record `changes` write once applied (metadata keys nested)."""
    merged_json = last_applied_to_json(merge.merged)
    last: dict[str, Any] = {}
    for change in changes:
        key = metadata_key(change.field)
        if key is None:
            last[change.field] = merged_json[change.field]
        else:
            last.setdefault(METADATA, {})[key] = merge.metadata.get(key)
    return last


def _with(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """Two last-applied records as one (their metadata keys merged)."""
    combined = {**first, **second}
    if METADATA in first and METADATA in second:
        combined[METADATA] = {**first[METADATA], **second[METADATA]}
    return combined


def _push(
    draft: _Draft,
    account: StoredAccount,
    remote: CustomerRecord,
    merge: CustomerMerge,
    in_sync: Mapping[str, Any],
) -> None:
    pushed = merge.push
    add, delete = tax_id_changes(pushed)
    txi = dict(remote.stripe_tax_ids)
    params: dict[str, Any] = {
        "update": update_params(pushed),
        "add_tax_ids": [{"type": t.type, "value": t.value} for t in add],
        "delete_tax_ids": [
            {"id": txi[t], "type": t.type, "value": t.value} for t in delete if t in txi
        ],
        "last_applied": _with(in_sync, _last_of(merge, pushed)),
    }
    key = customer_key(account.org_id)
    before = last_metadata(account.last_applied)
    for change in merge.conflicts:
        meta = metadata_key(change.field)
        if meta is None:
            applied = _json_value(account.last_applied.get(change.field))
        else:
            applied = before.get(meta)
        draft.drift.append(
            DriftItem(
                key=key,
                path=change.field,
                applied=applied,
                live=_one(change.old),
                corrected=True,
            )
        )
    draft.add(
        PUSHES,
        Step(
            action=Action.UPDATE,
            kind=CUSTOMER_STEP,
            key=key,
            reason=Reason.DRIFT if merge.conflicts else Reason.DESIRED_CHANGED,
            params=params,
            changes=tuple(_shown_change(c) for c in pushed),
            stripe_id=remote.stripe_id,
            idempotency_key=draft.key(
                "push",
                account.account_id,
                canonical_json(account.last_applied),
                canonical_json(params),
            ),
        ),
    )


def _pull(
    draft: _Draft, account: StoredAccount, merge: CustomerMerge, in_sync: Mapping[str, Any]
) -> None:
    merged_json = last_applied_to_json(merge.merged)
    pulled = merge.pull
    fields = {c.field: merged_json[c.field] for c in pulled if metadata_key(c.field) is None}
    params: dict[str, Any] = {
        "fields": fields,
        "last_applied": _with(in_sync, _last_of(merge, pulled)),
    }
    metadata = {
        key: merge.metadata.get(key) for c in pulled if (key := metadata_key(c.field)) is not None
    }
    if metadata:
        # Key by key (None: removed), over the store's metadata at apply time.
        params[METADATA] = metadata
    changes = [_shown_change(c) for c in pulled]
    if merge.currency.outcome is CurrencyOutcome.PULL:
        params["currency"] = merge.currency.remote
        changes.append(FieldChange("currency", merge.currency.local, merge.currency.remote))
    draft.add(
        STORE_WRITES,
        _account_step(
            Action.UPDATE,
            account.org_id,
            reason=Reason.REMOTE_CHANGED,
            params=params,
            changes=tuple(changes),
            idempotency_key=draft.key(
                "pull",
                account.account_id,
                canonical_json(account.last_applied),
                canonical_json(params),
            ),
        ),
    )


def _store_fields(
    contract: _ContractWrite,
    account: StoredAccount,
    target: CustomerFields,
    *,
    exclude: frozenset[str] = frozenset(),
) -> None:
    """A contract account's store fields set to `target` (into its one store step; the fields
    a pull writes are left to it)."""
    current = last_applied_to_json(account.fields)
    wanted = last_applied_to_json(target)
    fields = {k: v for k, v in wanted.items() if current[k] != v and k not in exclude}
    if not fields:
        return
    contract.params["fields"] = fields
    contract.changes += [
        FieldChange(k, _json_value(current[k]), _json_value(v)) for k, v in fields.items()
    ]


def _disable(draft: _Draft, account: StoredAccount) -> None:
    why = (
        f"its Stripe customer {account.stripe_id} was deleted in Stripe: the account is "
        "disabled, not re-created (create a new billing account through the API to start "
        "again)"
    )
    draft.add(
        DISABLES,
        _account_step(
            Action.ARCHIVE,
            account.org_id,
            reason=Reason.DELETED_IN_STRIPE,
            params={"reason": deleted_in_stripe_reason(str(account.stripe_id))},
            stripe_id=account.stripe_id,
            impact=why,
            idempotency_key=draft.key("disable", account.account_id),
        ),
    )


def _cursor(draft: _Draft, observed: CustomersObserved) -> None:
    """Record where the events were read to, and a full resync (a restore: bookkeeping)."""
    position = observed.moved_to
    if not observed.resynced and position is None:
        return
    params: dict[str, Any] = {
        "event_id": None if position is None else position.event_id,
        "created": None if position is None else position.created,
        "full_resync_at": draft.context.now if observed.resynced else None,
    }
    draft.restores.append(
        Step(
            action=Action.UPDATE,
            kind=CURSOR_STEP,
            key=CURSOR_KEY,
            reason=Reason.BOOKKEEPING,
            params=params,
            idempotency_key=draft.key("cursor", canonical_json(params)),
        )
    )


_MISSING = object()


def _shown(fields: CustomerFields) -> dict[str, Any]:
    """The set fields in the store's JSON form (what a create sends and the plan shows)."""
    return {k: v for k, v in last_applied_to_json(fields).items() if v not in (None, [], {})}


def _shown_change(change: MergeChange) -> FieldChange:
    """A merge change as the plan shows it (before -> after on the side written); a conflict
    is flagged as drift: someone edited Stripe, and local wins."""
    return FieldChange(
        path=change.field,
        before=_one(change.old),
        after=_one(change.new),
        drift=change.conflict,
    )


def _one(value: FieldValue) -> Any:
    """A merged value as the plan shows it: tax ids as `type:value`, an address's set parts."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return [f"{t.type}:{t.value}" for t in value]
    return {k: v for k, v in dataclasses.asdict(value).items() if v}


def _json_value(value: Any) -> Any:
    if isinstance(value, list):
        return [f"{t['type']}:{t['value']}" if isinstance(t, Mapping) else t for t in value]
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if v}
    return value


def _fingerprint(observed: CustomersObserved) -> str:
    """A digest of what the plan was computed from (a saved plan is compared with its re-plan
    by it): the accounts, the customers, the deleted ids, the cursor, and the store's facts the
    rules read (claimed customers, disabled contract orgs); not how they were read (a full or
    an incremental listing: a difference in what it found shows).

    As the catalog's (`planning.builder.fingerprint`): each record becomes a tuple of plain
    values (mappings as sorted items, so key order does not matter) whose sorted `repr`s are
    hashed. `dataclasses.asdict` and `json.dumps` of every record were half of the plan's CPU
    at 100,000 accounts. The tuples are spelled out per record type, the fastest form; a unit
    test changes each field of every record type and sees the digest change."""
    hasher = hashlib.sha256()
    parts: tuple[Iterable[str], ...] = (
        sorted([repr(_account_values(a)) for a in observed.accounts]),
        sorted([repr(_customer_values(c)) for c in observed.live.customers]),
        sorted(map(repr, observed.live.deleted_ids)),
        sorted(map(repr, observed.inactive_orgs)),
        sorted(map(repr, observed.inactive_customers.items())),
        sorted(map(repr, observed.orgs_without_row)),
        sorted(map(repr, observed.deleted_orgs)),
        sorted(map(repr, observed.claimed_ids)),
        (repr((observed.cursor, observed.moved_to)),),
    )
    for part in parts:
        for item in part:  # a repr holds no raw control character: the separators are safe
            hasher.update(item.encode())
            hasher.update(b"\x1e")
        hasher.update(b"\x1d")
    return hasher.hexdigest()[:32]


def _account_values(a: StoredAccount) -> tuple[object, ...]:
    return (
        a.account_id,
        a.org_id,
        a.stripe_id,
        a.offline,
        a.contract,
        _fields_values(a.fields),
        a.currency,
        a.test_clock,
        _items(a.metadata),
        a.credit_min,
        a.due_in_days,
        _items(a.last_applied),
    )


def _customer_values(c: CustomerRecord) -> tuple[object, ...]:
    owner = c.owner
    return (
        c.key,
        c.org_id,
        c.stripe_id,
        _fields_values(c),
        c.currency,
        _items(c.metadata),
        None if owner is None else (owner.installation_id, owner.key, owner.org_id, owner.revision),
        c.test_clock,
        c.deleted,
        c.stripe_tax_ids,
    )


def _fields_values(fields: CustomerFields | CustomerRecord) -> tuple[object, ...]:
    # Address and TaxId: their dataclass repr (all their fields, in order).
    return (fields.name, fields.email, fields.phone, fields.address, fields.tax_ids)


def _items(mapping: Mapping[str, Any]) -> tuple[tuple[str, object], ...]:
    """A mapping as its items sorted by key, nested mappings and lists too (JSON values)."""
    if not mapping:
        return ()
    return tuple(sorted([(str(k), _plain(v)) for k, v in mapping.items()]))


def _plain(value: object) -> object:
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, Mapping):
        return _items(value)
    if isinstance(value, list | tuple):
        return tuple([_plain(v) for v in value])
    return value
