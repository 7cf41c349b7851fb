"""The cost model: how long each action takes and what a message costs. Plain data, no torch.

Times are in one unit of the user's choice (``unit``: "units", "ms" or "s"); bandwidth is bytes per
that unit. Per-stage lists are indexed by stage.

The per-stage cost file (``CostModel.to_dict``; ``pipesim profile --stage-costs`` writes one)::

    {
      "kind": "per-stage",            # optional; written by pipesim (the other kind: per-layer)
      "stages": 4,                    # optional; the lists' length
      "unit": "ms",                   # unit of every time below
      "forward": [1, 1, 1, 1],        # F per stage (a single number: every stage)
      "backward_input": [1, ...],     # I; with backward_weight (W), or
      "backward": [2, ...],           # B alone (then I = W = B / 2)
      "backward_weight": [1, ...],
      "activation_bytes": [0, ...],   # optional: stage s's output, what a message carries
      "param_bytes": [0, ...],        # optional: stage s's parameters
      "comm_latency": 0,              # optional, per message between two ranks
      "comm_bandwidth": null,         # optional, bytes per unit; null = unlimited
      "send_overhead": 0,             # optional, the sender's own time per message
      "action_overhead": 0,           # optional, the engine's own time before each action
                                      #   (``pipesim profile --engine``)
      "overlap": 1,                   # optional, an overlapped pair takes overlap x (F + B)
      "stash_bytes": [0, ...]         # optional: what stage s's F keeps for its backward
    }

It fits only schedules with that many stages; the per-layer file (``pipesim.layercosts``) is
summed into any schedule's stages (``stagecosts.costs_for_stages``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pipesim.checks import is_positive_int
from pipesim.ir import Action, Op

KIND = "per-stage"  # the ``kind`` field of the file CostModel.to_dict writes


class CostError(ValueError):
    """A cost model that makes no sense; the message names the field."""


class StageCountError(CostError):
    """A per-stage cost file made for another number of stages than the schedule has."""


def _per_stage(name: str, value: float | Sequence[float], stages: int) -> tuple[float, ...]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        values: list[object] = [value] * stages
    elif isinstance(value, list | tuple):
        values = list(value)
    else:
        raise CostError(f"{name}: expected a number or a list of numbers, got {value!r}")
    if len(values) != stages:
        raise CostError(f"{name}: {len(values)} values for {stages} stages")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise CostError(f"{name}: {v!r} is not a finite number >= 0")
        out.append(float(v))
    return tuple(out)


@dataclass(frozen=True)
class CostModel:
    """Per stage: F, I, W and B times, activation and parameter bytes; per hop: comm cost."""

    forward: tuple[float, ...]
    backward_input: tuple[float, ...]
    backward_weight: tuple[float, ...]
    backward: tuple[float, ...]  # full backward; I + W unless measured separately
    activation_bytes: tuple[float, ...] = ()  # bytes of stage s's output (and its gradient)
    param_bytes: tuple[float, ...] = ()  # bytes of stage s's parameters
    comm_latency: float = 0.0  # per message between two ranks
    comm_bandwidth: float = math.inf  # bytes per unit of time
    unit: str = "units"
    # the sending rank's own time to hand a message to the transport: its action ends, and
    # the message leaves, that much later (0: sends cost the sender nothing)
    send_overhead: float = 0.0
    # an overlapped pair (F;B) takes overlap x (F + B): 1 runs its parts one after the other
    # (CPU, torch's runtime); DualPipe's F&B on a GPU is below 1
    overlap: float = 1.0
    # bytes stage s's forward keeps alive for its backward, per microbatch (() when unknown:
    # memory is then counted in stashes, not bytes); not the output, which is activation_bytes
    stash_bytes: tuple[float, ...] = ()
    # the engine's own time before each action (bookkeeping, posting receives): a rank starts
    # an action at the earliest this long after its previous one ended (0: none)
    action_overhead: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def stages(self) -> int:
        return len(self.forward)

    @classmethod
    def uniform(
        cls,
        stages: int,
        F: float = 1.0,
        B: float | None = None,
        I: float | None = None,  # noqa: E741
        W: float | None = None,
        **kwargs: Any,
    ) -> CostModel:
        """Same costs on every stage. Defaults F=1, I=1, W=1, B=I+W=2; B alone splits evenly."""
        if I is None and W is None:
            b = 2.0 * F if B is None else B
            I, W = b / 2, b / 2  # noqa: E741
        elif I is None or W is None:
            known = I if I is not None else W
            assert known is not None
            rest = (B if B is not None else 2 * known) - known
            I, W = (known, rest) if I is not None else (rest, known)  # noqa: E741
        return cls.from_lists(stages, F, I, W, B, **kwargs)

    @classmethod
    def from_lists(
        cls,
        stages: int,
        forward: float | Sequence[float],
        backward_input: float | Sequence[float],
        backward_weight: float | Sequence[float],
        backward: float | Sequence[float] | None = None,
        activation_bytes: float | Sequence[float] = 0.0,
        param_bytes: float | Sequence[float] = 0.0,
        comm_latency: float = 0.0,
        comm_bandwidth: float = math.inf,
        unit: str = "units",
        send_overhead: float = 0.0,
        overlap: float = 1.0,
        stash_bytes: float | Sequence[float] | None = None,
        action_overhead: float = 0.0,
    ) -> CostModel:
        if stages < 1:
            raise CostError("stages must be >= 1")
        f = _per_stage("F", forward, stages)
        i = _per_stage("I", backward_input, stages)
        w = _per_stage("W", backward_weight, stages)
        b = tuple(x + y for x, y in zip(i, w, strict=True)) if backward is None \
            else _per_stage("B", backward, stages)
        for name, value in (("comm_latency", comm_latency), ("comm_bandwidth", comm_bandwidth),
                            ("send_overhead", send_overhead), ("action_overhead", action_overhead)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 \
                    or math.isnan(value) or (name.endswith("_overhead") and math.isinf(value)):
                raise CostError(f"{name}: {value!r} is not a number >= 0")
        if comm_bandwidth == 0:
            raise CostError("comm_bandwidth must be > 0")
        _check_overlap(overlap)
        return cls(f, i, w, b, _per_stage("activation_bytes", activation_bytes, stages),
                   _per_stage("param_bytes", param_bytes, stages), float(comm_latency),
                   float(comm_bandwidth), unit, float(send_overhead), float(overlap),
                   () if stash_bytes is None else _per_stage("stash_bytes", stash_bytes, stages),
                   float(action_overhead))

    def duration(self, action: Action) -> float:
        table = {Op.F: self.forward, Op.I: self.backward_input, Op.W: self.backward_weight,
                 Op.B: self.backward}[action.op]
        return table[action.stage]

    def message_time(self, producer: Action, consumer: Action) -> float:
        """Latency + bytes / bandwidth for the tensor between two adjacent stages."""
        boundary = min(producer.stage, consumer.stage)
        size = self.activation_bytes[boundary] if self.activation_bytes else 0.0
        return self.comm_latency + (size / self.comm_bandwidth if size else 0.0)

    def to_dict(self) -> dict[str, Any]:
        d = {"kind": KIND, **asdict(self)}
        d.pop("extra")
        d["stages"] = self.stages
        if not self.stash_bytes:
            d.pop("stash_bytes")
        if math.isinf(self.comm_bandwidth):
            d["comm_bandwidth"] = None
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], stages: int | None = None) -> CostModel:
        """Read a cost file's object: lists per stage (or single numbers) plus comm fields."""
        if not isinstance(data, Mapping):
            raise CostError("a cost file holds a JSON object")
        known = {"kind", "forward", "backward_input", "backward_weight", "backward",
                 "activation_bytes", "param_bytes", "comm_latency", "comm_bandwidth",
                 "send_overhead", "action_overhead", "overlap", "stash_bytes", "unit", "stages",
                 "layers", "model", "microbatch_size", "source"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CostError(f"unknown field {unknown[0]!r}; valid: {', '.join(sorted(known))}")
        if data.get("kind", KIND) != KIND:
            raise CostError(f"kind: {data['kind']!r} is not {KIND!r}")
        if "forward" not in data:
            raise CostError("missing field 'forward'")
        given = data.get("stages", len(data["forward"]) if isinstance(data["forward"], list)
                         else None)
        if stages is not None and isinstance(given, int) and given != stages:
            raise StageCountError(
                f"the per-stage costs have {given} stages, the schedule {stages}; a per-layer "
                f"file ('pipesim profile -o FILE') is cut into any schedule's stages")
        n = stages if stages is not None else data.get("stages")
        if n is None:
            fwd = data["forward"]
            n = len(fwd) if isinstance(fwd, list) else 1
        if not is_positive_int(n):
            raise CostError(f"stages: {n!r} is not an integer >= 1")
        fwd = data["forward"]
        bwd = data.get("backward")
        if "backward_input" in data or "backward_weight" in data:
            bi = data.get("backward_input", 0.0)
            bw = data.get("backward_weight", 0.0)
        elif bwd is not None:
            b_list = _per_stage("backward", bwd, n)
            bi = [b / 2 for b in b_list]
            bw = [b / 2 for b in b_list]
        else:
            raise CostError("missing field 'backward' (or 'backward_input' and 'backward_weight')")
        bandwidth = data.get("comm_bandwidth")
        unit = data.get("unit", "units")
        if not isinstance(unit, str):
            raise CostError("unit: must be a string such as 'ms' or 's'")
        return cls.from_lists(
            n, fwd, bi, bw, bwd, data.get("activation_bytes", 0.0), data.get("param_bytes", 0.0),
            data.get("comm_latency", 0.0), math.inf if bandwidth is None else bandwidth, unit,
            data.get("send_overhead", 0.0), data.get("overlap", 1.0), data.get("stash_bytes"),
            data.get("action_overhead", 0.0),
        )


def _check_overlap(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not 0 < value <= 1:
        raise CostError(f"overlap: {value!r} is not a number in (0, 1] (an overlapped pair "
                        "takes overlap x (F + B); 1 runs F then B)")


def read_cost_json(path: str) -> Any:
    """A cost file's JSON, of either kind; raises CostError with a one-line reason."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except OSError as err:
        raise CostError(f"cannot read cost file {path}: {err.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CostError(f"cost file {path} is not JSON: {err}") from None


def load_costs(path: str, stages: int | None = None) -> CostModel:
    """Read a per-stage JSON cost file; raises CostError with a one-line reason."""
    return CostModel.from_dict(read_cost_json(path), stages)


def parse_cost_flag(text: str, overlap: bool = False) -> dict[str, float]:
    """``"F=1,B=2"`` or ``"F=1,I=1,W=1"`` -> {"F": 1.0, ...}; with ``overlap``, also
    ``overlap=0.8`` -> {"overlap": 0.8} (the cost model's factor for overlapped pairs)."""
    out: dict[str, float] = {}
    keys = ("F", "B", "I", "W", "OVERLAP") if overlap else ("F", "B", "I", "W")
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().upper()
        if not sep or key not in keys:
            extra = " (and overlap=FRACTION)" if overlap else ""
            raise CostError(f"--cost takes OP=NUMBER pairs with OP in F, B, I, W{extra}; "
                            f"got {part!r}")
        if key == "OVERLAP":
            try:
                factor = float(value)
            except ValueError:
                raise CostError(f"--cost overlap: {value!r} is not a number") from None
            _check_overlap(factor)
            out["overlap"] = factor
            continue
        try:
            number = float(value)
        except ValueError:
            raise CostError(f"--cost {key}: {value!r} is not a number") from None
        if not math.isfinite(number) or number < 0:
            raise CostError(f"--cost {key}: {value} must be a finite number >= 0")
        out[key] = number
    if "F" not in out:
        raise CostError("--cost needs F (e.g. F=1,B=2)")
    return out


__all__ = ["CostError", "CostModel", "load_costs", "parse_cost_flag", "read_cost_json"]
