"""The committed OpenAPI document of the host API, `schemas/api.openapi.json`.

Regenerate with `python -m billing_reconciler.api.openapi` (writes the file; `--check` exits
1 when it is stale). A test fails when the committed file differs from the generated one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI

from billing_reconciler.api.app import api_router
from billing_reconciler.api.auth import ApiTokens
from billing_reconciler.api.context import ApiContext
from billing_reconciler.api.errors import install_error_handlers
from billing_reconciler.store import Store

FILE_NAME: Final = "api.openapi.json"
TITLE: Final = "billing-reconciler host API"
VERSION: Final = "v1beta1"


def openapi_document() -> dict[str, Any]:
    """The document, generated from the routes (an in-memory store backs the throwaway app)."""
    store = Store.open("sqlite://")
    try:
        app = FastAPI(title=TITLE, version=VERSION, docs_url=None, redoc_url=None)
        install_error_handlers(app)
        app.include_router(api_router(ApiContext(store=store, tokens=ApiTokens())))
        return app.openapi()
    finally:
        store.close()


def render() -> str:
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    target = Path("schemas") / FILE_NAME
    text = render()
    if "--check" in argv:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != text:
            print(f"{target} is stale; run python -m billing_reconciler.api.openapi")
            return 1
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
