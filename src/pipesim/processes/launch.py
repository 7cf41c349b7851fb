"""Start one process per rank (or join torchrun's), fail fast, leave nothing running.

Single machine: the parent has already imported torch and forks the ranks (fast: no re-import).
Rank 0 opens the rendezvous store on 127.0.0.1 with a port the OS picks, so runs never collide.
The parent watches every rank: the first that fails (raises, exits, is killed) ends the job
with its name and error; Ctrl-C ends every rank. Under torchrun (RANK/WORLD_SIZE/MASTER_ADDR
set) the current process is one rank and the env:// rendezvous is used.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import multiprocessing as mp
import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import Connection, wait
from typing import Any

import torch
import torch.distributed as dist

from pipesim.ir import Action
from pipesim.processes.malloc import keep_freed_memory
from pipesim.processes.watchdog import (
    Monitor,
    StallError,
    private_rows,
    shared_rows,
    stall_report,
    stalled,
)
from pipesim.runtime.engine import Observer

# (rank, world_size) -> result; each rank's result is pickled back to the launcher
Worker = Callable[[int, int], Any]

_RENDEZVOUS_TIMEOUT = 60.0


class RankFailedError(RuntimeError):
    """A rank failed; ``rank`` names it and the message carries its error."""

    def __init__(self, rank: int, message: str, kind: str = "") -> None:
        super().__init__(f"rank {rank} failed: {message}")
        self.rank = rank
        self.kind = kind  # the exception's class name, when the rank reported one
        self.error = message.removeprefix(f"{kind}: ") if kind else message  # its own text


@dataclass(frozen=True)
class LaunchOptions:
    backend: str = "gloo"
    threads: int = 1  # torch threads per rank
    timeout: float = 600.0  # collective timeout (seconds)
    stall_timeout: float = 60.0  # no action completed this long on a busy rank: stop the job
    keep_freed_memory: bool = True  # False: glibc's allocator defaults (benchmarks compare both)


class _Watched(Observer):
    """Writes a rank's progress into the launcher's shared row (the stall watchdog reads it)."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def started(self, rank: int, action: Action) -> None:
        self.monitor.running(action)

    def waiting(self, rank: int, action: Action, producer: Action, src: int) -> None:
        self.monitor.waiting(action, producer, src)

    def arrived(self, rank: int, action: Action) -> None:
        self.monitor.running(action)

    def done(self, rank: int, action: Action, detail: dict[str, Any]) -> None:
        self.monitor.done(action)

    def finished(self, rank: int) -> None:
        self.monitor.finished()


_CURRENT: list[Observer] = []  # this process's watchdog writer, set where the rank starts


def current_monitor() -> Observer | None:
    """The stall watchdog's writer of this rank (set by launch and init), if any."""
    return _CURRENT[0] if _CURRENT else None


def _set_monitor(monitor: Monitor) -> None:
    _CURRENT[:] = [_Watched(monitor)]


def cuda_devices() -> int:
    """How many CUDA devices this process sees (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def set_threads(threads: int = 1) -> None:
    """torch's thread count in this process (set it before forking ranks from it)."""
    torch.set_num_threads(threads)


def under_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


class _Interrupts:
    """Ctrl-C as the C-level handler sees it: ``signal.set_wakeup_fd`` writes each handled
    signal's number into a pipe, which ``_watch`` waits on beside the ranks. A SIGINT then stops
    the job even if Python's KeyboardInterrupt never reaches the watch loop (seen rarely on a
    loaded machine: the signal caught, the launcher still waiting; the ranks ran on)."""

    def __init__(self) -> None:
        self.read_end: int | None = None
        self._write_end: int | None = None
        self._previous = -1

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            self.read_end, self._write_end = os.pipe()
            os.set_blocking(self.read_end, False)
            os.set_blocking(self._write_end, False)
            self._previous = signal.set_wakeup_fd(self._write_end, warn_on_full_buffer=False)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.read_end is not None and self._write_end is not None:
            signal.set_wakeup_fd(self._previous)
            os.close(self.read_end)
            os.close(self._write_end)

    def check(self) -> None:
        """Raise KeyboardInterrupt if a SIGINT arrived since the last check."""
        if self.read_end is None:
            return
        try:
            seen = os.read(self.read_end, 512)
        except BlockingIOError:
            return
        if signal.SIGINT in seen:
            raise KeyboardInterrupt


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this rank if the launcher dies (no orphans). A launcher that died
    between the fork and this call would not be noticed: then this rank leaves at once."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent:
        os._exit(1)


def _init_group(rank: int, world: int, port: Any, ready: Any, opts: LaunchOptions) -> None:
    timeout = timedelta(seconds=opts.timeout)
    if rank == 0:
        # our own listening socket on loopback: TCPStore alone would listen on every interface
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(world * 2)
        port.value = listener.getsockname()[1]
        store = dist.TCPStore(  # type: ignore[attr-defined]
            "127.0.0.1", port.value, world, is_master=True, timeout=timeout,
            wait_for_workers=False, master_listen_fd=listener.fileno(), use_libuv=True)
        ready.set()
    else:
        if not ready.wait(_RENDEZVOUS_TIMEOUT):
            raise RuntimeError("rank 0 did not open the rendezvous in time")
        store = dist.TCPStore(  # type: ignore[attr-defined]
            "127.0.0.1", port.value, world, is_master=False, timeout=timeout)
    dist.init_process_group(opts.backend, store=store, rank=rank, world_size=world,
                            timeout=timeout)


def _child(rank: int, world: int, worker: Worker, opts: LaunchOptions, port: Any, ready: Any,
           conn: Connection, rows: Any, parent: int) -> None:
    signal.set_wakeup_fd(-1)  # the launcher's Ctrl-C pipe is not this rank's
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the launcher's to handle
    torch.set_num_threads(opts.threads)
    if opts.keep_freed_memory:
        keep_freed_memory()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo listens on loopback only
    code = 0
    try:
        _init_group(rank, world, port, ready, opts)
        _set_monitor(Monitor(rows, rank))
        result = worker(rank, world)
        # plain pickle: torch's multiprocessing pickler would share storage through file
        # descriptors that vanish when this process exits
        conn.send_bytes(pickle.dumps(("ok", result)))
    except BaseException as err:  # report every failure, then exit non-zero
        code = 130 if isinstance(err, KeyboardInterrupt) else 1
        summary = f"{type(err).__name__}: {err}".strip()
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send_bytes(pickle.dumps(("error", summary, traceback.format_exc(),
                                          type(err).__name__)))
    finally:
        if dist.is_initialized() and code == 0:
            dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def launch(worker: Worker, world: int, opts: LaunchOptions | None = None) -> Any:
    """Run ``worker(rank, world)`` on ``world`` forked ranks; returns rank 0's result."""
    return launch_all(worker, world, opts)[0]


def launch_all(worker: Worker, world: int, opts: LaunchOptions | None = None) -> list[Any]:
    """Run ``worker(rank, world)`` on ``world`` forked ranks; every rank's result, in order.

    Raises RankFailedError naming the first rank that fails; every rank is gone on return.
    """
    opts = opts or LaunchOptions()
    prepare = getattr(worker, "prepare", None)  # optional parent-side warm-up before forking
    if callable(prepare):
        prepare()
    ctx: Any = mp.get_context("fork" if opts.backend == "gloo" else "spawn")
    sys.stdout.flush()
    with _Interrupts() as interrupts:
        return _start_and_watch(worker, world, opts, ctx, interrupts)


def _start_and_watch(worker: Worker, world: int, opts: LaunchOptions, ctx: Any,
                     interrupts: _Interrupts) -> list[Any]:
    port, ready = ctx.Value("i", 0), ctx.Event()
    rows = shared_rows(ctx, world)
    procs: list[Any] = []
    conns: list[Connection] = []
    try:  # a Ctrl-C even while forking stops every rank started so far
        for rank in range(world):
            recv_end, send_end = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_child, name=f"pipesim-rank{rank}", daemon=True,
                            args=(rank, world, worker, opts, port, ready, send_end, rows,
                                  os.getpid()))
            procs.append(p)
            p.start()
            send_end.close()
            conns.append(recv_end)
        return _watch(procs, conns, rows, opts.stall_timeout, interrupts)
    finally:
        _stop(procs)


def _watch(procs: list[Any], conns: list[Connection], rows: Any, stall_timeout: float,
           interrupts: _Interrupts) -> list[Any]:
    results: dict[int, tuple[Any, ...]] = {}
    alive = set(range(len(procs)))
    poll = max(0.05, min(1.0, stall_timeout / 4))
    failures: list[tuple[int, str, str, bool]] = []  # rank, message, kind, process died
    failed_at = 0.0
    while alive:
        if failures and time.monotonic() - failed_at > _ATTRIBUTION_GRACE:
            break
        sentinels = {procs[r].sentinel: r for r in alive}
        readable = {conns[r]: r for r in alive if r not in results}
        woken = [interrupts.read_end] if interrupts.read_end is not None else []
        ready_list = wait([*sentinels, *readable, *woken], timeout=poll)
        interrupts.check()
        ready_list = [x for x in ready_list if x not in woken]
        if not ready_list and not failures and stalled(rows, alive - set(results),
                                                       stall_timeout):
            raise StallError(stall_report(rows, len(procs), stall_timeout))
        for ready in ready_list:
            if ready in readable:
                r = readable[ready]
                try:
                    results[r] = pickle.loads(ready.recv_bytes())  # type: ignore[union-attr,unused-ignore]
                except EOFError:
                    results[r] = ("gone",)
                if results[r][0] == "error":
                    failures.append((r, results[r][1], results[r][3], False))
            else:
                r = sentinels[ready]  # type: ignore[index,unused-ignore]
                procs[r].join()
                alive.discard(r)
                if procs[r].exitcode != 0 and not any(f[0] == r for f in failures):
                    failures.append((r, _exit_reason(r, procs[r].exitcode, conns[r]), "", True))
        if failures and not failed_at:
            failed_at = time.monotonic()
    if failures:
        rank, message, kind, _ = _root_cause(failures)
        raise RankFailedError(rank, message, kind)
    return [results[r][1] if results.get(r, ("gone",))[0] == "ok" else None
            for r in range(len(procs))]


_ATTRIBUTION_GRACE = 1.5  # seconds to collect other failures before naming the first cause
_PEER_LOST = ("Connection reset by peer", "Connection closed by peer", "Broken pipe",
              "Connection refused")


def _root_cause(failures: list[tuple[int, str, str, bool]]) -> tuple[int, str, str, bool]:
    """The failure that caused the others: a rank that died or raised, not one that lost a peer."""
    def rank_of(f: tuple[int, str, str, bool]) -> int:
        lost_peer = any(words in f[1] for words in _PEER_LOST)
        return 0 if f[3] else (2 if lost_peer else 1)
    cause = min(failures, key=rank_of)  # stable: the earliest of the best kind
    if any(words in cause[1] for words in _PEER_LOST):
        cause = (cause[0], "lost the connection to another rank (" +
                 next(w for w in _PEER_LOST if w in cause[1]) + ")", cause[2], cause[3])
    return cause


def _exit_reason(rank: int, code: int | None, conn: Connection) -> str:
    if conn.poll():
        try:
            msg = pickle.loads(conn.recv_bytes())
            if msg[0] == "error":
                return str(msg[1])
        except (EOFError, OSError):
            pass
    if code is not None and code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _stop(procs: list[Any], grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL whatever is left; reap everything (ranks never started are skipped:
    one forked without its handle yet dies with the launcher, ``_die_with_parent``)."""
    procs = [p for p in procs if p.pid is not None]
    for p in procs:
        if p.is_alive():
            p.kill() if grace <= 0 else p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def init_torchrun(opts: LaunchOptions | None = None) -> tuple[int, int]:
    """Join torchrun's job as this process's rank (env:// rendezvous); (rank, world size).

    One thread per rank, freed memory kept, and a watchdog thread that ends this rank when it
    stalls (torchrun then stops the others). Does nothing if already initialised.
    """
    opts = opts or LaunchOptions()
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if not under_torchrun():
        raise RuntimeError("pipesim.init() joins a torchrun job (RANK, WORLD_SIZE, MASTER_ADDR "
                           "and MASTER_PORT are not set); to start ranks on this machine use "
                           "pipesim.launch(fn, world_size)")
    torch.set_num_threads(opts.threads)
    if opts.keep_freed_memory:
        keep_freed_memory()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group(opts.backend, init_method="env://", rank=rank, world_size=world,
                            timeout=timedelta(seconds=opts.timeout))
    atexit.register(_leave)
    rows = private_rows(rank + 1)
    _set_monitor(Monitor(rows, rank))
    threading.Thread(target=_own_watchdog, args=(rows, rank, opts.stall_timeout),
                     daemon=True).start()
    return rank, world


def _leave() -> None:
    """At exit, while the interpreter is whole: tear the process groups down, as torch asks,
    then wait until gloo's worker threads are idle (``gloo_settled``)."""
    if dist.is_initialized():
        dist.destroy_process_group()
    gloo_settled()


GLOO_WORKER = "pt_gloo_runloop"  # what torch names a gloo process group's worker threads
_settle_registered = False


def settle_gloo_at_exit() -> None:
    """Run ``gloo_settled`` at this process's exit (once, however often called): a Pipeline
    built in a script that set up torch.distributed itself gets the same exit as one that
    joined with ``pipesim.init()``."""
    global _settle_registered
    if not _settle_registered:
        atexit.register(gloo_settled)
        _settle_registered = True


def gloo_settled(timeout: float = 2.0, task_dir: str = "/proc/self/task") -> bool:
    """Wait (at most ``timeout`` seconds, the GIL released) until every gloo worker thread of
    this process sleeps, seen so twice in a row; True once they do (or there are none).

    Why: torch 2.13 keeps a gloo group alive after ``destroy_process_group`` once
    ``torch._dynamo`` is imported (an optimizer's first step imports it), so its worker
    threads outlive the script. A worker frees each collective's work object after the
    caller has its result; if that is the last reference, freeing it drops the collective's
    tensors' Python objects, which needs the GIL. A worker still on its way there (runnable
    but not running: a loaded machine) when the interpreter finalizes is ended by CPython in
    a C++ destructor: std::terminate, SIGABRT, "terminate called without an active
    exception", a finished rank lost. A sleeping worker has freed its work: nothing is left
    to race. Without /proc (not Linux): True at once.
    """
    def states() -> list[str]:
        try:
            tasks = os.listdir(task_dir)
        except OSError:
            return []
        out = []
        for tid in tasks:
            try:
                with open(os.path.join(task_dir, tid, "comm"), encoding="ascii") as fh:
                    if fh.read().strip() != GLOO_WORKER:
                        continue
                with open(os.path.join(task_dir, tid, "stat"), encoding="ascii") as fh:
                    out.append(fh.read().rsplit(")", 1)[1].split()[0])  # after "(comm)"
            except (OSError, IndexError):
                continue  # the thread ended meanwhile
        return out

    deadline, quiet = time.monotonic() + timeout, 0
    while True:
        now = states()
        if not now:  # no gloo workers (or no /proc)
            return True
        quiet = quiet + 1 if all(state == "S" for state in now) else 0
        if quiet >= 2:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)


def run_torchrun(worker: Worker, opts: LaunchOptions | None = None) -> Any:
    """This process is one rank of a torchrun job; returns its worker result.

    A rank that succeeded meets the others before tearing its process group down, so none
    closes its connections while another still talks to it.
    """
    rank, world = init_torchrun(opts)
    try:
        result = worker(rank, world)
        dist.barrier()
        return result
    finally:
        dist.destroy_process_group()  # gloo's workers are waited for at exit (``_leave``)


def _own_watchdog(rows: list[float], rank: int, timeout: float) -> None:
    """Under torchrun each rank watches itself; torchrun then stops the others."""
    while True:
        time.sleep(max(0.05, min(1.0, timeout / 4)))
        if stalled(rows, {rank}, timeout):
            from pipesim.processes.watchdog import describe
            sys.stderr.write(f"pipesim: error: stalled: no action completed for {timeout:g} s "
                             f"(--stall-timeout): {describe(rows, rank, time.monotonic())}\n")
            sys.stderr.flush()
            os._exit(3)


__all__ = ["LaunchOptions", "RankFailedError", "Worker", "cuda_devices", "current_monitor",
           "gloo_settled", "init_torchrun", "launch", "launch_all", "run_torchrun", "set_threads",
           "settle_gloo_at_exit", "under_torchrun"]
