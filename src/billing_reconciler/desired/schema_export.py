"""JSON Schemas (draft 2020-12) of billing.yaml, plan files and contract customer files,
generated from the models.

The same schemas are used three ways: committed under `schemas/` for editors (the
`yaml-language-server` modeline), printed/written by `reconcile schema`, and applied to the
raw YAML by the loader.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from billing_reconciler.config import config_json_schema
from billing_reconciler.desired.customer_models import CustomerModel, CustomersFileModel
from billing_reconciler.desired.models import (
    FeatureModel,
    PlanModel,
    PlansFileModel,
    ProductModel,
)

DRAFT: Final[str] = "https://json-schema.org/draft/2020-12/schema"
BASE_ID: Final[str] = "https://billing-reconciler.dev/schemas/"
SCHEMA_FILES: Final[tuple[str, ...]] = (
    "billing.schema.json",
    "plans.schema.json",
    "customers.schema.json",
)


@cache
def billing_schema() -> dict[str, Any]:
    """Schema of billing.yaml."""
    return config_json_schema()


@cache
def plans_schema() -> dict[str, Any]:
    """Schema of a plan file: Frontier's flat form, or its apiVersion/kind/spec document form."""
    models: list[type[BaseModel]] = [PlansFileModel, ProductModel, PlanModel, FeatureModel]
    _, top = models_json_schema([(m, "validation") for m in models])
    defs: dict[str, Any] = dict(top["$defs"])
    defs["Document"] = _document_schema()
    return {
        "$schema": DRAFT,
        "$id": BASE_ID + "plans.schema.json",
        "title": "Plan file",
        "description": "Products, prices, features and plans in Raystack Frontier's plans "
        "format (flat: features/products/plans; or document: apiVersion/kind/spec), plus "
        "billing-reconciler's optional extensions. See docs/configuration.md.",
        "type": "object",
        "if": {"required": ["kind"]},
        "then": {"$ref": "#/$defs/Document"},
        "else": {"$ref": "#/$defs/PlansFileModel"},
        "$defs": defs,
    }


@cache
def customers_schema() -> dict[str, Any]:
    """Schema of a contract customers file (`desired/customers/*.yaml`)."""
    _, top = models_json_schema([(m, "validation") for m in (CustomersFileModel, CustomerModel)])
    defs: dict[str, Any] = dict(top["$defs"])
    envelope = defs.pop("CustomersFileModel")
    envelope["properties"]["customers"]["items"] = {"$ref": "#/$defs/CustomerModel"}
    return {
        "$schema": DRAFT,
        "$id": BASE_ID + "customers.schema.json",
        **envelope,
        "title": "Contract customers file",
        "description": "Billing accounts declared by org id (DESIGN §15): details, offline, "
        "plan, a fixed seat count, credit_min, due_in_days, currency. For these accounts the "
        "YAML is the local side of the customer merge and always wins.",
        "$defs": defs,
    }


def sub_schema(root: dict[str, Any], name: str) -> dict[str, Any]:
    """A schema validating one definition of `root` (keeping its `$defs` for references)."""
    return {"$defs": root["$defs"], "$ref": f"#/$defs/{name}"}


def _document_schema() -> dict[str, Any]:
    def kind_rule(kind: str, model: str) -> dict[str, Any]:
        return {
            "if": {"properties": {"kind": {"const": kind}}},
            "then": {"properties": {"spec": {"items": {"$ref": f"#/$defs/{model}"}}}},
        }

    return {
        "title": "Document",
        "description": "Frontier's document form; several may share a file, separated by ---.",
        "type": "object",
        "additionalProperties": False,
        "required": ["kind", "spec"],
        "properties": {
            "apiVersion": {"const": "v1", "description": "Format version; only v1 exists."},
            "kind": {"enum": ["BillingProduct", "BillingPlan"]},
            "spec": {"type": "array", "description": "Products or plans, by kind."},
        },
        "allOf": [
            kind_rule("BillingProduct", "ProductModel"),
            kind_rule("BillingPlan", "PlanModel"),
        ],
    }


def render(schema: dict[str, Any]) -> str:
    """The committed text of a schema: stable, indented, newline-terminated."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def rendered_schemas() -> dict[str, str]:
    """File name -> text of every schema we publish."""
    return {
        "billing.schema.json": render(billing_schema()),
        "plans.schema.json": render(plans_schema()),
        "customers.schema.json": render(customers_schema()),
    }


def write_schemas(directory: Path) -> list[Path]:
    """Write every schema into `directory`; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered_schemas().items():
        target = directory / name
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written
