"""pipesim.Pipeline under torchrun (pipesim.init joins its env:// rendezvous): the same mixed
model trains to the same weights as in one process (float64, 1e-10)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.runtime.library_models import mixed, mixed_batch, reference

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import atexit, sys, torch
import torch.distributed as dist
from torch import nn
import pipesim
from tests.runtime.library_models import mixed, mixed_batch

def left():  # registered before pipesim.init(), so it runs after pipesim's own exit handler
    # one write of one line: both ranks share the pipe (print's pieces interleaved once)
    sys.stdout.write(f"process group left at exit: {not dist.is_initialized()}\\n")
    sys.stdout.flush()

atexit.register(left)
rank, world = pipesim.init()
pipe = pipesim.Pipeline(mixed(), "zb-h1", 4, nn.functional.cross_entropy)
opt = torch.optim.SGD(pipe.parameters(), lr=0.1)
for step in range(2):
    x, y = mixed_batch(step)
    pipe.step(x, y)
    opt.step()
    opt.zero_grad()
torch.save(pipe.state_dict(), f"{sys.argv[1]}/rank{rank}.pt")
"""


def test_pipeline_under_torchrun_trains_as_one_process(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = os.environ | {"PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", str(script), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    # the script never destroys its process group: pipesim.init() does it at exit, then waits
    # for gloo's workers to sleep (``launch.gloo_settled``), before the interpreter finalizes
    assert done.stdout.count("process group left at exit: True") == 2, done.stdout
    state = {k: v for r in range(2)
             for k, v in torch.load(tmp_path / f"rank{r}.pt", weights_only=True).items()}
    _, want, _ = reference(mixed(), [mixed_batch(s) for s in range(2)],
                           torch.nn.functional.cross_entropy)
    assert set(state) == set(want)
    for name, value in want.items():
        torch.testing.assert_close(state[name], value, rtol=1e-10, atol=1e-10, msg=name)
