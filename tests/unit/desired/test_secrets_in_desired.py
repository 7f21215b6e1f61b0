"""A key-shaped secret anywhere in desired/ is a validation error at its position, never a
value printed in a plan (found by a fresh-user test of issue 8)."""

from __future__ import annotations

import shutil
from pathlib import Path

from billing_reconciler.desired import load_desired
from tests.e2e.cli import EXAMPLE


def test_a_stripe_key_in_metadata_is_refused_where_it_stands(tmp_path: Path) -> None:
    desired = tmp_path / "desired"
    shutil.copytree(EXAMPLE, desired)
    catalog = desired / "plans" / "catalog.yaml"
    text = catalog.read_text()
    assert "    title: Team seat\n" in text
    catalog.write_text(
        text.replace(
            "    title: Team seat\n",
            "    title: Team seat\n    metadata:\n      api_key: sk_live_51VERYSECRETKEYabcdefgh\n",
            1,
        )
    )
    result = load_desired(desired)
    assert result.state is None
    [error] = [d for d in result.diagnostics if d.is_error]
    assert "looks like a Stripe key or webhook secret" in error.message
    assert error.path.endswith("catalog.yaml")
    line = catalog.read_text().splitlines()[error.line - 1]
    assert "api_key:" in line
    assert "VERYSECRET" not in str(error)


def test_the_example_has_no_secret_and_loads(tmp_path: Path) -> None:
    assert load_desired(EXAMPLE).state is not None
