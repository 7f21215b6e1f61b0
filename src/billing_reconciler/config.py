"""Controller settings: the `billing:` block of billing.yaml plus the environment."""
