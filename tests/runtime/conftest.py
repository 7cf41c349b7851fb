"""Tier (b): real multi-process runs on gloo. Ranks are forked from this process, so it must
never have started torch's thread pool: one thread, set before any test computes."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

