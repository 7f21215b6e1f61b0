"""Alembic migrations of the local store; run by `Store.open`, never by hand in production."""
