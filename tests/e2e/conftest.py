"""Fixtures of the end-to-end CLI tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from tests.e2e.cli import EXAMPLE


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A scratch directory holding a copy of the example desired/."""
    shutil.copytree(EXAMPLE, tmp_path / "desired")
    return tmp_path


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """Commands run in-process (CliRunner) configure structlog to print to the stderr of the
    moment, a stream CliRunner closes afterwards: put back what was there before, so later
    in-process logging does not write to a closed file."""
    before = structlog.get_config()
    yield
    structlog.configure(**before)
