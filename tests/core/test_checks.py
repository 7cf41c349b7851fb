"""checks.is_positive_int: what counts as a count."""

from __future__ import annotations

import pytest

from pipesim.checks import is_positive_int


@pytest.mark.parametrize(("value", "ok"), [
    (1, True), (64, True), (0, False), (-3, False), (True, False), (False, False),
    (2.0, False), ("2", False), (None, False),
])
def test_is_positive_int(value: object, ok: bool) -> None:
    assert is_positive_int(value) is ok
