"""Billing domains: how each one is observed and diffed (pure functions over records)."""
