"""The gradient check every head-to-head runs before it times anything.

Engines are equal when every parameter's gradient is equal, not when losses are: a stage that
never updates moves an SGD loss by ~1e-7 (what hid torch's zero and missing gradients here).
After one step from identical weights, each side's ``.grad`` of every parameter on every rank
is gathered to rank 0 and compared with the other sides' and with the same model stepped in one
process. A parameter agrees when ``max |g - ref| <= rtol * max |ref|`` (float32, microbatches
summed in another order: ~1e-7 here); a ``.grad`` that is None never agrees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

RTOL = 1e-4  # float32: observed differences are ~1e-7; torch's broken sides were 3e-1 to 1

Grads = dict[int, list[torch.Tensor | None]]  # stage -> its parameters' .grad, module order


class GradientMismatch(RuntimeError):
    """The sides of a head-to-head did not compute the same gradients: no row is reported."""


def grads_of(params: Mapping[int, Sequence[torch.nn.Parameter]]) -> Grads:
    """A copy of each parameter's ``.grad`` (None stays None), by stage."""
    return {s: [None if p.grad is None else p.grad.detach().clone() for p in ps]
            for s, ps in params.items()}


def merge(per_rank: Sequence[Grads]) -> Grads:
    """One side's gradients from all ranks (each rank holds some stages)."""
    out: Grads = {}
    for part in per_rank:
        out.update(part)
    return out


def compare(got: Grads, want: Grads, rtol: float = RTOL) -> tuple[float, list[str]]:
    """The worst relative error over all parameters, and one line per one that disagrees."""
    worst, problems = 0.0, []
    for s in sorted(want):
        if s not in got or len(got[s]) != len(want[s]):
            problems.append(f"stage {s}: {len(got.get(s, []))} gradients, expected "
                            f"{len(want[s])}")
            worst = float("inf")
            continue
        for i, (g, w) in enumerate(zip(got[s], want[s], strict=True)):
            err = _error(g, w)
            worst = max(worst, err)
            if not err <= rtol:
                what = "no gradient (.grad is None)" if g is None or w is None else \
                    f"max |diff| / max |ref| = {err:.1e}"
                problems.append(f"stage {s} parameter {i}: {what}")
    return worst, problems


def _error(g: torch.Tensor | None, w: torch.Tensor | None) -> float:
    if g is None or w is None:
        return float("inf")
    if g.shape != w.shape:
        return float("inf")
    scale = float(w.abs().max()) if w.numel() else 0.0
    diff = float((g - w).abs().max()) if w.numel() else 0.0
    if diff != diff:  # NaN
        return float("inf")
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def verdict(sides: Mapping[str, Grads], reference: Grads, rtol: float = RTOL
            ) -> dict[str, Any]:
    """Each side against the first and against one process: errors and every disagreement."""
    names = list(sides)
    first = sides[names[0]]
    errors: dict[str, float] = {}
    problems: list[str] = []
    for name in names:
        err, bad = compare(sides[name], reference, rtol)
        errors[f"{name}_vs_one_process"] = err
        problems += [f"{name} vs one process: {p}" for p in bad]
        if name != names[0]:
            err, bad = compare(sides[name], first, rtol)
            errors[f"{name}_vs_{names[0]}"] = err
            problems += [f"{name} vs {names[0]}: {p}" for p in bad]
    return {"grad_rtol": rtol, "grad_errors": errors, "grad_problems": problems,
            "grad_ok": not problems}


def refuse_unless_equal(row_name: str, result: Mapping[str, Any]) -> None:
    """Raise GradientMismatch (listing the first disagreements) unless every gradient agreed."""
    problems = result["grad_problems"]
    if problems:
        shown = "\n  ".join(problems[:12])
        more = f"\n  ... and {len(problems) - 12} more" if len(problems) > 12 else ""
        raise GradientMismatch(f"{row_name}: the sides' gradients disagree after one step from "
                               f"identical weights (rtol {result['grad_rtol']:g}); "
                               f"no timing reported:\n  {shown}{more}")
