"""Contract customers (`desired/customers/*.yaml`, DESIGN §15): loading and positioned errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from billing_reconciler.desired import LoadResult, load_desired
from billing_reconciler.model_customers import Address, CustomerFields, TaxId

REPO = Path(__file__).resolve().parents[3]

BILLING = "billing:\n  default_currency: eur\n"
PLANS = """\
products:
  - name: base
    title: Base
    behavior: per_seat
    prices:
      - name: monthly
        interval: month
        amount: 1000
      - name: yearly
        interval: year
        amount: 10000
plans:
  - name: team_monthly
    title: Team
    interval: month
    products:
      - name: base
  - name: legacy_monthly
    title: Legacy
    interval: year
    state: inactive
    products:
      - name: base
"""
PLANS_NO_SEATS = PLANS.replace("    behavior: per_seat\n", "")
ACME = """\
customers:
  - org_id: acme
    name: Acme
    email: ap@acme.test
    address:
      city: Berlin
      country: de
    tax_ids:
      - type: eu_vat
        value: DE123456789
    plan: team_monthly
    seats: 5
    credit_min: -100
    due_in_days: 14
"""


def desired(root: Path, customers: dict[str, str], *, plans: str = PLANS) -> Path:
    files = {"billing.yaml": BILLING, "plans/catalog.yaml": plans}
    files.update({f"customers/{name}": text for name, text in customers.items()})
    for name, text in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return root


def errors(result: LoadResult) -> list[str]:
    assert result.state is None
    return [f"{d.path.rsplit('/', 1)[-1]}:{d.line}:{d.column}: {d.message}" for d in result.errors]


def test_a_contract_customer_loads_canonical(tmp_path: Path) -> None:
    result = load_desired(desired(tmp_path, {"acme.yaml": ACME}))
    assert result.state is not None, [str(d) for d in result.diagnostics]
    (spec,) = result.state.customers
    assert (spec.org_id, spec.plan, spec.seats, spec.currency) == ("acme", "team_monthly", 5, "eur")
    assert (spec.credit_min, spec.due_in_days, spec.offline) == (-100, 14, False)
    assert spec.customer_fields() == CustomerFields(
        name="Acme",
        email="ap@acme.test",
        address=Address(city="Berlin", country="DE"),
        tax_ids=(TaxId("eu_vat", "DE123456789"),),
    )


def test_customers_change_the_revision_and_no_customers_keep_it(tmp_path: Path) -> None:
    without = load_desired(desired(tmp_path / "a", {}))
    with_one = load_desired(desired(tmp_path / "b", {"acme.yaml": ACME}))
    assert without.state is not None
    assert with_one.state is not None
    assert without.state.customers == ()
    assert without.state.revision != with_one.state.revision


def test_unknown_plan_is_positioned_with_a_suggestion(tmp_path: Path) -> None:
    text = ACME.replace("plan: team_monthly", "plan: team_montly")
    assert errors(load_desired(desired(tmp_path, {"acme.yaml": text}))) == [
        "acme.yaml:11:11: customers[0].plan: unknown plan 'team_montly'; "
        "did you mean 'team_monthly'?"
    ]


def test_seats_need_a_per_seat_product(tmp_path: Path) -> None:
    assert errors(load_desired(desired(tmp_path, {"acme.yaml": ACME}, plans=PLANS_NO_SEATS))) == [
        "acme.yaml:12:12: customers[0].seats: plan 'team_monthly' has no per_seat product "
        "to apply a seat count to"
    ]


def test_inactive_plan_is_refused(tmp_path: Path) -> None:
    text = ACME.replace("plan: team_monthly", "plan: legacy_monthly")
    assert errors(load_desired(desired(tmp_path, {"acme.yaml": text}))) == [
        "acme.yaml:11:11: customers[0].plan: 'legacy_monthly' is inactive; name an active plan"
    ]


def test_duplicate_org_id_across_files(tmp_path: Path) -> None:
    other = "customers:\n  - org_id: zeta\n    name: Z\n  - org_id: acme\n    name: Again\n"
    (found,) = errors(load_desired(desired(tmp_path, {"acme.yaml": ACME, "more.yaml": other})))
    assert found.startswith("more.yaml:4:13: customers[1].org_id: 'acme' is already declared at ")
    assert found.endswith("/customers/acme.yaml:2:13")


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        ("    plan:", "    plna:", "acme.yaml:11:5: unknown key 'plna'; did you mean 'plan'?"),
        (
            "due_in_days: 14",
            "due_in_days: -1",
            "acme.yaml:14:18: customers[0].due_in_days: Input should be",
        ),
        (
            "    name: Acme\n",
            "    name: Acme\n    currency: usd1\n",
            "acme.yaml:4:15: customers[0].currency",
        ),
        (
            "org_id: acme",
            "org_id: a/b",
            "acme.yaml:2:13: customers[0].org_id: String should match pattern",
        ),
        (
            "org_id: acme",
            "org_id: " + "a" * 65,
            "acme.yaml:2:13: customers[0].org_id: String should match",
        ),
        (
            "seats: 5",
            "seats: 0",
            "acme.yaml:12:12: customers[0].seats: Input should be greater than 0",
        ),
        (
            "credit_min: -100",
            "credit_min: 1.5",
            "acme.yaml:13:17: customers[0].credit_min: Input should be",
        ),
        ("    plan: team_monthly\n", "", "acme.yaml:2:5: seats: a fixed seat count needs a plan"),
    ],
)
def test_bad_entries_are_positioned(tmp_path: Path, replace: str, by: str, expected: str) -> None:
    text = ACME.replace(replace, by)
    assert text != ACME
    found = errors(load_desired(desired(tmp_path, {"acme.yaml": text})))
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


def test_bad_currency_names_iso_4217(tmp_path: Path) -> None:
    text = ACME.replace("    name: Acme\n", "    name: Acme\n    currency: xyz\n")
    (message,) = errors(load_desired(desired(tmp_path, {"acme.yaml": text})))
    assert (
        message == "acme.yaml:4:15: customers[0].currency: unknown currency 'xyz': "
        "not an active ISO 4217 code"
    )


def test_every_bad_entry_of_every_file_in_one_run(tmp_path: Path) -> None:
    two = "customers:\n  - org_id: b\n    nme: B\n  - org_id: c\n    name: C\n    plan: nope\n"
    found = errors(
        load_desired(
            desired(tmp_path, {"acme.yaml": ACME.replace("seats: 5", "seats: -5"), "two.yaml": two})
        )
    )
    assert [f.split(": ", 1)[0] for f in found] == [
        "acme.yaml:12:12",
        "two.yaml:2:5",  # missing name
        "two.yaml:3:5",  # unknown key
        "two.yaml:6:11",  # unknown plan
    ]


@pytest.mark.parametrize(
    "mistake",
    ["    colour: red\n", "    due_in_days: -1\n", "    email: nope\n", "    seats: 0\n"],
)
def test_an_entry_with_an_error_still_has_its_plan_and_org_id_checked(
    tmp_path: Path, mistake: str
) -> None:
    # The duplicate org id and the unknown plan are mistakes of their own, not echoes of the
    # schema error in the same entry: all three are reported in one run (before: only it).
    text = ACME + "  - org_id: acme\n    name: Again\n    plan: team_montly\n" + mistake
    found = errors(load_desired(desired(tmp_path, {"acme.yaml": text})))
    assert len(found) == 3, found
    assert found[0].startswith(
        "acme.yaml:15:13: customers[1].org_id: 'acme' is already declared at "
    ), found
    assert found[1] == (
        "acme.yaml:17:11: customers[1].plan: unknown plan 'team_montly'; "
        "did you mean 'team_monthly'?"
    )
    assert found[2].startswith("acme.yaml:18:"), found


def test_a_wrong_value_is_not_checked_again_across_entries(tmp_path: Path) -> None:
    # The plan's own error (not a name) is the one error: no "unknown plan" on top of it.
    text = ACME.replace("plan: team_monthly", "plan: 'team monthly'").replace(
        "seats: 5", "seats: 0"
    )
    found = errors(load_desired(desired(tmp_path, {"acme.yaml": text})))
    assert [f.split(": ", 2)[1] for f in found] == ["customers[0].plan", "customers[0].seats"], (
        found
    )


def test_errors_in_one_entry_do_not_hide_an_unknown_plan_in_another(tmp_path: Path) -> None:
    text = (
        "customers:\n  - org_id: a\n    name: A\n    due_in_days: -3\n"
        "  - org_id: b\n    name: B\n    plan: no_such_plan\n"
        "  - org_id: c\n    name: C\n    colour: blue\n"
    )
    found = errors(load_desired(desired(tmp_path, {"acme.yaml": text})))
    assert [f.split(": ", 2)[:2] for f in found] == [
        ["acme.yaml:4:18", "customers[0].due_in_days"],
        ["acme.yaml:7:11", "customers[1].plan"],
        ["acme.yaml:10:5", "unknown key 'colour'; expected one of"],
    ]


def test_envelope_errors(tmp_path: Path) -> None:
    found = errors(load_desired(desired(tmp_path, {"a.yaml": "customer:\n  - org_id: a\n"})))
    assert found == ["a.yaml:1:1: unknown key 'customer'; did you mean 'customers'?"]
    found = errors(load_desired(desired(tmp_path, {"a.yaml": "- org_id: a\n"})))
    assert found[0].startswith("a.yaml:1:1: the root of a customers file must be a mapping")


def test_plans_path_dot_does_not_read_customers_as_plans(tmp_path: Path) -> None:
    root = desired(tmp_path, {"acme.yaml": ACME})
    (root / "billing.yaml").write_text(BILLING + "  plans_path: .\n", encoding="utf-8")
    shutil.move(root / "plans" / "catalog.yaml", root / "catalog.yaml")
    result = load_desired(root)
    assert result.state is not None, [str(d) for d in result.diagnostics]
    assert [c.org_id for c in result.state.customers] == ["acme"]


def test_shipped_example_customer() -> None:
    result = load_desired(REPO / "desired")
    assert result.state is not None, [str(d) for d in result.diagnostics]
    assert [c.org_id for c in result.state.customers] == ["acme"]
