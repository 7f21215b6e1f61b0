"""Planning: the pure diff of (desired, observed, last-applied) into a Plan, and its renderers."""
