"""billing-reconciler: a declarative, GitOps-style reconciliation controller for Stripe billing."""

__version__ = "0.1.0"
