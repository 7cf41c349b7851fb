"""gloo_settled: a process leaves only once gloo's worker threads sleep (torch 2.13 keeps a gloo
group's threads past destroy_process_group once torch._dynamo is imported; one still freeing
its last collective when Python finalizes aborts the process: launch.gloo_settled)."""

from __future__ import annotations

import threading
from pathlib import Path

from pipesim.processes.launch import GLOO_WORKER, gloo_settled


def _thread(tasks: Path, tid: int, name: str, state: str) -> Path:
    (tasks / str(tid)).mkdir(parents=True, exist_ok=True)
    (tasks / str(tid) / "comm").write_text(name + "\n")
    stat = tasks / str(tid) / "stat"
    stat.write_text(f"{tid} ({name}) {state} 1 2 3 4\n")
    return stat


def test_a_running_gloo_worker_keeps_the_process_waiting(tmp_path: Path) -> None:
    _thread(tmp_path, 10, "python", "R")  # the main thread runs: not a gloo worker
    _thread(tmp_path, 11, GLOO_WORKER, "S")
    _thread(tmp_path, 12, GLOO_WORKER, "R")  # on its way to free its last work
    assert gloo_settled(timeout=0.05, task_dir=str(tmp_path)) is False
    _thread(tmp_path, 12, GLOO_WORKER, "S")
    assert gloo_settled(timeout=30, task_dir=str(tmp_path)) is True


def test_a_worker_that_goes_to_sleep_lets_the_process_go(tmp_path: Path) -> None:
    stat = _thread(tmp_path, 11, GLOO_WORKER, "R")
    flip = threading.Timer(0.02, lambda: stat.write_text(f"11 ({GLOO_WORKER}) S 1 2\n"))
    flip.start()
    try:
        assert gloo_settled(timeout=60, task_dir=str(tmp_path)) is True
    finally:
        flip.cancel()


def test_no_workers_or_no_proc_is_settled(tmp_path: Path) -> None:
    assert gloo_settled(timeout=0.0, task_dir=str(tmp_path)) is True  # no threads listed
    _thread(tmp_path, 10, "python", "R")
    assert gloo_settled(timeout=0.0, task_dir=str(tmp_path)) is True
    assert gloo_settled(timeout=0.0, task_dir=str(tmp_path / "absent")) is True
    # a thread whose name ends "(...)" parses from the last parenthesis on
    _thread(tmp_path, 13, GLOO_WORKER, "S")
    (tmp_path / "13" / "stat").write_text("13 (odd) name)) S 1\n")
    assert gloo_settled(timeout=30, task_dir=str(tmp_path)) is True


def test_the_real_process_reads_its_own_threads() -> None:
    assert gloo_settled(timeout=5) is True  # no gloo group in this test process
