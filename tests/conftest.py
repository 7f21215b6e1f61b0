"""Shared fixtures. Each family lives in its own module under tests/fixtures/."""

import pytest

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.emulator",
]

# The slow half of the suite: `make test` runs `-m slow` in one pytest process beside
# `-m "not slow"` over pytest-xdist workers (scripts/test-parallel; CI's wall time stays well
# under its budget, neither half is ever skipped; never two slow tests at once). Slow = the
# end-to-end tests (each starts `reconcile` or `serve` processes) and the customers and
# subscriptions crash matrices; the split keeps the two halves about even.
SLOW_PATHS = (
    "tests/e2e/",
    "tests/integration/customers/test_crash_matrix.py",
    "tests/integration/subscriptions/test_crash_matrix.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        where = item.path.relative_to(root).as_posix()
        if where.startswith(SLOW_PATHS):
            item.add_marker(pytest.mark.slow)
