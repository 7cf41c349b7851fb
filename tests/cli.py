"""Running the CLI in-process for tests: one helper, used by every CLI test module."""

from __future__ import annotations

import pytest

from pipesim.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout, stderr of ``pipesim ARGV`` (argparse's own errors exit via SystemExit)."""
    try:
        code = main(list(argv))
    except SystemExit as done:
        code = int(done.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
