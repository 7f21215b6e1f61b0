"""The host application's HTTP API and Python API."""
