"""Desired state: YAML loading with positions, pydantic models, cross-references, JSON Schema."""
