"""The cost flags that ``simulate``, ``compare`` and ``plan`` share, and the CostModel they build.

    --cost F=1,B=2            F and B (B split evenly into I and W), or
    --cost F=1,I=1,W=1        F, I and W (B = I + W); the default is F=1,I=1,W=1,B=2
    --cost ...,overlap=0.8    an overlapped pair (F;B) takes 0.8 x (F + B) (default 1)
    --comm-latency 0.1        time per message between two ranks
    --comm-bandwidth 1e9      bytes per time unit (default: infinite)
    --activation-bytes 4e6    bytes of each stage's output (what a message carries)
    --unit ms                 what a time of 1 means: units (default), ms or s
    --costs FILE.json         a cost file of either kind: per-layer ('pipesim profile -o'),
                              summed into the schedule's stages balanced by time, or
                              per-stage lists (CostModel.to_dict's format) for that stage count

``--cost`` times are those of one rank's share of the model. A schedule with v stages per rank
cuts that share into v stages, each taking 1/v of it, so schedules compare at the same total
work. ``--costs FILE`` gives every stage's time itself and is used as written.
"""

from __future__ import annotations

import argparse
import math
import sys

from pipesim.commands import UserError, non_negative_float, positive_float
from pipesim.costs import CostError, CostModel, StageCountError, parse_cost_flag
from pipesim.ir import Schedule
from pipesim.layercosts import CostFileError
from pipesim.stagecosts import load_stage_costs

__all__ = ["StageCountError", "add_cost_args", "costs_from_args", "describe", "describe_args",
           "op_times"]

UNITS = ("units", "ms", "s")




def add_cost_args(parser: argparse.ArgumentParser) -> None:
    """Register the cost flags on a subcommand's parser, in their own help group."""
    group = parser.add_argument_group(
        "costs", "time of each op on one rank's share of the model (a stage of a schedule with "
                 "v stages per rank takes 1/v of it) and of messages between ranks")
    group.add_argument("--cost", metavar="F=1,B=2",
                       help="op times: F and B, or F, I and W (default F=1,I=1,W=1, B=I+W); "
                            "overlap=X: an overlapped pair (F;B) takes X x (F+B) (default 1)")
    group.add_argument("--costs", dest="costs_file", metavar="FILE.json",
                       help="costs from a JSON file: per-layer ('pipesim profile -o'; summed "
                            "into each schedule's stages, balanced by time) or per-stage "
                            "(kind per-stage, for that many stages; see pipesim.costs)")
    group.add_argument("--comm-latency", type=non_negative_float, metavar="T",
                       help="time per message between two ranks (default 0)")
    group.add_argument("--comm-bandwidth", type=positive_float, metavar="BYTES",
                       help="bytes per time unit (default: unlimited)")
    group.add_argument("--activation-bytes", type=non_negative_float, metavar="BYTES",
                       help="bytes of each stage's output, the size of a message (default 0)")
    group.add_argument("--unit", choices=UNITS,
                       help="what a time of 1 means (default units)")


def costs_from_args(args: argparse.Namespace, schedule: Schedule,
                    raise_mismatch: bool = False) -> CostModel:
    """The CostModel the flags describe for ``schedule``; UserError (exit 2) on a mistake.

    ``raise_mismatch``: a per-stage file for another stage count raises StageCountError (a
    caller comparing schedules skips that one) instead.
    """
    try:
        return _build(args, schedule)
    except StageCountError:
        if raise_mismatch:
            raise
        where = f"{args.costs_file}: "
        raise UserError(f"{where}{sys.exc_info()[1]}") from None
    except (CostError, CostFileError) as err:
        where = f"{args.costs_file}: " if getattr(args, "costs_file", None) else ""
        raise UserError(f"{where}{err}") from None


def _build(args: argparse.Namespace, schedule: Schedule) -> CostModel:
    stages = schedule.stages
    forward: float | tuple[float, ...]
    inp: float | tuple[float, ...]
    weight: float | tuple[float, ...]
    backward: float | tuple[float, ...]
    act: float | tuple[float, ...]
    if args.costs_file:
        if args.cost:
            raise UserError("give --cost or --costs FILE, not both")
        base = load_stage_costs(args.costs_file, stages)
        forward, inp, weight, backward = (base.forward, base.backward_input,
                                          base.backward_weight, base.backward)
        act, params = base.activation_bytes, base.param_bytes or (0.0,) * stages
        latency, bandwidth, unit = base.comm_latency, base.comm_bandwidth, base.unit
        overlap = base.overlap
        stash = base.stash_bytes or None
        overheads = {"send_overhead": base.send_overhead,
                     "action_overhead": base.action_overhead}
    else:
        op = op_times(args.cost)
        overlap = parse_cost_flag(args.cost, overlap=True).get("overlap", 1.0) \
            if args.cost else 1.0
        share = stages / schedule.ranks  # stages per rank: each takes 1/share of a rank's work
        forward, inp, weight, backward = (op[k] / share for k in ("F", "I", "W", "B"))
        act, latency, bandwidth, unit = 0.0, 0.0, math.inf, "units"
        params = (0.0,) * stages
        stash = None
        overheads = {}
    if args.activation_bytes is not None:
        act = args.activation_bytes
    if args.comm_latency is not None:
        latency = args.comm_latency
    if args.comm_bandwidth is not None:
        bandwidth = args.comm_bandwidth
    if args.unit is not None:
        unit = args.unit
    return CostModel.from_lists(stages, forward, inp, weight, backward, act, params, latency,
                                bandwidth, unit, overlap=overlap, stash_bytes=stash,
                                **overheads)


def op_times(flag: str | None) -> dict[str, float]:
    """``--cost`` text -> F, I, W and B; the defaults fill what is not given (B = I + W)."""
    given = parse_cost_flag(flag, overlap=True) if flag else {"F": 1.0}
    f = given["F"]
    if "I" in given or "W" in given:
        i = given.get("I", given.get("W", f))
        w = given.get("W", i)
        b = given.get("B", i + w)
    else:
        b = given.get("B", 2 * f)
        i = w = b / 2
    return {"F": f, "I": i, "W": w, "B": b}


def describe_args(args: argparse.Namespace) -> str:
    """What the cost flags say, for a report's header."""
    if args.costs_file:
        return f"costs from {args.costs_file}"
    op = op_times(args.cost)
    text = (f"costs F={op['F']:g} I={op['I']:g} W={op['W']:g} B={op['B']:g} for one rank's "
            "share of the model (v stages per rank: each stage 1/v of it)")
    overlap = parse_cost_flag(args.cost, overlap=True).get("overlap") if args.cost else None
    if overlap is not None:
        text += f"; overlapped pairs {overlap:g} x (F+B)"
    if args.comm_latency or args.activation_bytes:
        text += f"; message latency {args.comm_latency or 0:g}"
        if args.activation_bytes:
            bandwidth = args.comm_bandwidth or "unlimited"
            text += f", {args.activation_bytes:g} bytes at {bandwidth} B/unit"
    return text


def describe(costs: CostModel) -> str:
    """One line for a report: the ops' times if every stage is the same, and the comm terms."""
    def one(values: tuple[float, ...]) -> str:
        low, high = min(values), max(values)
        return f"{low:.4g}" if low == high else f"{low:.4g}..{high:.4g}"

    parts = [f"F={one(costs.forward)} I={one(costs.backward_input)} "
             f"W={one(costs.backward_weight)} B={one(costs.backward)} per stage"
             + (f" ({costs.stages} stages)" if len(set(costs.forward)) > 1 else "")]
    if costs.overlap != 1:
        parts.append(f"overlapped pairs {costs.overlap:g} x (F+B)")
    if costs.comm_latency or any(costs.activation_bytes):
        bw = "unlimited" if math.isinf(costs.comm_bandwidth) else f"{costs.comm_bandwidth:g}"
        parts.append(f"messages: latency {costs.comm_latency:g}, bandwidth {bw} B/{costs.unit}")
    parts.append(f"unit {costs.unit}")
    return "; ".join(parts)
