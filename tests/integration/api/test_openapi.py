"""`schemas/api.openapi.json` is generated from the routes; a stale copy fails here."""

from __future__ import annotations

import json
from pathlib import Path

from billing_reconciler.api.openapi import FILE_NAME, openapi_document, render

COMMITTED = Path(__file__).resolve().parents[3] / "schemas" / FILE_NAME


def test_the_committed_openapi_document_is_current() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render(), (
        f"{COMMITTED} is stale: run `python -m billing_reconciler.api.openapi` and commit it"
    )


def test_every_route_declares_bearer_auth_and_its_error_answers() -> None:
    document = openapi_document()
    assert "HTTPBearer" in document["components"]["securitySchemes"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation.get("security"), (method, path)
            assert {"401", "422"} <= set(operation["responses"]), (method, path)
            error = operation["responses"]["401"]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)
    json.dumps(document)
