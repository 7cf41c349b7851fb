"""Per-layer costs: the JSON file ``pipesim profile`` writes and ``pipesim plan`` reads.

One object; times in ``unit`` ("s", "ms" or "us"), sizes in bytes, all measured for one
microbatch of ``microbatch_size`` samples::

    {
      "kind": "per-layer",                   # optional; pipesim writes it (other: per-stage)
      "format": "pipesim-layer-costs",      # optional marker; if present it must be this
      "version": 1,                          # optional; 1 is the only version
      "model": "gpt2-xl",                    # optional; the planner's command gets --model NAME
      "microbatch_size": 1,                  # samples per microbatch when measured (int >= 1)
      "unit": "s",                           # unit of every time below and of comm_latency
      "comm_latency": 1e-05,                 # optional, per message between two ranks (0)
      "comm_bandwidth": 2.5e10,              # optional, bytes per unit; null/absent = infinite
      "comm_send_overhead": 2e-4,            # optional, the sender's own time per message (0)
      "engine_action_overhead": 1e-4,        # optional, the engine's own time before each
                                             #   action (``pipesim profile --engine``; 0)
      "engine_step_overhead": 3e-4,          # optional, each rank's own time between steps
                                             #   beyond the optimizer (data, zero_grad; 0)
      "engine_sync": 5e-4,                   # optional, the ranks' meeting once a step (the
                                             #   batch check): from the last rank's arrival
                                             #   to a free rank's first action (0)
      "reference_time": 3e-4,                # optional, one call of the reference kernel
                                             #   (pipesim.predict) when profiled: drift
      "data_time": 6e-4,                     # optional, making one step's batch, on each rank
                                             #   holding the first or last stage (0)
      "shared_compute": 1.2,                 # optional, how much more CPU time an action takes
                                             #   when ranks share cores, 2 per core (0: unknown)
      "notes": "how the figures were made",  # optional free text
      "profiled": {"model": "gpt",          # optional; written by `pipesim profile`: the built-in
                   "hidden_size": 128,       #   model measured, in `pipesim run`'s terms, so the
                   "layers": 6,              #   planner's command trains that model; model,
                   "optimizer": "adam",      #   hidden_size and layers required, the rest
                   "dtype": "float32",       #   optional: optimizer (sgd), dtype (float32), loss
                   "seq_len": 64, "heads": 8},  # (mlp), seq_len and heads (gpt)
      "layers": [                            # in model order, at least one
        {"name": "block0",                   # optional
         "F": 0.0021,                        # forward
         "I": 0.0023, "W": 0.0019,           # backward to the input / to the weights
         "B": 0.0040,                        # full backward; optional, I + W when absent
         "activation_bytes": 3276800,        # the layer's output (what is sent to the next)
         "stash_bytes": 63963136,            # what its forward keeps alive for its backward
         "param_bytes": 122956800,           # its parameters
         "optimizer": 0.0008}                # its parameters' optimizer update, once a step
      ]
    }

``F`` is required; give ``I`` and ``W``, or ``B`` alone (then I = W = B / 2). The three byte
fields and ``optimizer`` default to 0; ``optimizer`` does not scale with the microbatch size.
Unknown fields are errors (a typo must not pass silently). Without ``profiled`` (a hand-written
file, or ``pipesim.profile`` of a user's own layers) the planner prints the Python call of
``pipesim.Pipeline`` instead of a ``pipesim run`` command.

API: ``load_layer_costs(path)`` / ``parse_layer_costs(text)`` / ``LayerCosts.from_dict`` read and
validate (CostFileError, one line naming the field); ``LayerCosts.to_dict``/``to_json`` write.
Loaded times are kept in seconds whatever the file's unit. ``pipesim.stagecosts`` sums layers
into a schedule's stages (``stage_costs``, ``stage_memory``, ``stage_optimizer``) and reads a
file of either kind for a schedule (``costs_for_stages``, ``load_stage_costs``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from pipesim.checks import is_positive_int
from pipesim.costs import KIND as STAGE_KIND

FORMAT = "pipesim-layer-costs"
KIND = "per-layer"  # the ``kind`` field; the per-stage file's is costs.KIND
UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}  # seconds per unit
_TOP_FIELDS = {"kind", "format", "version", "model", "microbatch_size", "unit", "comm_latency",
               "comm_bandwidth", "comm_send_overhead", "engine_action_overhead",
               "engine_step_overhead", "engine_sync", "reference_time", "data_time", "notes",
               "profiled", "layers", "shared_compute"}
_TIMES = ("engine_action_overhead", "engine_step_overhead", "engine_sync", "reference_time",
          "data_time")
_LAYER_FIELDS = {"name", "F", "I", "W", "B", "activation_bytes", "stash_bytes", "param_bytes",
                 "optimizer"}


class CostFileError(ValueError):
    """A per-layer cost file that cannot be used; the message is one line naming the field."""


class LayerCost(NamedTuple):
    """One layer's measured costs for one microbatch; times in seconds, sizes in bytes."""

    forward: float
    backward_input: float
    backward_weight: float
    backward: float  # full backward; I + W unless measured separately
    activation_bytes: float = 0.0  # output sent to the next layer
    stash_bytes: float = 0.0  # kept by the forward until the backward (W when split) ends
    param_bytes: float = 0.0
    name: str = ""
    optimizer: float = 0.0  # the optimizer's update of its parameters, once per training step


class ProfiledModel(NamedTuple):
    """The built-in model ``pipesim profile`` measured, named as ``pipesim run``'s flags are
    (field ``seq_len`` is ``--seq-len``), so a plan's command trains the model that was profiled."""

    model: str  # mlp | gpt
    hidden_size: int
    layers: int  # as ``--layers`` counts them: one per entry of the cost file's layers
    optimizer: str = "sgd"  # whose update of each layer was timed
    dtype: str = "float32"
    loss: str | None = None  # mlp: mse | cross-entropy; None where the model fixes it (gpt)
    seq_len: int | None = None  # gpt: tokens per sequence
    heads: int | None = None  # gpt: attention heads


_PROFILED_INTS = ("hidden_size", "layers", "seq_len", "heads")


@dataclass(frozen=True)
class LayerCosts:
    """Every layer of a model, measured at ``microbatch_size``; times in seconds."""

    layers: tuple[LayerCost, ...]
    microbatch_size: int = 1
    model: str = ""
    comm_latency: float = 0.0  # seconds per message between two ranks
    comm_bandwidth: float = math.inf  # bytes per second
    notes: str = ""
    comm_send_overhead: float = 0.0  # seconds the sending rank spends per message
    profiled: ProfiledModel | None = None  # the built-in model measured (pipesim profile)
    engine_action_overhead: float = 0.0  # seconds the engine spends before each action
    engine_step_overhead: float = 0.0  # seconds each rank spends between steps (no optimizer)
    engine_sync: float = 0.0  # seconds the ranks' meeting once a step takes (the batch check)
    reference_time: float = 0.0  # seconds per reference-kernel call when profiled (0: unknown)
    data_time: float = 0.0  # seconds to make a step's batch (ranks with the first/last stage)
    # ranks that share CPU cores, their actions' CPU time over that with a core each
    # (``pipesim profile --engine``; 0: not measured)
    shared_compute: float = 0.0

    def __post_init__(self) -> None:
        if not self.layers:
            raise CostFileError("layers: the model needs at least one layer")
        if self.profiled is not None and self.profiled.layers != len(self.layers):
            raise CostFileError(f"profiled.layers: {self.profiled.layers} but the file has "
                                f"{len(self.layers)} layers")
        if self.microbatch_size < 1:
            raise CostFileError(f"microbatch_size: {self.microbatch_size} is not >= 1")

    def __len__(self) -> int:
        return len(self.layers)

    def layer_times(self) -> list[float]:
        """F + B per layer: what a balanced partition by time evens out."""
        return [c.forward + c.backward for c in self.layers]

    def layer_params(self) -> list[float]:
        return [c.param_bytes for c in self.layers]

    @classmethod
    def from_dict(cls, data: Any, source: str = "") -> LayerCosts:
        """Validate a parsed cost file; CostFileError names the first bad field."""
        where = f"{source}: " if source else ""
        try:
            return _from_dict(data)
        except CostFileError as err:
            raise CostFileError(f"{where}{err}") from None

    def to_dict(self) -> dict[str, Any]:
        """The file's object, in seconds; ``from_dict(to_dict())`` gives back an equal value."""
        out: dict[str, Any] = {"kind": KIND, "format": FORMAT, "version": 1}
        if self.model:
            out["model"] = self.model
        out |= {"microbatch_size": self.microbatch_size, "unit": "s",
                "comm_latency": self.comm_latency,
                "comm_bandwidth": None if math.isinf(self.comm_bandwidth) else
                self.comm_bandwidth, "comm_send_overhead": self.comm_send_overhead}
        for key in (*_TIMES, "shared_compute"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.notes:
            out["notes"] = self.notes
        if self.profiled is not None:
            out["profiled"] = {k: v for k, v in self.profiled._asdict().items() if v is not None}
        out["layers"] = [_layer_dict(c) for c in self.layers]
        return out

    def to_json(self) -> str:
        """The file's text: one line per field and per layer."""
        d = self.to_dict()
        layers = d.pop("layers")
        head = [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in d.items()]
        rows = ",\n".join(f"  {json.dumps(x)}" for x in layers)
        return "{\n" + "\n".join(head) + '\n "layers": [\n' + rows + "\n ]\n}\n"


def _layer_dict(c: LayerCost) -> dict[str, Any]:
    d: dict[str, Any] = {"name": c.name} if c.name else {}
    return d | {"F": c.forward, "I": c.backward_input, "W": c.backward_weight, "B": c.backward,
                "activation_bytes": c.activation_bytes, "stash_bytes": c.stash_bytes,
                "param_bytes": c.param_bytes, "optimizer": c.optimizer}


def _number(where: str, value: Any, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise CostFileError(f"{where}: {value!r} is not a finite number {bound}")
    return float(value)


def _check_fields(where: str, data: Any, valid: set[str]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise CostFileError(f"{where}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - valid)
    if unknown:
        raise CostFileError(f"{where}: unknown field {unknown[0]!r}; valid: "
                            f"{', '.join(sorted(valid))}")
    return data


def _string(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise CostFileError(f"{where}: {value!r} is not a string")
    return value


def _from_dict(data: Any) -> LayerCosts:
    if isinstance(data, Mapping) and "layers" not in data and cost_file_kind(data) == STAGE_KIND \
            and ("forward" in data or "kind" in data):
        raise CostFileError("this is a per-stage cost file (kind per-stage, for 'pipesim "
                            "simulate/compare --costs'); this needs per-layer costs: write them "
                            "with 'pipesim profile -o FILE' (format in pipesim.layercosts)")
    data = _check_fields("cost file", data, _TOP_FIELDS)
    if data.get("format", FORMAT) != FORMAT:
        raise CostFileError(f"format: {data['format']!r} is not {FORMAT!r} (a per-stage cost "
                            f"file for 'pipesim simulate --costs' is another format)")
    if data.get("version", 1) != 1:
        raise CostFileError(f"version: {data['version']!r} is not supported (only 1)")
    unit = _string("unit", data.get("unit", "s"))
    if unit not in UNITS:
        raise CostFileError(f"unit: {unit!r} is not one of {', '.join(UNITS)}")
    scale = UNITS[unit]
    mb = data.get("microbatch_size")
    if not is_positive_int(mb):
        raise CostFileError(f"microbatch_size: {mb!r} is not an integer >= 1"
                            if "microbatch_size" in data else "missing field 'microbatch_size'")
    layers = data.get("layers")
    if not isinstance(layers, list) or not layers:
        raise CostFileError("layers: expected a non-empty list of per-layer objects")
    bandwidth = data.get("comm_bandwidth")
    return LayerCosts(
        layers=tuple(_layer(f"layers[{i}]", x, scale) for i, x in enumerate(layers)),
        microbatch_size=mb,
        model=_string("model", data.get("model", "")),
        comm_latency=_number("comm_latency", data.get("comm_latency", 0.0)) * scale,
        comm_bandwidth=math.inf if bandwidth is None
        else _number("comm_bandwidth", bandwidth, positive=True) / scale,
        notes=_string("notes", data.get("notes", "")),
        comm_send_overhead=_number("comm_send_overhead",
                                   data.get("comm_send_overhead", 0.0)) * scale,
        profiled=_profiled(data["profiled"]) if "profiled" in data else None,
        **{key: _number(key, data.get(key, 0.0)) * scale
           for key in _TIMES},
        shared_compute=_number("shared_compute", data.get("shared_compute", 0.0)),
    )


def _profiled(data: Any) -> ProfiledModel:
    data = _check_fields("profiled", data, set(ProfiledModel._fields))
    for key in ("model", "hidden_size", "layers"):
        if key not in data:
            raise CostFileError(f"profiled: missing field {key!r}")
    for key, value in data.items():
        if key in _PROFILED_INTS:
            if not is_positive_int(value):
                raise CostFileError(f"profiled.{key}: {value!r} is not an integer >= 1")
        elif not isinstance(value, str) or not value:
            raise CostFileError(f"profiled.{key}: {value!r} is not a non-empty string")
    return ProfiledModel(**data)


def _layer(where: str, data: Any, scale: float) -> LayerCost:
    data = _check_fields(where, data, _LAYER_FIELDS)
    if "F" not in data:
        raise CostFileError(f"{where}: missing field 'F' (forward time)")
    f = _number(f"{where}.F", data["F"])
    b = _number(f"{where}.B", data["B"]) if "B" in data else None
    if "I" in data or "W" in data:
        if "I" not in data or "W" not in data:
            raise CostFileError(f"{where}: give both 'I' and 'W' (or 'B' alone)")
        i, w = _number(f"{where}.I", data["I"]), _number(f"{where}.W", data["W"])
    elif b is not None:
        i = w = b / 2
    else:
        raise CostFileError(f"{where}: missing backward time; give 'I' and 'W', or 'B'")
    act, stash, params = (_number(f"{where}.{k}", data.get(k, 0.0))
                          for k in ("activation_bytes", "stash_bytes", "param_bytes"))
    return LayerCost(f * scale, i * scale, w * scale, (i + w if b is None else b) * scale,
                     act, stash, params, _string(f"{where}.name", data.get("name", "")),
                     _number(f"{where}.optimizer", data.get("optimizer", 0.0)) * scale)


def parse_layer_costs(text: str, source: str = "") -> LayerCosts:
    """A cost file's text -> LayerCosts; CostFileError (prefixed with ``source``) if unusable."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        where = f"{source}: " if source else ""
        raise CostFileError(f"{where}not JSON: {err}") from None
    return LayerCosts.from_dict(data, source)


def load_layer_costs(path: str) -> LayerCosts:
    """Read and validate a per-layer cost file; every failure is a one-line CostFileError."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as err:
        raise CostFileError(f"cannot read cost file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise CostFileError(f"cost file {path} is not UTF-8 text") from None
    return parse_layer_costs(text, path)


def cost_file_kind(data: Any) -> str:
    """"per-layer" or "per-stage": the ``kind`` field, else what the object looks like."""
    if isinstance(data, Mapping):
        kind = data.get("kind")
        if kind is not None:
            if kind not in (KIND, STAGE_KIND):
                raise CostFileError(f"kind: {kind!r} is not {KIND!r} or {STAGE_KIND!r}")
            return str(kind)
        if isinstance(data.get("layers"), list) or data.get("format") == FORMAT:
            return KIND
    return STAGE_KIND


# ----------------------------------------------------------------------------- synthetic costs


def transformer_layer_costs(blocks: int, hidden: int, heads: int, seq: int, vocab: int,
                            microbatch_size: int = 1, flops_per_second: float = 0.4 * 312e12,
                            memory_bandwidth: float = 1.5e12, model: str = "",
                            comm_latency: float = 2e-5,
                            comm_bandwidth: float = 25e9) -> LayerCosts:
    """Illustrative costs of a GPT-style decoder from FLOP counts: embedding, blocks, LM head.

    Not a measurement: for planning examples and tests. Per microbatch of b sequences of s
    tokens, hidden h (a matmul of FLOPs x takes x / flops_per_second; default 40% of an A100's
    312 TFLOP/s bf16 peak):

        block  F = 24bsh^2 + 4bs^2h   I = 24bsh^2 + 8bs^2h   W = 24bsh^2  (attention scores have
               no weights, so their backward is all I); output 2bsh bytes (bf16); stash 34bsh
               bytes (Korthikanti et al. 2022 without the 5as^2b softmax term: flash attention);
               params 12h^2 + 13h, stored as fp32 (4 bytes)
        embed  token + position lookup, memory-bound: F = W = 2bsh / memory_bandwidth, I = 0;
               stash the token ids (8bs); params (vocab + s) h
        head   final norm + untied LM head + loss: F = I = W = 2bshV FLOPs; stash the input and
               fp32 logits (2bsh + 4bsV); output one fp32 loss per sequence; params hV + 2h
    """
    b, s, h, v = microbatch_size, seq, hidden, vocab
    rate = flops_per_second
    lookup = 2 * b * s * h / memory_bandwidth
    embed = LayerCost(lookup, 0.0, lookup, lookup, 2 * b * s * h, 8 * b * s, 4 * (v + s) * h,
                      "embed")
    dense, attn = 24 * b * s * h * h, 4 * b * s * s * h
    block = [LayerCost((dense + attn) / rate, (dense + 2 * attn) / rate, dense / rate,
                       (2 * dense + 2 * attn) / rate, 2 * b * s * h, 34 * b * s * h,
                       4 * (12 * h * h + 13 * h), f"block{i}") for i in range(blocks)]
    logits = 2 * b * s * h * v / rate
    head = LayerCost(logits, logits, logits, 2 * logits, 4 * b, 2 * b * s * h + 4 * b * s * v,
                     4 * (h * v + 2 * h), "head")
    notes = (f"illustrative, derived from FLOP counts (pipesim.layercosts.transformer_layer_costs"
             f"): {blocks} blocks, hidden {h}, {heads} heads, sequence {s}, vocab {v}, "
             f"{rate:.4g} FLOP/s achieved, {memory_bandwidth:.3g} B/s memory, fp32 parameters, "
             f"bf16 activations, flash attention; not a measurement")
    return LayerCosts((embed, *block, head), b, model, comm_latency, comm_bandwidth, notes)


__all__ = [
    "FORMAT",
    "UNITS",
    "CostFileError",
    "LayerCost",
    "LayerCosts",
    "cost_file_kind",
    "load_layer_costs",
    "parse_layer_costs",
    "transformer_layer_costs"
]
