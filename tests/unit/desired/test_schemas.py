"""The committed JSON Schemas are current, and the YAML we ship satisfies them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from billing_reconciler.desired.schema_export import SCHEMA_FILES, rendered_schemas

REPO = Path(__file__).resolve().parents[3]
SCHEMAS = REPO / "schemas"


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_committed_schema_is_current(name: str) -> None:
    committed = (SCHEMAS / name).read_text(encoding="utf-8")
    assert committed == rendered_schemas()[name], (
        f"schemas/{name} is stale: run `reconcile schema --write`"
    )


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(name)


def _yaml_files() -> list[Path]:
    return sorted((REPO / "desired").rglob("*.yaml"))


@pytest.mark.parametrize("file", _yaml_files(), ids=lambda p: p.name)
def test_shipped_yaml_satisfies_its_modeline_schema(file: Path) -> None:
    first_line = file.read_text(encoding="utf-8").splitlines()[0]
    prefix = "# yaml-language-server: $schema="
    assert first_line.startswith(prefix)
    schema_file = (file.parent / first_line.removeprefix(prefix)).resolve()
    assert schema_file.parent == SCHEMAS.resolve()
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    for document in yaml.safe_load_all(file.read_text(encoding="utf-8")):
        jsonschema.Draft202012Validator(schema).validate(document)


def test_schema_rejects_what_pydantic_rejects() -> None:
    schema = json.loads((SCHEMAS / "plans.schema.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    bad = {"products": [{"name": "basic", "title": "B", "prices": [{"amount": 9.99}]}]}
    assert not validator.is_valid(bad)
    assert not validator.is_valid({"kind": "BillingPlan", "spec": [{"name": "x"}]})
    assert validator.is_valid({"kind": "BillingProduct", "spec": []})
