"""The ranks' allocator setting and the MLP's in-memory dataset."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

from pipesim.config import RunConfig
from pipesim.models.mlp import MLP_DATASET
from pipesim.runtime.train import make_batch
from pipesim.schedules import get_schedule

_FAULTS = """
import resource, sys, torch
from pipesim.processes.malloc import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():  # as a microbatch does: several 1 MiB temporaries alive at once, then freed
    held = [torch.empty(1 << 18).fill_(1.0) for _ in range(8)]
    del held
step()
before = faults()
for _ in range(20):
    step()
print(faults() - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True,
                         check=True)
    return int(out.stdout)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc's mallopt")
def test_kept_memory_is_reused_instead_of_faulted_in_again() -> None:
    # by default glibc gives freed memory back and faults it in again (2,275 faults here with
    # glibc 2.36); kept, the heap reuses its pages (256, the first pass's growth)
    kept, default = _faults("keep"), _faults("default")
    assert kept * 4 < default


def _cfg(step_layers: int = 2, **kw: object) -> RunConfig:
    return RunConfig(schedule=get_schedule("1f1b", 2, 4), hidden_size=16, layers=step_layers,
                     batch_size=3, **kw)  # type: ignore[arg-type]


def test_mlp_batches_come_from_one_dataset_and_differ_by_step() -> None:
    cfg = _cfg()
    x3, y3 = make_batch(cfg, 3)
    again, _ = make_batch(cfg, 3)
    x4, _ = make_batch(cfg, 4)
    assert len(x3) == 4 and x3[0].shape == (3, 16) and y3[0].shape == (3, 16)
    assert all(torch.equal(a, b) for a, b in zip(x3, again, strict=True))
    assert not torch.equal(torch.cat(x3), torch.cat(x4))
    # every sample is a row of the dataset: a step's rows recur across steps
    rows = {tuple(r.tolist()) for s in range(40) for r in torch.cat(make_batch(cfg, s)[0])}
    assert len(rows) <= MLP_DATASET
    classes = make_batch(_cfg(loss="cross-entropy"), 0)[1][0]
    assert classes.dtype == torch.int64 and int(classes.max()) < 16


def _which_allocator(rank: int, world: int) -> bool:
    import pipesim.processes.launch as launcher
    return bool(launcher.KEPT)  # type: ignore[attr-defined]


@pytest.mark.parametrize("keep", [True, False])
def test_launch_options_choose_the_ranks_allocator(keep: bool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranks keep freed memory unless LaunchOptions says not to (the benchmarks compare both);
    the forked ranks inherit the recording stand-in set here."""
    import pipesim.processes.launch as launcher
    from pipesim.processes.launch import LaunchOptions, launch_all

    monkeypatch.setattr(launcher, "KEPT", [], raising=False)
    monkeypatch.setattr(launcher, "keep_freed_memory", lambda: launcher.KEPT.append(1) or True)
    got = launch_all(_which_allocator, 2, LaunchOptions(keep_freed_memory=keep))
    assert got == [keep, keep]
