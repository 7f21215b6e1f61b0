"""Executes a Plan through the gateway and the store, with the journal. The only writer."""
