"""The I/O edge of each domain: its reader (observation over the gateway and the store) and
the executors of its step kinds. `domains/` says what; modules here do it."""
