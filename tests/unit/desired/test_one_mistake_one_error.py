"""A plan file that fails to parse is one error: what only follows from its absence is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from billing_reconciler.desired import load_desired

BILLING = """\
billing:
  customer:
    default_plan: free_monthly
    credit_overdraft_product: credits
"""

CATALOG = """\
products:
  - name: platform
    title: Platform
    prices:
      - name: monthly
        interval: month
        amount: 0
  - name: credits
    title: Credits
    behavior: credits
    config:
      credit_amount: 100
    prices:
      - name: pack
        amount: 100
"""

PLANS = """\
plans:
  - name: free_monthly
    title: Free
    interval: month
    products:
      - name: platform
"""

BROKEN = {
    "a YAML syntax error": ("products:\n  - name: platform\n", "    prices: [\n"),
    "a duplicate key": ("products:\n  - name: platform\n", "    name: again\n"),
}


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.mark.parametrize("mistake", sorted(BROKEN))
def test_a_broken_catalog_file_is_the_only_error(tmp_path: Path, mistake: str) -> None:
    head, breakage = BROKEN[mistake]
    broken_catalog = CATALOG.replace(head, head + breakage, 1)
    files = {"billing.yaml": BILLING, "plans/catalog.yaml": broken_catalog}
    result = load_desired(write(tmp_path, files | {"plans/plans.yaml": PLANS}))
    # Before: also "plan 'free_monthly' references unknown product 'platform'" and
    # "credit_overdraft_product 'credits' does not exist", both only echoes of this one.
    assert [d.path.split("/")[-1] for d in result.errors] == ["catalog.yaml"], [
        str(d) for d in result.errors
    ]


def test_a_broken_plans_file_does_not_make_the_default_plan_missing(tmp_path: Path) -> None:
    files = {"billing.yaml": BILLING, "plans/catalog.yaml": CATALOG}
    result = load_desired(write(tmp_path, files | {"plans/plans.yaml": PLANS + "  - [\n"}))
    assert [d.path.split("/")[-1] for d in result.errors] == ["plans.yaml"]


def test_names_the_broken_file_cannot_define_are_still_reported(tmp_path: Path) -> None:
    # One error per mistake still: a typo elsewhere is its own mistake.
    plans = PLANS.replace("- name: platform", "- name: platfrom")
    broken_catalog = CATALOG + "  - name: extra\n    prices: [\n"
    files = {"billing.yaml": BILLING, "plans/catalog.yaml": broken_catalog}
    result = load_desired(write(tmp_path, files | {"plans/plans.yaml": plans}))
    messages = sorted(d.message for d in result.errors)
    assert len(messages) == 2
    assert "references unknown product 'platfrom'" in messages[-1]


def test_without_a_broken_file_a_missing_product_is_reported(tmp_path: Path) -> None:
    catalog = CATALOG.replace("name: platform", "name: platform2")
    files = {"billing.yaml": BILLING, "plans/catalog.yaml": catalog}
    result = load_desired(write(tmp_path, files | {"plans/plans.yaml": PLANS}))
    assert [d.message for d in result.errors] == [
        "plan 'free_monthly' references unknown product 'platform'"
    ]


def test_a_plan_with_a_schema_error_still_has_its_products_checked(tmp_path: Path) -> None:
    # The unknown key and the typo in a product name are two mistakes: both are reported.
    plans = PLANS.replace("    interval: month\n", "    interval: month\n    colour: red\n")
    plans = plans.replace("- name: platform", "- name: platfrom")
    files = {"billing.yaml": BILLING, "plans/catalog.yaml": CATALOG}
    result = load_desired(write(tmp_path, files | {"plans/plans.yaml": plans}))
    assert [(d.line, d.message.split(";")[0]) for d in result.errors] == [
        (5, "unknown key 'colour'"),
        (7, "plan 'free_monthly' references unknown product 'platfrom'"),
    ]


def test_a_product_with_a_schema_error_hides_only_references_to_itself(tmp_path: Path) -> None:
    # References to the broken product follow from its error; one to a product nobody
    # declares does not, and is reported.
    catalog = CATALOG.replace("        amount: 0\n", "        amount: -1\n")
    plans = PLANS + "      - name: nowhere\n"
    files = {"billing.yaml": BILLING, "plans/catalog.yaml": catalog}
    result = load_desired(write(tmp_path, files | {"plans/plans.yaml": plans}))
    assert [(d.path.split("/")[-1], d.line) for d in result.errors] == [
        ("catalog.yaml", 7),
        ("plans.yaml", 7),
    ]
    assert "references unknown product 'nowhere'" in result.errors[1].message


def test_an_invalid_billing_yaml_still_has_its_default_plan_checked(tmp_path: Path) -> None:
    # The unknown key and the misspelt default plan are two mistakes of one file.
    billing = BILLING.replace("billing:\n", "billing:\n  colour: red\n")
    files = {"billing.yaml": billing, "plans/catalog.yaml": CATALOG, "plans/plans.yaml": PLANS}
    result = load_desired(write(tmp_path, files))
    assert [(d.line, d.message.split(";")[0]) for d in result.errors] == [
        (2, "unknown key 'colour'")
    ]
    typo = billing.replace("default_plan: free_monthly", "default_plan: free_montly")
    result = load_desired(write(tmp_path, files | {"billing.yaml": typo}))
    assert [(d.line, d.message.split(";")[0]) for d in result.errors] == [
        (2, "unknown key 'colour'"),
        (4, "default_plan 'free_montly' does not exist"),
    ]
