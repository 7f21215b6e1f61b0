"""Plan sections: one domain renders exactly as its plan; several get a heading each, and
their JSON reads back by domain."""

from __future__ import annotations

import json

import pytest

from billing_reconciler.model import Kind
from billing_reconciler.planning.plan import Action, Plan, Reason, Step
from billing_reconciler.planning.render import render_markdown, render_text
from billing_reconciler.planning.sections import (
    Section,
    render_sections_markdown,
    render_sections_text,
    sections_from_json,
    sections_to_json,
)
from billing_reconciler.planning.serialize import PlanFormatError, plan_to_json


def _plan(*steps: Step) -> Plan:
    return Plan(
        steps=steps,
        installation_id="default",
        desired_revision="rev1",
        fingerprint="fp",
        created_at=1,
    )


CATALOG = _plan(Step(Action.CREATE, Kind.PRODUCT, "product/base", Reason.NEW, idempotency_key="k"))
TOY = _plan(Step(Action.UPDATE, "greeting", "greeting/base", Reason.DRIFT, idempotency_key="g"))


def test_one_section_renders_byte_for_byte_as_its_plan() -> None:
    sections = [Section("catalog", CATALOG)]
    assert render_sections_text(sections) == render_text(CATALOG)
    assert render_sections_markdown(sections) == render_markdown(CATALOG)
    assert sections_to_json(sections) == plan_to_json(CATALOG)
    assert sections_from_json(plan_to_json(CATALOG), sole_domain="catalog") == {"catalog": CATALOG}


def test_several_sections_each_get_their_domain_in_apply_order() -> None:
    sections = [Section("catalog", CATALOG), Section("toy", TOY)]
    text = render_sections_text(sections)
    assert text.startswith("== catalog ==\n")
    assert "\n== toy ==\n" in text
    assert "~ greeting/base  (drift)" in text
    assert "### billing-reconciler plan: toy" in render_sections_markdown(sections)
    saved = sections_to_json(sections)
    assert [d["domain"] for d in json.loads(saved)["domains"]] == ["catalog", "toy"]
    read = sections_from_json(saved, sole_domain="catalog")
    assert read == {"catalog": CATALOG, "toy": TOY}
    # The catalog's kinds come back as `Kind` members, another domain's as strings.
    assert read["catalog"].steps[0].kind is Kind.PRODUCT
    assert read["toy"].steps[0].kind == "greeting"


def test_a_malformed_section_is_a_plan_format_error() -> None:
    with pytest.raises(PlanFormatError):
        sections_from_json('{"format_version": 1, "domains": [{}]}', sole_domain="catalog")
