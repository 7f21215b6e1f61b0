"""`reconcile serve --reuse-port` with `--emulator` is refused before anything starts (tester
T3-7: each process ran its own embedded emulator, so the replicas did not share a Stripe)."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.cli import EXAMPLE, reconcile


def test_reuse_port_with_the_embedded_emulator_is_refused(tmp_path: Path) -> None:
    result = reconcile(
        "serve", "--emulator", "--reuse-port", "--desired", str(EXAMPLE), cwd=tmp_path
    )
    assert result.returncode == 1, result
    assert "--reuse-port cannot be combined with --emulator" in result.stderr
    assert "reconcile emulator" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".billing").exists()  # nothing started, nothing written
