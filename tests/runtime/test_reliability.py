"""Faults end the job with the failing rank's name; hangs become reports; nothing is left running.

Faults are injected with PIPESIM_FAULT (pipesim.processes.faults). No test depends on timing:
the stall timeout is small, and waits poll for a state with a generous deadline.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from pipesim.cli import main

RUN = ["run", "--schedule", "1f1b", "-w", "3", "-m", "4", "--hidden-size", "8", "-b", "2",
       "--quiet"]


def _no_children_left() -> None:
    for child in mp.active_children():
        child.join(5)
    assert mp.active_children() == []


@pytest.mark.parametrize(("fault", "words"), [
    ("2:2B1:raise", "rank 2 failed: InjectedFault: injected fault at 2B1"),
    ("0:0F1:exit", "rank 0 failed: exited with code 3"),
    ("1:1F2:kill", "rank 1 failed: killed by signal SIGKILL"),
])
def test_a_failing_rank_ends_the_job_with_its_name(fault: str, words: str, capsys,
                                                   monkeypatch) -> None:
    monkeypatch.setenv("PIPESIM_FAULT", fault)
    assert main(RUN) == 1
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith("pipesim: warning:")]  # 3 ranks on fewer cores say so
    assert err == [f"pipesim: error: {words}"] or err[0].startswith(f"pipesim: error: {words}")
    _no_children_left()


def test_a_hang_becomes_a_report_of_every_rank(capsys, monkeypatch) -> None:
    monkeypatch.setenv("PIPESIM_FAULT", "1:1F2:hang")
    assert main([*RUN, "--stall-timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert "stalled: no action completed for 1 s" in err
    assert "rank 1 is running 1F2; last completed: 1B0" in err
    assert "rank 2 waits for the activation of 1F2 from rank 1 (to run 2F2)" in err
    assert "rank 0 waits for the gradient of 1B1 from rank 1 (to run 0B1)" in err
    _no_children_left()


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            kids |= {int(x) for x in fh.read().split()}
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _default_sigint() -> None:
    """In the child before exec: Ctrl-C as a terminal delivers it. A test run started in the
    background of a shell without job control inherits SIGINT ignored, and Python then installs
    no handler: the run would rightly ignore the Ctrl-C this test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_ends_every_rank() -> None:
    env = {**os.environ, "PIPESIM_FAULT": "1:1F2:hang"}
    proc = subprocess.Popen([sys.executable, "-m", "pipesim", *RUN, "--stall-timeout", "600"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint)
    deadline = time.monotonic() + 120
    while len(_children(proc.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for the ranks to exist, not synchronising with them
    ranks = _children(proc.pid)
    assert len(ranks) >= 3
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert b"interrupted" in err
    assert not any(_alive(pid) for pid in ranks)


def test_three_runs_at_once_each_get_their_own_port() -> None:
    cmd = [sys.executable, "-m", "pipesim", "run", "-w", "2", "-m", "2", "--quiet", "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err.decode()
        assert out.decode().count("\n") == 1  # exactly one JSON object


def _listening_addresses(rank: int, world: int) -> list[str]:
    """Worker: the addresses this rank's process listens on (after the process group is up)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        with open(table) as fh:
            lines = fh.read().splitlines()[1:]
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                raw = bytes.fromhex(cols[1].split(":")[0])
                words = [raw[i:i + 4][::-1] for i in range(0, len(raw), 4)]
                found.append(socket.inet_ntop(family, b"".join(words)))
    import torch.distributed as dist
    gathered: list[object] = [None] * world
    dist.all_gather_object(gathered, found)
    return [a for addrs in gathered for a in addrs]  # type: ignore[union-attr]


def test_single_machine_runs_listen_on_loopback_only() -> None:
    from pipesim.processes.launch import launch
    addresses = launch(_listening_addresses, 3)
    assert addresses, "expected the rendezvous store and gloo to listen somewhere"
    assert set(addresses) <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, addresses


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_torchrun_nodes_on_loopback() -> None:
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    port = _free_port()
    common = ["--nnodes", "2", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
              "--master-port", str(port), "-m", "pipesim", "run", "--schedule", "zb-h1", "-m", "4",
              "--hidden-size", "8", "-b", "2", "--dtype", "float64", "--verify", "--quiet",
              "--json"]
    nodes = [subprocess.Popen([torchrun, "--node-rank", str(n), *common],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for n in (0, 1)]
    outs = [p.communicate(timeout=300) for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outs[0][1].decode()[-2000:]
    import json
    lines = [ln for ln in outs[0][0].decode().splitlines() if ln.startswith("{")]
    assert len(lines) == 1  # rank 0 alone prints the object
    data = json.loads(lines[0])
    assert data["ranks"] == 4 and data["verify_max_abs_diff"] < 1e-12
    assert not [ln for ln in outs[1][0].decode().splitlines() if ln.startswith("{")]


def test_a_deadlocking_schedule_file_is_refused_before_any_process_starts(tmp_path,
                                                                          capsys) -> None:
    path = tmp_path / "deadlock.txt"
    path.write_text("0F0 0B0 0F1 0B1\n1F1 1F0 1B0 1B1\n")
    before = set(mp.active_children())
    assert main(["run", "--file", str(path), "-w", "2", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "the schedule cannot run" in err and "deadlock" in err
    assert set(mp.active_children()) == before


def test_a_rank_whose_launcher_is_gone_leaves_at_once() -> None:
    """A Ctrl-C can end the launcher between a fork and the rank's PR_SET_PDEATHSIG: the rank
    notices that its parent is not the launcher that forked it, and exits (no orphan)."""
    import multiprocessing as mp

    from pipesim.processes.launch import _die_with_parent, _stop
    ctx = mp.get_context("fork")
    orphan = ctx.Process(target=_die_with_parent, args=(1,))  # "forked by pid 1": not ours
    orphan.start()
    orphan.join(30)
    assert orphan.exitcode == 1
    kept = ctx.Process(target=_die_with_parent, args=(os.getpid(),))  # its launcher: it stays
    kept.start()
    kept.join(30)
    assert kept.exitcode == 0
    _stop([ctx.Process(target=print)])  # a rank never started: nothing to stop, no error


def test_a_ctrl_c_reaches_the_launcher_even_without_keyboardinterrupt() -> None:
    """The launcher watches a wakeup pipe that the C-level handler writes: a SIGINT stops the
    job even when Python's KeyboardInterrupt does not come (here a no-op handler swallows it)."""
    from pipesim.processes.launch import _Interrupts
    before = signal.signal(signal.SIGINT, lambda *_: None)
    try:
        with _Interrupts() as interrupts:
            interrupts.check()  # nothing yet
            os.kill(os.getpid(), signal.SIGINT)
            with pytest.raises(KeyboardInterrupt):
                interrupts.check()
    finally:
        signal.signal(signal.SIGINT, before)
