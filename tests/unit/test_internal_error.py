"""The last line of defence: an exception nothing names ends in one redacted line, exit 1,
and its traceback goes to the log (JSON here), never to the user as a Python traceback."""

from __future__ import annotations

import json

import pytest

from billing_reconciler.cli.common import internal_error
from billing_reconciler.log_setup import configure_logging


def test_an_unexpected_exception_is_one_redacted_line_and_a_logged_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(json=True, level_name="info")
    try:
        raise RuntimeError("boom with sk_test_51abcdefghijklmnopqrstuvwxyz\nsecond line")
    except RuntimeError as error:
        code = internal_error(error)
    assert code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    plain = [line for line in lines if not line.startswith("{")]
    assert len(plain) == 1
    assert plain[0].startswith("internal error: RuntimeError: boom with sk_test_")
    assert plain[0].endswith("; details in the log")
    assert "abcdefghijklmnopqrstuvwxyz" not in "\n".join(lines)
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert any("Traceback" in r.get("exception", "") for r in records)
