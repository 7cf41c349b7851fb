"""Fixtures shared by pipesim's tests, and the tiers. Keep this small: helpers used by one module
live there.

The folder is the tier: core/ (pure: no torch, no processes), runtime/ (real ranks on gloo),
browser/ (headless Chromium), gpu/ (CUDA and nccl; skipped without them). Each test gets its
folder's marker, so ``-m "not runtime and not browser"`` runs the fast tier.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pipesim.calibration import ENV, EngineCosts, cache_path

TIERS = {"runtime": pytest.mark.runtime, "browser": pytest.mark.browser, "gpu": pytest.mark.gpu}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        tier = parts[parts.index("tests") + 1] if "tests" in parts else ""
        if tier in TIERS:
            item.add_marker(TIERS[tier])


@pytest.fixture(autouse=True, scope="session")
def _engine_calibration(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test sees a calibration cache of its own, holding a fixed engine calibration, so
    no ``run --predict`` calibrates this machine and none reads or writes ~/.cache. A test of
    the cache points ``PIPESIM_CACHE_DIR`` elsewhere itself (monkeypatch)."""
    import os
    folder = tmp_path_factory.mktemp("pipesim-cache")
    os.environ[ENV] = str(folder)
    cache_path().write_text(EngineCosts(2e-5, 5e-4, "test", "test").to_json(), encoding="utf-8")


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, str | bytes], str]:
    """``write_file(name, content)`` -> the path of a new file under tmp_path, as a string."""

    def write(name: str, content: str | bytes) -> str:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return str(path)

    return write
