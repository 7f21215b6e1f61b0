"""Fixtures of the end-to-end CLI tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e.cli import EXAMPLE


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A scratch directory holding a copy of the example desired/."""
    shutil.copytree(EXAMPLE, tmp_path / "desired")
    return tmp_path
