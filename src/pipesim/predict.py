"""Predict a run's step from profiled costs, replay it from its own measured actions, compare.

    predict(cfg, layer_costs)        simulate cfg's schedule with the layers summed into its
                                     stages (cfg's balance, scaled to cfg.batch_size), step
                                     after step until the step repeats
    replay(schedule, predicted, measured)
                                     the same simulation with the run's own times: step by
                                     step, each action its measured time, where the run
                                     recorded its steps' meetings (else each action its
                                     mean), messages as the run saw them: what is left of
                                     the error is the model's
    prediction_report(predicted, measured, replayed, drift)
                                     predicted (and replayed) vs measured step time, per step
                                     and per rank; with the machine's speed drift
    engine_gaps(schedule, measured)  the engine's own time per action, between steps and at
                                     the ranks' meeting, read off a run (``pipesim profile
                                     --engine``)

A step's time is what a training loop pays per step: from one step's end to the next one's (the
last rank's), so it includes each rank's optimizer update between steps, during which the ranks
that wait on it wait; and the ranks meet between steps (``Pipeline.step`` checks each step's
batch on every rank with one collective), so the next step begins on every rank once the last
one is ready (``engine_sync`` later). The prediction is the simulator's
(``steady.steady_step``): every action takes its profiled time and the engine's own
``engine_action_overhead`` before it, a message costs ``comm_latency + bytes / comm_bandwidth``
and its sender ``comm_send_overhead``, and rank r spends its stages' profiled ``optimizer``
time plus ``engine_step_overhead`` (and ``data_time`` on the ranks that make the batch) between
steps. Ranks that outnumber the CPU cores share them: ``cores`` (``pipesim.shared``, each
computing rank at min(1, cores / computing ranks) of its speed), each action taking the
calibration's ``shared_compute`` x its profiled time (a rank resuming on a core another rank
used finds the caches cold); see benchmarks/RESULTS_predict.md. ``replay`` never shares:
the run's measured times include it.

Pure: no torch, no views (``cfg`` is read by attribute), so everything here works on saved
timelines anywhere. Profiling and the calibration runs are in ``pipesim.runtime.predict``,
the reference kernel in ``pipesim.runtime.reference``.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from pipesim.costs import CostModel
from pipesim.ir import Action, Op, Schedule, deps
from pipesim.layercosts import LayerCosts
from pipesim.simulate import simulate
from pipesim.stagecosts import stage_costs, stage_optimizer
from pipesim.steady import steady_step
from pipesim.timeline import Event, Timeline

__all__ = ["action_drift", "action_means", "engine_gaps", "median_step",
           "predict", "predicted_step", "prediction_json", "prediction_lines", "prediction_report",
           "replay", "run_cpu", "run_messages", "run_reference", "scaled_compute", "speed_drift",
           "step_span", "step_times", "used_steps"]


def predict(cfg: Any, layer_costs: LayerCosts, comm_latency: float | None = None,
            comm_bandwidth: float | None = None, send_overhead: float | None = None, *,
            cores: int | None = None) -> Timeline:
    """The simulated Timeline (seconds) of one steady step of ``cfg`` (a RunConfig).

    Its ``meta["step_seconds"]`` is the step time (``steady_step``). Between steps each rank
    spends ``meta["between_seconds"]``: its optimizer time (``meta["optimizer_seconds"]``;
    none in a forward-only schedule) plus the engine's ``engine_step_overhead``, plus
    ``data_time`` on the ranks holding the first or last stage (they make the batch). Then the
    ranks meet (the engine checks every step's batch on every rank, one collective): the next
    step begins on every rank ``engine_sync`` after the last one is through its between-steps
    time (``steady_step``'s ``barrier``).
    ``meta["costs"]`` is the CostModel simulated (``to_dict``), which ``replay`` reuses.
    ``comm_latency``/``comm_bandwidth``/``send_overhead`` override the cost file's messages.
    ``cores``: the ranks share that many CPU cores (``steady_step``'s; None: a core each),
    recorded as ``meta["cores"]``. Not part of ``meta["costs"]``, so ``replay`` ignores it.
    With fewer cores than ranks and a calibration of shared cores in ``layer_costs``
    (``shared_compute``), every action, optimizer update and batch takes ``shared_compute`` x
    its profiled time (profiled with a core per process); ``meta["shared_compute"]`` is the
    factor applied (1: the ranks do not share cores; 0: they do, but no calibration says by
    how much, so none).
    """
    balance = cfg.stage_balance()
    if len(layer_costs) != sum(balance):
        raise ValueError(f"the cost file has {len(layer_costs)} layers; the run's model has "
                         f"{sum(balance)} (profile the same model and --layers)")
    costs = stage_costs(layer_costs, balance, cfg.batch_size)
    overrides: dict[str, Any] = {"comm_latency": comm_latency, "comm_bandwidth": comm_bandwidth,
                 "send_overhead": send_overhead}
    costs = dataclasses.replace(costs, **{k: v for k, v in overrides.items() if v is not None})
    sched = cfg.schedule
    # ranks that share cores: every computation takes the calibration's factor (0: unknown)
    factor = layer_costs.shared_compute if cores is not None and cores < sched.ranks else 1.0
    compute = factor or 1.0
    costs = scaled_compute(costs, compute)
    optimizer = [0.0] * sched.ranks
    if not sched.forward_only:
        for stage, seconds in enumerate(stage_optimizer(layer_costs, balance)):
            optimizer[sched.stage_to_rank[stage]] += seconds * compute
    between = [o + layer_costs.engine_step_overhead for o in optimizer]
    for rank in {sched.stage_to_rank[0], sched.stage_to_rank[-1]}:  # they make the batch,
        between[rank] += layer_costs.data_time * compute  # once on a rank holding both ends
    steady = steady_step(sched, costs, between, cores=cores, barrier=layer_costs.engine_sync)
    return dataclasses.replace(steady.timeline, meta={
        **steady.timeline.meta, "predicted": True, "step_seconds": steady.step,
        "optimizer_seconds": optimizer, "between_seconds": between, "costs": costs.to_dict(),
        "cores": cores, "shared_compute": factor})


def scaled_compute(costs: CostModel, factor: float) -> CostModel:
    """``costs`` with every action's time (F, I, W, B) times ``factor``, messages unchanged."""
    tables: dict[str, Any] = {name: tuple(x * factor for x in getattr(costs, name))
                              for name in ("forward", "backward_input", "backward_weight",
                                           "backward")}
    return dataclasses.replace(costs, **tables)


# ----------------------------------------------------------------------------- replay


def action_means(measured: Sequence[Timeline], steps: Sequence[int] | None = None
                 ) -> dict[tuple[int, Op], float]:
    """(stage, op) -> the mean duration of its actions over ``steps`` (default: used_steps).

    The mean, not the median: a step's time is a sum over many actions, so the median step
    pays about each action's mean; on a loaded machine, whose action times have a long tail,
    medians made replays 10-25 points too fast (benchmarks/RESULTS_predict.md). A measured
    action runs from its inputs in hand to its output made (the engine's record), so a send's
    cost to the sender is not in it: the simulator adds ``send_overhead``.
    """
    durations: dict[tuple[int, Op], list[float]] = {}
    for s in used_steps(measured) if steps is None else steps:
        for e in measured[s].events:
            durations.setdefault((e.action.stage, e.action.op), []).append(e.duration)
    return {key: statistics.fmean(values) for key, values in durations.items()}


def replay_costs(costs: CostModel, times: dict[tuple[int, Op], float]) -> CostModel:
    """``costs`` with each (stage, op) in ``times`` taking that time (messages unchanged)."""
    fields = {Op.F: "forward", Op.I: "backward_input", Op.W: "backward_weight",
              Op.B: "backward"}
    tables = {op: list(getattr(costs, name)) for op, name in fields.items()}
    for (stage, op), seconds in times.items():
        tables[op][stage] = seconds
    new: dict[str, Any] = {name: tuple(tables[op]) for op, name in fields.items()}
    return dataclasses.replace(costs, **new)


def run_messages(schedule: Schedule, measured: Sequence[Timeline], action_overhead: float = 0.0
                 ) -> tuple[float | None, float | None]:
    """(hop, send) in seconds as the run saw them; None where it shows nothing to measure.

    send: the sender's own time per message, the mean gap after an action whose output
    went to another rank when the next action waited for no message (it needs none, or its
    messages had all left before the sending action began), less ``action_overhead``. The
    second kind matters where ranks share cores: a sender that wakes a sleeping receiver can
    lose its core to it, and is then slow to start whatever comes next, input in hand or not.
    hop: from the time a producer's output left (its end; an overlapped pair's end) to the
    start of its consumer on another rank that had nothing else to do (its previous action
    ended before that), mean, less ``send``: the simulator's message time (the sender's time
    is in the producer's action).
    """
    receive, sent = _crossing(schedule)
    place = schedule.stage_to_rank
    sends, hops = [], []
    for s in used_steps(measured):
        step = measured[s]
        ended = _left(schedule, step)
        for row in step.by_rank():
            sends += [b.start - a.end - action_overhead for a, b in pairwise(row)
                      if a.action in sent and (b.action not in receive
                                               or _in_hand(schedule, ended, a, b))]
            for i, e in enumerate(row):
                free = row[i - 1].end if i else -math.inf
                hops += [e.start - ended[d] for d in deps(e.action, schedule)
                         if place[d.stage] != e.rank and d in ended and free <= ended[d]]
    send = max(0.0, statistics.fmean(sends)) if sends else None
    hop = max(0.0, statistics.fmean(hops) - (send or 0.0)) if hops else None
    return hop, send


def _in_hand(schedule: Schedule, left: dict[Action, float], a: Event, b: Event) -> bool:
    """Whether every message ``b`` takes from another rank had left (``left``) before ``a``,
    the action before ``b`` on its rank, began."""
    place = schedule.stage_to_rank
    return all(left.get(d, math.inf) <= a.start for d in deps(b.action, schedule)
               if place[d.stage] != b.rank)


def replay(schedule: Schedule, predicted: Timeline, measured: Sequence[Timeline]) -> Timeline:
    """``predicted``'s simulation again with what the run measured: each action its mean
    time, each message the run's own hop and sender's time (``run_messages``), the engine's
    own time before an action the run's mean (``_gaps``), each rank's time between steps
    (optimizer, data, zero_grad) and the ranks' meeting the run's means (``_meeting``; a run
    recorded without when its ranks began and met: each rank's whole gap between steps where
    its step begins without waiting for a message, else ``predict``'s
    ``meta["between_seconds"]``, and no meeting). A run that records its meetings is
    replayed step by step (``_step_by_step``): each step with each action's own measured
    time, its own gaps and meeting, ``meta["step_seconds"]`` the median replayed step and
    ``meta["replayed_steps"]`` each used step's.

    Where the replay misses the run, the model misses it (the schedule's semantics, what the
    simulator leaves out); where the prediction misses and the replay does not, the machine
    ran the run slower (or faster) than when it was profiled, or the profile missed a cost.
    """
    base = CostModel.from_dict(predicted.meta["costs"])
    inner, gaps = _gaps(schedule, measured)
    if inner:
        base = dataclasses.replace(base, action_overhead=max(0.0, statistics.fmean(inner)))
    hop, send = run_messages(schedule, measured, base.action_overhead)
    if hop is not None:
        base = dataclasses.replace(base, comm_latency=hop, comm_bandwidth=math.inf)
    if send is not None:
        base = dataclasses.replace(base, send_overhead=send)
    between = list(predicted.meta.get("between_seconds", ())) or [0.0] * schedule.ranks
    meeting = _meeting(schedule, measured, base.action_overhead)
    barrier = None
    if meeting is not None:  # the run says when each rank began its step and when they met
        before, barrier = meeting
        between = [max(0.0, statistics.fmean(x)) if x else b for x, b in zip(before, between,
                                                                             strict=True)]
    else:
        for rank, seen in gaps.items():  # a rank whose step begins by waiting keeps its own
            between[rank] = max(0.0, statistics.fmean(seen) - base.action_overhead)
    if barrier is not None:
        stepwise = _step_by_step(schedule, base, measured, barrier)
        if stepwise is not None:
            return stepwise
    steady = steady_step(schedule, replay_costs(base, action_means(measured)), between,
                         barrier=barrier)
    return dataclasses.replace(steady.timeline, meta={
        **steady.timeline.meta, "replayed": True, "step_seconds": steady.step,
        "between_seconds": list(between)})


def _step_by_step(schedule: Schedule, base: CostModel, measured: Sequence[Timeline],
                  meeting: float) -> Timeline | None:
    """The replay of a run whose ranks met between steps, one step at a time: each step's
    pipeline simulated with each of its actions' own measured time (``simulate``'s
    ``durations``), then each rank's own time from its last action to its next beginning as
    that step saw it (``_boundary``), and that step's meeting (``meeting``, the run's mean,
    where no rank's first action was free to show it). Per action, not per (stage, op): on
    shared cores an action's time varies with what else runs, and the waits a slow action
    causes downstream are the run's, not the model's (means made 4-rank replays 5-11% fast).

    The replayed step s is what the run times: from step s-1's end (its last rank's) to step
    s's, so the latest of (rank r's simulated end of step s-1 + its gap), less step s-1's
    end, + the meeting + step s simulated. Its median over the steps is held against the
    run's median step. One replay of the whole run's means would let a few slow steps raise
    every action (their mean step is slower than the run's median) and hide which steps
    waited. None with fewer than two steps to replay.
    """
    steps = [s for s in used_steps(measured) if s > 0]
    if len(steps) < 2 or any("begin" not in measured[s].meta for s in [steps[0] - 1, *steps]):
        return None  # (the first step's own replay needs the one before it)
    receive, _ = _crossing(schedule)
    sims: dict[int, Timeline] = {}

    def pipeline(s: int) -> Timeline:
        if s not in sims:  # a measured step holds every action (a merged W: its 0 included)
            own = {e.action: e.duration for e in measured[s].events}
            sims[s] = simulate(schedule, base, durations=own)
        return sims[s]

    replayed: list[tuple[float, int, list[float]]] = []
    for s in steps:
        seen, meet, _ = _boundary(receive, measured[s - 1], measured[s], base.action_overhead)
        gaps = [max(0.0, g) if g is not None else 0.0 for g in seen]
        ends = [row[-1].end if row else 0.0 for row in pipeline(s - 1).by_rank()]
        release = max(e + g for e, g in zip(ends, gaps, strict=True)) - max(ends) + (
            max(0.0, statistics.fmean(meet)) if meet else meeting)
        replayed.append((release + pipeline(s).end, s, gaps))
    _, s, gaps = sorted(replayed)[(len(replayed) - 1) // 2]  # the step to draw
    timeline = pipeline(s)
    return dataclasses.replace(timeline, meta={
        **timeline.meta, "replayed": True, "between_seconds": gaps,
        "step_seconds": statistics.median(r[0] for r in replayed),
        "replayed_steps": [r[0] for r in sorted(replayed, key=lambda r: r[1])]})


def action_drift(predicted: Timeline, measured: Sequence[Timeline]) -> float | None:
    """How much longer the run's actions took than profiled: the run's summed mean action
    times (``action_means``, one of each action of a step) over the profile's, - 1. None
    where the ranks shared cores (``meta["cores"]``): a measured action's time then holds its
    waits for a core, which the profile's does not."""
    if "costs" not in predicted.meta or predicted.meta.get("cores") is not None:
        return None
    costs = CostModel.from_dict(predicted.meta["costs"])
    means = action_means(measured)
    counts: dict[tuple[int, Op], int] = {}
    for e in measured[0].events:
        counts[e.action.stage, e.action.op] = counts.get((e.action.stage, e.action.op), 0) + 1
    profiled = sum(n * costs.duration(Action(s, op, 0)) for (s, op), n in counts.items())
    run = sum(n * means[key] for key, n in counts.items() if key in means)
    return run / profiled - 1 if profiled > 0 else None


def speed_drift(profiled: float, now: Sequence[float]) -> float | None:
    """How much slower the machine runs the reference kernel now than when profiled.

    ``now``: its per-call times during the run (``run_reference``: timed on the ranks between
    steps, as the profile's processes time it between passes); their mean over ``profiled``
    - 1, so +0.10 means 10% slower now. None without a profiled time.
    """
    return statistics.fmean(now) / profiled - 1 if profiled > 0 and now else None


# ----------------------------------------------------------------------------- calibration


def _crossing(schedule: Schedule) -> tuple[set[Action], set[Action]]:
    """(actions that wait for a message, actions right after which a message is sent).

    A message leaves when its producer ends, but an overlapped pair's messages both leave
    when the pair ends: the pair's second part counts as sending if either part's output goes
    to another rank, its first part never."""
    place = schedule.stage_to_rank
    receive, send = set(), set()
    for row in schedule.actions:
        for a in row:
            for d in deps(a, schedule):
                if place[d.stage] != place[a.stage]:
                    receive.add(a)
                    send.add(d)
    for first, second in schedule.pairs:
        if first in send:
            send.discard(first)
            send.add(second)
    return receive, send


def _left(schedule: Schedule, step: Timeline) -> dict[Action, float]:
    """When each action's output left its rank in ``step``: its end, or for a part of an
    overlapped pair the pair's end."""
    ended = {e.action: e.end for e in step.events}
    for first, second in schedule.pairs:
        if first in ended and second in ended:
            ended[first] = ended[second]
    return ended


def _gaps(schedule: Schedule, measured: Sequence[Timeline]
          ) -> tuple[list[float], dict[int, list[float]]]:
    """The engine's own gaps in a run: (inside a step, per rank between steps).

    Inside: on a rank, from an action that sends nothing to another rank to a next one that
    waits for no message (no send and no wait in it: the engine's bookkeeping alone).
    Between: from a rank's last action of one step to its first of the next, where that first
    action waits for no message (a step's events are placed on the run's clock by
    ``meta["start"]``). Over ``used_steps``.
    """
    receive, send = _crossing(schedule)
    steps = used_steps(measured)
    inner: list[float] = []
    between: dict[int, list[float]] = {}
    for s in steps:
        for row in measured[s].by_rank():
            inner += [b.start - a.end for a, b in pairwise(row)
                      if a.action not in send and b.action not in receive]
        if s == 0:
            continue
        before, after = measured[s - 1], measured[s]
        shift = after.meta.get("start", 0.0) - before.meta.get("start", 0.0)
        for rank, (old, new) in enumerate(zip(before.by_rank(), after.by_rank(), strict=True)):
            if old and new and new[0].action not in receive:
                between.setdefault(rank, []).append(new[0].start + shift - old[-1].end)
    return inner, between


def engine_gaps(schedule: Schedule, measured: Sequence[Timeline]
                ) -> tuple[float, float, float]:
    """(action overhead, step overhead, sync) in seconds: the engine's own time, off a run.

    Action overhead: the mean gap inside a step with no send and no wait in it (``_gaps``).
    Step overhead and sync: each rank's mean time from its last action to beginning the next
    step, and the meeting's (``_meeting``). A run recorded without when its ranks began and
    met: the mean gap between steps of every rank whose first action waits for no message,
    less the action overhead, and sync 0. Means, as ``replay`` takes them: a step pays every
    gap, the slow ones too. 0 where nothing can be read.
    """
    inner, between = _gaps(schedule, measured)
    action = max(0.0, statistics.fmean(inner)) if inner else 0.0
    meeting = _meeting(schedule, measured, action)
    if meeting is not None:
        before, sync = meeting
        gaps = [g for rank in before for g in rank]
        return action, max(0.0, statistics.fmean(gaps)) if gaps else 0.0, sync
    gaps = [g for rank in between.values() for g in rank]
    step = max(0.0, statistics.fmean(gaps) - action) if gaps else 0.0
    return action, step, 0.0


def _meeting(schedule: Schedule, measured: Sequence[Timeline], action_overhead: float
             ) -> tuple[list[list[float]], float] | None:
    """(per rank: its gaps from its last action to beginning the next step; the meeting) off
    a run whose steps record when each rank began (``meta["begin"]``) and when the ranks'
    collective let it go on (``meta["synced"]``); None if they do not.

    The meeting: from the last rank's beginning to a free rank's first action (one whose first
    action waits for no message), less the engine's ``action_overhead`` before that action:
    the collective, then the step's set-up. Means over ``used_steps``, plus what waiting for
    the last of several varying arrivals costs over the last of their means (the mean over
    steps of the latest beginning less the latest mean beginning): the simulator meets at
    the latest mean, the run at each step's latest.
    """
    steps = [s for s in used_steps(measured) if s > 0]
    if not steps or any("begin" not in measured[s].meta or "begin" not in measured[s - 1].meta
                        for s in steps):
        return None
    receive, _ = _crossing(schedule)
    before: list[list[float]] = [[] for _ in range(schedule.ranks)]
    meet: list[float] = []
    arrivals: list[list[float]] = []  # per step, each rank's beginning on the last step's clock
    for s in steps:
        gaps, met, began = _boundary(receive, measured[s - 1], measured[s], action_overhead)
        arrivals.append(began)
        for rank, gap in enumerate(gaps):
            if gap is not None:
                before[rank].append(gap)
        meet += met
    latest = statistics.fmean(max(a) for a in arrivals) - max(
        statistics.fmean(column) for column in zip(*arrivals, strict=True))
    return before, max(0.0, statistics.fmean(meet) + latest) if meet else 0.0


def _boundary(receive: set[Action], old: Timeline, new: Timeline, action_overhead: float
              ) -> tuple[list[float | None], list[float], list[float]]:
    """Between two measured steps (``new`` records ``meta["begin"]``): per rank its gap from its
    last action of ``old`` to beginning ``new`` (None: no action in ``old``); the meeting as
    each free rank of ``new`` saw it (from the last rank's beginning to its first action, less
    ``action_overhead``; a free rank's first action waits for no message, ``receive``); and
    each rank's beginning on ``old``'s clock."""
    shift = new.meta.get("start", 0.0) - old.meta.get("start", 0.0)
    begin = new.meta["begin"]
    gaps = [begin[r] + shift - was[-1].end if was else None
            for r, was in enumerate(old.by_rank())]
    meet = [now[0].start - max(begin) - action_overhead for now in new.by_rank()
            if now and now[0].action not in receive]
    return gaps, meet, [b + shift for b in begin]


# ----------------------------------------------------------------------------- comparing


def _rank_finish(timeline: Timeline) -> list[float]:
    """Each rank's last end, from the timeline's start (a rank with no events: 0)."""
    t0 = timeline.start
    return [max((e.end for e in row), default=t0) - t0 for row in timeline.by_rank()]


def step_span(timeline: Timeline) -> float:
    """The longest rank's span (its last end - its first start): the pipeline's part of a step.

    Not the makespan: in a run, a rank that finished the previous step early starts the next
    one early and only waits for its first input.
    """
    spans = [row[-1].end - row[0].start for row in timeline.by_rank() if row]
    return max(spans, default=0.0)


def step_times(measured: Sequence[Timeline]) -> list[float]:
    """Each measured step's time: from the previous step's end to this one's (``meta["end"]``,
    seconds on the run's clock); the first step from its own start. A step without that
    record (a timeline from elsewhere) counts its ``step_span``.
    """
    out = []
    for s, step in enumerate(measured):
        before = measured[s - 1].meta.get("end") if s else step.meta.get("start")
        end = step.meta.get("end")
        out.append(end - before if end is not None and before is not None
                   else step_span(step))
    return out


def predicted_step(predicted: Timeline) -> float:
    """The predicted step time (``predict``'s ``meta["step_seconds"]``; else the span)."""
    step: float = predicted.meta.get("step_seconds", step_span(predicted))
    return step


def _rank_busy(timeline: Timeline) -> list[float]:
    return [sum(e.duration for e in row) for row in timeline.by_rank()]


def _error(predicted: float, measured: float) -> float | None:
    """Signed relative error: > 0 when the prediction is slower than what was measured."""
    return (predicted - measured) / measured if measured > 0 else None


def used_steps(measured: Sequence[Timeline]) -> list[int]:
    """Steps that count: all of them, but the warm-up, and the steps before which the ranks
    timed the reference kernel (``meta["probe"]``). The warm-up is step 0 from 3 steps on and
    step 1 too from 5 on: step 1's time holds the optimizer's first update, which creates its
    state (Adam: 8-10 ms between steps 0 and 1 of a 512-wide MLP, 2-3 ms later)."""
    first = 2 if len(measured) >= 5 else 1 if len(measured) >= 3 else 0
    return [s for s in range(first, len(measured))
            if not any(measured[s].meta.get("probe", ()))]


def run_cpu(measured: Sequence[Timeline]) -> float | None:
    """The CPU seconds a step's actions used on all ranks together (``meta["cpu"]``,
    ``TrainJob(cpu_time=True)``), mean over the used steps; None where none was recorded."""
    seen = [sum(measured[s].meta["cpu"]) for s in used_steps(measured)
            if any(measured[s].meta.get("cpu", ()))]
    return statistics.fmean(seen) if seen else None


def run_reference(measured: Sequence[Timeline]) -> float | None:
    """The reference kernel's mean time per call on the run's ranks, timed between its steps
    (``meta["probe"]``, ``TrainJob(probe_every=)``); None if it never was."""
    times = [t for step in measured for t in step.meta.get("probe", ()) if t > 0]
    return statistics.fmean(times) if times else None


def prediction_report(predicted: Timeline, measured: Sequence[Timeline],
                      replayed: Timeline | None = None, drift: float | None = None
                      ) -> dict[str, Any]:
    """Predicted vs measured step time (``predicted_step``, ``step_times``), in total and per rank.

    ``measured_step_seconds`` is the median step time of the used steps (``used_steps``);
    ``prediction_error`` = (predicted - measured) / measured, signed: negative means the run
    was slower than predicted. The pipeline's part alone (``step_span``, no optimizer) is
    ``*_pipeline_seconds``. ``replay_step_seconds``/``replay_error`` are the same for
    ``replayed`` (``replay``) and ``speed_drift`` is ``drift`` (``speed_drift``); None when
    not given; ``action_drift`` is how much longer the run's actions took than predicted
    (``action_drift``); ``cores`` the cores the prediction shared among the ranks (None: a
    core each) and ``shared_compute`` the factor their actions took (``predict``). Per rank:
    finish time (last end from the step's start) and busy time (sum of action durations:
    compute, from inputs in hand to output made).
    """
    if not measured:
        raise ValueError("no measured steps to compare with")
    if any(t.ranks != predicted.ranks for t in measured):
        raise ValueError(f"the prediction has {predicted.ranks} ranks; a measured step has "
                         f"{next(t.ranks for t in measured if t.ranks != predicted.ranks)}")
    steps, times = used_steps(measured), step_times(measured)
    want = statistics.median(times[s] for s in steps)
    pred = predicted_step(predicted)
    again = predicted_step(replayed) if replayed is not None else None
    p_finish, p_busy = _rank_finish(predicted), _rank_busy(predicted)
    m_finish = [statistics.median(_rank_finish(measured[s])[r] for s in steps)
                for r in range(predicted.ranks)]
    m_busy = [statistics.median(_rank_busy(measured[s])[r] for s in steps)
              for r in range(predicted.ranks)]
    return {
        "predicted_step_seconds": pred,
        "measured_step_seconds": want,
        "prediction_error": _error(pred, want),
        "replay_step_seconds": again,
        "replay_error": _error(again, want) if again is not None else None,
        "speed_drift": drift,
        "action_drift": action_drift(predicted, measured),
        "cores": predicted.meta.get("cores"),
        "shared_compute": predicted.meta.get("shared_compute", 1.0),
        "steps_used": steps,
        "predicted_pipeline_seconds": step_span(predicted),
        "measured_pipeline_seconds": statistics.median(step_span(measured[s]) for s in steps),
        "measured_makespan_seconds": statistics.median(measured[s].makespan for s in steps),
        "per_step": [{"step": s, "measured_seconds": times[s], "error": _error(pred, times[s])}
                     for s in range(len(measured))],
        "per_rank": [{"rank": r, "predicted_finish": p_finish[r], "measured_finish": m_finish[r],
                      "finish_error": _error(p_finish[r], m_finish[r]),
                      "predicted_busy": p_busy[r], "measured_busy": m_busy[r],
                      "busy_error": _error(p_busy[r], m_busy[r])}
                     for r in range(predicted.ranks)],
    }


def prediction_json(report: dict[str, Any]) -> dict[str, Any]:
    """The fields ``pipesim run --predict --json`` adds to its object."""
    keys = ("predicted_step_seconds", "measured_step_seconds", "prediction_error",
            "replay_step_seconds", "replay_error", "speed_drift", "action_drift",
            "shared_compute", "predicted_pipeline_seconds", "measured_pipeline_seconds")
    return {k: report[k] for k in keys} | {"prediction_per_rank": report["per_rank"]}


def _percent(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1%}"


def prediction_lines(report: dict[str, Any]) -> list[str]:
    """The text report: the prediction, the replay and the machine's drift."""
    used = report["steps_used"]
    lines = [f"Predicted step: {report['predicted_step_seconds'] * 1e3:.2f} ms; measured "
             f"{report['measured_step_seconds'] * 1e3:.2f} ms (median of {len(used)} steps of "
             f"{used[0]}-{used[-1]}); error {_percent(report['prediction_error'])} (the "
             f"pipeline alone, without the optimizer: predicted "
             f"{report['predicted_pipeline_seconds'] * 1e3:.2f} ms, measured "
             f"{report['measured_pipeline_seconds'] * 1e3:.2f} ms)"]
    if report.get("cores") is not None:
        factor = report.get("shared_compute") or 0.0
        lines.append(f"Shared cores ({report['cores']} for {len(report['per_rank'])} ranks): "
                     + (f"each action predicted at x{factor:.2f} its profiled time (the "
                        f"calibration's, profile --engine)" if factor else
                        "each action predicted at its profiled time (no calibration of shared "
                        "cores: profile --engine on a machine with 2 cores or more)"))
    if report.get("replay_step_seconds") is not None:
        lines.append(f"Replayed with this run's own action and message times: "
                     f"{report['replay_step_seconds'] * 1e3:.2f} ms, error "
                     f"{_percent(report['replay_error'])} (what the model misses)")
    drifts = []
    if report.get("speed_drift") is not None:
        drifts.append(f"the reference kernel {_percent(report['speed_drift'])} on the ranks "
                      f"vs in the profile")
    if report.get("action_drift") is not None:
        drifts.append(f"the run's actions {_percent(report['action_drift'])} vs the profile")
    if drifts:
        lines.append("Machine speed drift: " + "; ".join(drifts) + " (> 0: slower in the run)")
    reading = _reading(report)
    if reading:
        lines.append(reading)
    return lines


STEADY = 0.05  # a drift or replay error within this is "held" in ``_reading``


def _reading(report: dict[str, Any]) -> str | None:
    """One line that says whose error the prediction's is: the model's (the replay misses
    too), the machine's (the reference kernel moved by as much as the error says), or, where
    neither accounts for it, what is left: on shared cores the sharing, else the profile's
    action times against the run's; None without a drift.

    A drift d alone makes the prediction 1 / (1 + d) - 1 off (every action that much slower
    or faster); the error is the machine's when it is within ``STEADY`` of that."""
    drift, replay_error = report.get("speed_drift"), report.get("replay_error")
    error = report.get("prediction_error")
    if drift is None:
        return None
    if replay_error is not None and abs(replay_error) > STEADY:
        return (f"Reading: the replay misses by {_percent(replay_error)} too: the model "
                f"leaves out something this run pays (README: what the prediction models)")
    if abs(drift) > STEADY:
        alone = 1 / (1 + drift) - 1
        moved = (f"Reading: the machine ran {abs(drift):.0%} "
                 f"{'slower' if drift > 0 else 'faster'} during the run than while profiled, "
                 f"which alone makes the prediction {_percent(alone)} off")
        if error is None or abs(error - alone) <= STEADY:
            return moved + ": its error is the machine's, not the model's"
        return (moved + f"; it is {_percent(error)}, and the other {_percent(error - alone)} "
                f"is not the machine's speed: " + _rest(report, error - alone))
    if error is None or abs(error) <= STEADY:
        return "Reading: the machine held its speed and the model the run"
    return (f"Reading: the machine held its speed and the replay follows the run, but the "
            f"prediction is {_percent(error)} off: " + _rest(report, error))


def _rest(report: dict[str, Any], left: float) -> str:
    """What the part ``left`` of the error (signed) that neither the machine's drift nor the
    replay accounts for most likely is."""
    if report.get("cores") is not None:  # < 0: predicted fast, the sharing cost more
        return (f"ranks that share cores lose {'more' if left < 0 else 'less'} to the sharing "
                f"than the model charges (README: what the prediction models)")
    moved = report.get("action_drift")
    if moved is not None and abs(moved) > STEADY:
        return (f"the run's actions took {_percent(moved)} against the profile, which does "
                f"not represent them as the run runs them")
    return ("the engine's own time, the messages or the time between steps, which the replay "
            "takes from the run and the prediction from the calibrations")


def median_step(measured: Sequence[Timeline]) -> Timeline:
    """The used step whose step time is the median (the one to draw)."""
    times = step_times(measured)
    steps = sorted(used_steps(measured), key=lambda s: times[s])
    return measured[steps[len(steps) // 2]]
