"""Errors the store raises to its callers."""

from __future__ import annotations


class StoreError(Exception):
    """Base of the store's own errors."""


class NotFoundError(StoreError, LookupError):
    """The row an operation names does not exist."""


class ConflictError(StoreError):
    """The operation would rewrite history (e.g. change a journal step that is already done),
    or break a rule of the stored state.

    `code` tells callers (the API) which kind: "conflict" (the default), "already_exists" (e.g.
    a second active billing account of an org), "failed_precondition" (e.g. a new account
    while an older one has a negative balance; a change of a currency already set),
    "id_conflict" (an idempotent id reused with other content).
    """

    def __init__(self, message: str, *, code: str = "conflict") -> None:
        super().__init__(message)
        self.code = code


class IdConflictError(ConflictError):
    """An idempotency id was used before with different content (an API 409)."""

    def __init__(self, message: str, *, id: str, other_account: bool = False) -> None:
        super().__init__(message, code="id_conflict")
        self.id = id
        #: The id is taken on another account (ledger ids are global), not by other content
        #: of this account's own transaction.
        self.other_account = other_account


class InsufficientCreditsError(StoreError):
    """A debit would take the balance below the account's `credit_min`."""

    def __init__(
        self, *, account_id: str, balance: int, credit_min: int, amount: int, entry_id: str
    ) -> None:
        super().__init__(
            f"account {account_id!r} has {balance} credits: a debit of {amount} ({entry_id!r})"
            f" would take it below its minimum of {credit_min}"
        )
        self.account_id = account_id
        self.balance = balance
        self.credit_min = credit_min
        self.amount = amount
        self.entry_id = entry_id
