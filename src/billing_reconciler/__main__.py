"""`python -m billing_reconciler` is the `reconcile` command."""

from billing_reconciler.cli import main

main()
