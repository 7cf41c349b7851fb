"""Partition algorithms: optimality against brute force, tie rule, edge cases, errors."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipesim.balance import (
    blocks_to_bounds,
    check_balance,
    parse_balance,
    partition_balanced,
    partition_uniform,
)


def compositions(n: int, parts: int) -> list[list[int]]:
    """Every way to cut n layers into `parts` non-empty contiguous blocks."""
    out = []
    for cuts in itertools.combinations(range(1, n), parts - 1):
        bounds = (0, *cuts, n)
        out.append([b - a for a, b in itertools.pairwise(bounds)])
    return out


def block_sums(costs: list[float], blocks: list[int]) -> list[float]:
    return [math.fsum(costs[a:b]) for a, b in blocks_to_bounds(blocks)]


@st.composite
def costs_and_parts(draw: st.DrawFn, integers: bool = False) -> tuple[list[float], int]:
    values = (st.integers(0, 20).map(float) if integers
              else st.floats(0, 100, allow_nan=False, allow_infinity=False))
    costs = draw(st.lists(values, min_size=1, max_size=9))
    return costs, draw(st.integers(1, len(costs)))


@settings(max_examples=150, deadline=None)
@given(costs_and_parts())
def test_balanced_is_optimal_against_brute_force(case: tuple[list[float], int]) -> None:
    costs, parts = case
    blocks = partition_balanced(costs, parts)
    assert len(blocks) == parts and all(b >= 1 for b in blocks) and sum(blocks) == len(costs)
    best = min(max(block_sums(costs, c)) for c in compositions(len(costs), parts))
    assert max(block_sums(costs, blocks)) <= best * (1 + 1e-9) + 1e-9


@settings(max_examples=100, deadline=None)
@given(costs_and_parts(integers=True))
def test_ties_go_to_the_most_even_split(case: tuple[list[float], int]) -> None:
    # integer costs: every sum is exact, so the tie rule can be checked exactly
    costs, parts = case
    blocks = partition_balanced(costs, parts)
    every = compositions(len(costs), parts)
    best = min(max(block_sums(costs, c)) for c in every)
    optimal = [c for c in every if max(block_sums(costs, c)) == best]
    key = min((sum(s * s for s in block_sums(costs, c)), sum(b * b for b in c)) for c in optimal)
    assert max(block_sums(costs, blocks)) == best
    assert (sum(s * s for s in block_sums(costs, blocks)), sum(b * b for b in blocks)) == key


@pytest.mark.parametrize(("costs", "parts", "expected"), [
    ([1, 2, 3, 4], 4, [1, 1, 1, 1]),           # one layer per part
    ([5.0], 1, [1]),
    ([1, 2, 3], 1, [3]),                        # one part holds everything
    ([0, 0, 0, 0, 0], 2, [3, 2]),               # all zero: even counts, larger first
    ([2] * 8, 4, [2, 2, 2, 2]),                 # all equal
    ([1, 1, 1, 1, 4], 2, [4, 1]),               # the heavy last layer alone
    ([4, 1, 1, 1, 1], 2, [1, 4]),
    ([1, 1, 1, 1, 1, 1, 1, 1, 1, 9], 3, [5, 4, 1]),
])
def test_balanced_examples(costs: list[float], parts: int, expected: list[int]) -> None:
    assert partition_balanced(costs, parts) == expected


def test_balanced_handles_a_large_model() -> None:
    # embedding, 126 blocks, head into 64 stages: pairs of blocks, embedding and head each with
    # one block (1.001 and 1.7) so nothing exceeds 2
    costs = [0.001] + [1.0] * 126 + [0.7]
    blocks = partition_balanced(costs, 64)
    assert blocks == [2] * 64
    assert max(block_sums(costs, blocks)) == 2.0


@pytest.mark.parametrize(("costs", "parts", "message"), [
    ([1, 2], 3, "cannot split 2 layers into 3"),
    ([1, 2], 0, "integer >= 1"),
    ([], 1, "cannot split 0 layers"),
    ([1, -1], 1, "layer 1 is -1"),
    ([1, math.nan], 1, "layer 1 is nan"),
    ([math.inf], 1, "layer 0 is inf"),
    ([True, 1], 1, "layer 0 is True"),
])
def test_balanced_rejects_bad_input(costs: list[float], parts: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        partition_balanced(costs, parts)


@pytest.mark.parametrize(("n", "parts", "expected"), [
    (10, 4, [3, 3, 2, 2]), (4, 4, [1, 1, 1, 1]), (7, 1, [7]), (9, 3, [3, 3, 3]),
])
def test_uniform(n: int, parts: int, expected: list[int]) -> None:
    assert partition_uniform(n, parts) == expected


def test_uniform_never_leaves_a_part_empty() -> None:
    for n in range(1, 30):
        for parts in range(1, n + 1):
            blocks = partition_uniform(n, parts)
            assert min(blocks) >= 1 and sum(blocks) == n and max(blocks) - min(blocks) <= 1
    with pytest.raises(ValueError, match="at most 3 parts"):
        partition_uniform(3, 4)


def test_bounds() -> None:
    assert blocks_to_bounds([2, 3, 3, 2]) == [(0, 2), (2, 5), (5, 8), (8, 10)]
    assert blocks_to_bounds([]) == []


def test_check_and_parse_balance() -> None:
    assert check_balance([2, 3, 3, 2], 10) == [2, 3, 3, 2]
    assert parse_balance(" 2, 3,3,2 ") == [2, 3, 3, 2]
    with pytest.raises(ValueError, match="covers 10 layers; the model has 12"):
        check_balance([2, 3, 3, 2], 12)
    with pytest.raises(ValueError, match="entry 1 is 0"):
        check_balance([2, 0, 8], 10)
    with pytest.raises(ValueError, match=r"entry 0 is 2\.5"):
        check_balance([2.5, 7.5], 10)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="empty"):
        check_balance([], 0)
    with pytest.raises(ValueError, match="'x' is not an integer"):
        parse_balance("2,x,3")
    with pytest.raises(ValueError, match="entry 1 is -1"):
        parse_balance("2,-1")
