"""The torch half of prediction: profile for ``run --predict``, calibrate the engine's own
time.

    predict_run(cfg, costs_path, engine)   the prediction of ``pipesim run --predict``: from a
                                           cost file, or profiling now (``pipesim.predict``)
    calibrate_engine()                     ``pipesim profile --engine``: the engine's own time
                                           per action and between steps (``pipesim.calibration``)
    calibrate_shared()                     its part for ranks that share cores: their
                                           actions' extra CPU time

The pure half (predict, replay, compare, fit_engine) is ``pipesim.predict``.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Sequence

from pipesim.calibration import EngineCosts, machine_id, torch_version, with_engine
from pipesim.layercosts import load_layer_costs
from pipesim.predict import engine_gaps, predict, run_cpu
from pipesim.profiling.comm import measure_comm
from pipesim.profiling.profiler import profile_model
from pipesim.ranks import available_cores
from pipesim.runtime.train import RunConfig
from pipesim.schedules import get_schedule
from pipesim.timeline import Timeline

__all__ = ["CALIBRATION_SCHEDULES", "PROBE_EVERY", "calibrate_engine", "calibrate_shared",
           "predict_run", "shared_cores"]

CALIBRATION_SCHEDULES = ("gpipe", "1f1b", "zb-h1")
PROFILE_SECONDS = 1.0  # --predict's own profile: at least this long in each process
PROBE_EVERY = 4  # --predict's run: the ranks time the reference kernel every this many steps


def predict_run(cfg: RunConfig, costs_path: str | None = None,
                engine: EngineCosts | None = None) -> Timeline:
    """``pipesim run --predict [COSTS.json]``: predict from a cost file, or profile now.

    Without a file, ``cfg``'s model is profiled at its microbatch size, in as many processes
    at once as the run puts ranks on this machine (at most one per CPU: the cores are as busy
    as in the run), the mean of at least 20 passes and ``PROFILE_SECONDS`` of them (a machine
    whose speed changes from one half second to the next needs the profile to last about as
    long as the run it predicts; a step pays its actions' mean), ``measure_comm``
    measures messages between 2 ranks; the reference kernel is timed in the profile's processes
    after every pass (``runtime.reference``), as the run's ranks time it between steps. The
    engine's own time comes from the file or else ``engine`` (``pipesim.calibration``). Ranks
    that outnumber this machine's cores share them in the simulation (``shared_cores``).
    ``meta["reference_time"]`` is the profile's reference-kernel time (0: unknown). Raises
    ValueError (CostFileError) for an unusable file.
    """
    if costs_path:
        layer_costs = load_layer_costs(costs_path)
        comm: Sequence[float] = ()
    else:
        processes = min(cfg.grid.world, available_cores())
        layer_costs = profile_model(cfg, repeats=20, warmup=2, processes=processes,
                                    statistic="mean", seconds=PROFILE_SECONDS)
        comm = ()
        if cfg.schedule.ranks > 1 and len(layer_costs) > 1:
            comm = measure_comm(int(max(c.activation_bytes for c in layer_costs.layers[:-1])))
    layer_costs = with_engine(layer_costs, engine)
    predicted = predict(cfg, layer_costs, *comm, cores=shared_cores(cfg))
    return dataclasses.replace(predicted, meta={**predicted.meta,
                                                "reference_time": layer_costs.reference_time})


def shared_cores(cfg: RunConfig) -> int | None:
    """The CPU cores this machine gives a gloo run whose ranks outnumber them (forked here,
    not under torchrun, where a node's share is unknown); None when every rank has one."""
    from pipesim.processes.launch import under_torchrun
    if cfg.backend != "gloo" or under_torchrun():
        return None
    cores = available_cores()
    return cores if cfg.grid.world > cores else None


def _calibration_config(name: str, microbatches: int, steps: int, working: bool = False,
                        ranks: int = 2) -> RunConfig:
    """An MLP on ``ranks`` ranks (2) that computes next to nothing (what is left between
    steps is the engine's own time) or, ``working``, one whose every action works through
    about a megabyte of weights and activations, as a real model's do: the engine's time
    before an action grows with what the action left in the caches (here 7-13 us after
    near-empty actions, 21-49 us after these, 20-90 us in the benchmarks' MLP and GPT runs),
    and so does the meeting."""
    batch, hidden, layers = (64, 512, 4) if working else (2, 8, 2)
    return RunConfig(schedule=get_schedule(name, ranks, microbatches), batch_size=batch,
                     hidden_size=hidden, layers=layers, steps=steps, optimizer="sgd")


def calibrate_engine(schedules: Sequence[str] = CALIBRATION_SCHEDULES, microbatches: int = 4,
                     steps: int = 30) -> EngineCosts:
    """Run each schedule on 2 ranks twice and read the engine's own time off the runs
    (``predict.engine_gaps``): between steps from a model that computes next to nothing (a
    real model's update and data are profiled apart), per action and at the ranks' meeting
    from a model that works as real ones do (``_calibration_config``); the figures kept are
    the medians over ``schedules`` (each schedule's are in ``fits``)."""
    from pipesim.processes.launch import launch
    from pipesim.runtime.train import TrainJob

    def gaps(cfg: RunConfig) -> tuple[float, float, float]:
        result = launch(TrainJob(cfg), cfg.schedule.ranks)
        return engine_gaps(cfg.schedule, [Timeline.from_dict(t) for t in result.timelines])

    fits: dict[str, list[float]] = {}
    shared = calibrate_shared()
    for name in schedules:
        _, step, _ = gaps(_calibration_config(name, microbatches, steps))
        action, _, sync = gaps(_calibration_config(name, microbatches, steps, working=True))
        fits[name] = [action, step, sync]
    action, step, sync = (statistics.median(f[k] for f in fits.values()) for k in range(3))
    return EngineCosts(action, step, sync=sync, shared_compute=shared or 0.0,
                       machine=machine_id(), torch=torch_version(),
                       measured=time.strftime("%Y-%m-%d %H:%M"),
                       notes=f"2 ranks, m={microbatches}, sgd, {steps} steps per schedule and "
                             f"model: between steps from an MLP of hidden 8 x 2 layers, batch "
                             f"2; per action and the meeting from hidden 512 x 4 layers, batch "
                             f"64; shared cores: " + (
                                 f"1F1B of that model, m={SHARED_M}, on 2 and on 4 ranks held "
                                 f"to the same 2 cores, in turns" if shared else
                                 "not measured (fewer than 2 cores, or this process may "
                                 "not pin itself to 2)")
                             + f"; load {os.getloadavg()[0]:.1f}",
                       fits=fits)


SHARED_M = 8  # microbatches of the shared-core calibration's 1F1B


def calibrate_shared(steps: int = 40, rounds: int = 4) -> float | None:
    """How much more CPU time ranks that share cores spend in their actions: the working
    calibration MLP (``_calibration_config``) under 1F1B on 2 ranks, then on 4, ``rounds``
    times in turn, every run held to the same 2 cores of this process's (its affinity, which
    the forked ranks inherit); the 4 ranks' actions' CPU time per step over the 2 ranks'
    (``predict.run_cpu``, means over the rounds): the same model's work, 2 ranks per core
    against a core each. In turns because this machine's speed moves by tens of percent from
    one second to the next (one pair of runs read 0.89-1.28; three in turn 1.14-1.28). None
    where this process has fewer than 2 cores or may not pin itself to 2 (nothing to compare
    with), or the runs recorded no CPU time."""
    from pipesim.processes.launch import launch
    from pipesim.runtime.train import TrainJob

    if not hasattr(os, "sched_setaffinity") or available_cores() < 2:
        return None
    own = os.sched_getaffinity(0)
    cpu: dict[int, list[float]] = {2: [], 4: []}
    try:
        os.sched_setaffinity(0, sorted(own)[:2])
    except OSError:  # a sandbox that will not pin: nothing to compare on the same cores
        return None
    try:
        for _ in range(rounds):
            for ranks in (2, 4):
                cfg = _calibration_config("1f1b", SHARED_M, steps, working=True, ranks=ranks)
                result = launch(TrainJob(cfg, cpu_time=True), ranks)
                seconds = run_cpu([Timeline.from_dict(t) for t in result.timelines])
                if seconds:
                    cpu[ranks].append(seconds)
    finally:
        os.sched_setaffinity(0, own)
    if not cpu[2] or not cpu[4]:
        return None
    return statistics.fmean(cpu[4]) / statistics.fmean(cpu[2])
