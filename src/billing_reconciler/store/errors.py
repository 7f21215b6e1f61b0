"""Errors the store raises to its callers."""

from __future__ import annotations


class StoreError(Exception):
    """Base of the store's own errors."""


class NotFoundError(StoreError, LookupError):
    """The row an operation names does not exist."""


class ConflictError(StoreError):
    """The operation would rewrite history (e.g. change a journal step that is already done)."""
