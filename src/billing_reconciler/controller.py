"""One reconcile pass: load desired, observe, plan, apply, verify convergence."""
