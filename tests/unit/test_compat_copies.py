"""The vendored compatibility fixtures are unmodified copies of the shared originals."""

from __future__ import annotations

import pytest

from tests.compat_files import COMPAT, SHARED_COMPAT

COPIES = sorted(p.relative_to(COMPAT) for p in COMPAT.rglob("*") if p.suffix in {".yaml", ".json"})


def test_every_fixture_is_vendored() -> None:
    assert [str(p) for p in COPIES] == [
        "frontier/billing-config-sample.yaml",
        "frontier/plans-sample.yaml",
        "stripe/fixtures3.json",
    ]


@pytest.mark.parametrize("relative", COPIES, ids=str)
def test_copy_is_byte_identical_to_the_shared_original(relative: object) -> None:
    original = SHARED_COMPAT / str(relative)
    if not original.is_file():
        pytest.skip(f"{SHARED_COMPAT} is not beside this clone: nothing to compare with")
    assert (COMPAT / str(relative)).read_bytes() == original.read_bytes()
