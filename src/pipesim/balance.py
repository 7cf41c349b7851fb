"""Pure partition algorithms: per-layer costs -> contiguous blocks of layers, one per stage.

A *balance* is a list of block sizes, one per stage, in stage order: ``[2, 3, 3, 2]`` puts layers
0-1 on stage 0, 2-4 on stage 1, 5-7 on stage 2 and 8-9 on stage 3. Every block is non-empty and
the sizes add up to the number of layers.

    partition_balanced(costs, parts)  minimise the largest block sum (the pipeline's bottleneck)
    partition_uniform(n, parts)       equal layer counts, the remainder on the first stages
    check_balance(balance, n)         validate a user's explicit list (``--balance 2,3,3,2``)
    parse_balance("2,3,3,2")          the same list from text
    blocks_to_bounds([2, 3])          [(0, 2), (2, 5)]: half-open layer ranges

No torch, no numpy: the planner calls these thousands of times and the profiler beside them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import accumulate, pairwise

from pipesim.checks import is_positive_int


def _check_parts(n_layers: int, parts: int) -> None:
    if not is_positive_int(parts):
        raise ValueError(f"the number of parts must be an integer >= 1, got {parts!r}")
    if parts > n_layers:
        raise ValueError(
            f"cannot split {n_layers} layer{'s' if n_layers != 1 else ''} into {parts} "
            f"non-empty parts; use at most {n_layers} parts (stages)"
        )


def _check_costs(costs: Sequence[float]) -> list[float]:
    out = []
    for i, c in enumerate(costs):
        if isinstance(c, bool) or not isinstance(c, int | float) or not math.isfinite(c) or c < 0:
            raise ValueError(f"cost of layer {i} is {c!r}; costs must be finite numbers >= 0")
        out.append(float(c))
    return out


def partition_uniform(n_layers: int, parts: int) -> list[int]:
    """Equal layer counts; the first ``n_layers % parts`` blocks get one layer more.

    >>> partition_uniform(10, 4)
    [3, 3, 2, 2]
    """
    _check_parts(n_layers, parts)
    q, r = divmod(n_layers, parts)
    return [q + 1] * r + [q] * (parts - r)


def _blocks_needed(prefix: Sequence[float], start: int, cap: float) -> int:
    """Fewest blocks, each summing to <= cap, that cover layers start.. (greedy, which is optimal).

    Returns a huge number when one layer alone exceeds cap.
    """
    n = len(prefix) - 1
    blocks, i = 0, start
    while i < n:
        j = i + 1
        if prefix[j] - prefix[i] > cap:
            return n + 1
        while j < n and prefix[j + 1] - prefix[i] <= cap:
            j += 1
        blocks, i = blocks + 1, j
    return blocks


def _optimal_cap(prefix: Sequence[float], parts: int) -> float:
    """The smallest achievable largest-block sum: a binary search over every block sum.

    The optimum is always the sum of some contiguous run, so searching the sorted set of those
    sums with the greedy feasibility test finds it exactly (up to the rounding of ``prefix``).
    """
    n = len(prefix) - 1
    candidates = sorted({prefix[j] - prefix[i] for i in range(n) for j in range(i + 1, n + 1)})
    lo, hi = 0, len(candidates) - 1  # candidates[hi] (the whole sum) is always feasible
    while lo < hi:
        mid = (lo + hi) // 2
        if _blocks_needed(prefix, 0, candidates[mid]) <= parts:
            hi = mid
        else:
            lo = mid + 1
    return candidates[lo]


def partition_balanced(costs: Sequence[float], parts: int) -> list[int]:
    """Contiguous, non-empty blocks minimising the largest block sum (exact, not a heuristic).

    Ties: among all partitions whose largest block sum is optimal, the one with the smallest sum
    of squared block sums (the most even spread of the other blocks too), then the smallest sum of
    squared block sizes (even layer counts, e.g. for all-zero costs), then the latest
    boundaries (larger blocks first, as in partition_uniform). Sums come from prefix sums, so
    "optimal" is up to float rounding of those.

    >>> partition_balanced([1, 1, 1, 1, 4], 2)
    [4, 1]
    >>> partition_balanced([0, 0, 0, 0, 0], 2)
    [3, 2]
    """
    values = _check_costs(costs)
    _check_parts(len(values), parts)
    prefix = [0.0, *accumulate(values)]
    cap = _optimal_cap(prefix, parts)
    return _most_even(prefix, parts, cap)


def _most_even(prefix: Sequence[float], parts: int, cap: float) -> list[int]:
    """Among partitions with every block <= cap, the one the tie rule of partition_balanced picks.

    DP over (blocks done, layers covered); a state is kept only if the rest still fits in the
    remaining blocks, so the work is about parts x layers x (longest block).
    """
    n = len(prefix) - 1
    need = [_blocks_needed(prefix, i, cap) for i in range(n + 1)]
    # best[i] = (sum of squared sums, sum of squared sizes, negated boundaries) of the blocks so
    # far; tuples compare in that order, so negated boundaries make later ones win a final tie
    best: dict[int, tuple[float, int, tuple[int, ...]]] = {0: (0.0, 0, ())}
    for k in range(parts):
        left = parts - k - 1  # blocks still to place after this one
        nxt: dict[int, tuple[float, int, tuple[int, ...]]] = {}
        for i in sorted(best):
            sq, sz, bounds = best[i]
            for j in range(i + 1, n - left + 1):
                block = prefix[j] - prefix[i]
                if block > cap:
                    break
                if need[j] > left:
                    continue
                cand = (sq + block * block, sz + (j - i) ** 2, (*bounds, -j))
                if j not in nxt or cand < nxt[j]:
                    nxt[j] = cand
        best = nxt
    bounds = (0, *(-b for b in best[n][2]))
    return [b - a for a, b in pairwise(bounds)]


def blocks_to_bounds(blocks: Sequence[int]) -> list[tuple[int, int]]:
    """Block sizes -> half-open layer ranges: ``[2, 3]`` -> ``[(0, 2), (2, 5)]``."""
    ends = list(accumulate(blocks))
    return [(end - size, end) for size, end in zip(blocks, ends, strict=True)]


def check_balance(balance: Sequence[int], n_layers: int) -> list[int]:
    """Validate an explicit balance: positive integers adding up to ``n_layers``; returns a copy."""
    out = []
    for i, b in enumerate(balance):
        if not is_positive_int(b):
            raise ValueError(f"balance entry {i} is {b!r}; every stage needs an integer >= 1 "
                             f"layers")
        out.append(b)
    if not out:
        raise ValueError("the balance is empty; give one layer count per stage, e.g. 2,3,3,2")
    if sum(out) != n_layers:
        raise ValueError(f"the balance {','.join(map(str, out))} covers {sum(out)} layers; "
                         f"the model has {n_layers}")
    return out


def parse_balance(text: str) -> list[int]:
    """``"2,3,3,2"`` -> ``[2, 3, 3, 2]`` (check the total with check_balance)."""
    out = []
    for part in text.split(","):
        try:
            out.append(int(part.strip()))
        except ValueError:
            raise ValueError(f"balance {text!r}: {part.strip()!r} is not an integer; "
                             f"expected layer counts such as 2,3,3,2") from None
    return check_balance(out, sum(out))


__all__ = [
    "blocks_to_bounds", "check_balance", "parse_balance", "partition_balanced", "partition_uniform"
]
