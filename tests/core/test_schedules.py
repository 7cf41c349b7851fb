"""Generators: golden grids, invariants over a grid of sizes, closed-form memory, config errors.

Goldens are ``views.grid.format_step_grid`` drawings in each generator's docstring: every action
one unit step wide, placed at the earliest step its rank and its dependencies allow; ``.`` is an
idle step.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from pipesim.ir import Action, Op, Schedule
from pipesim.schedules import SCHEDULES, ConfigError, UnknownScheduleError, get_schedule
from pipesim.validate import validate
from pipesim.views.grid import format_step_grid


def grid(name: str, ranks: int, microbatches: int, v: int | None = None) -> str:
    return format_step_grid(get_schedule(name, ranks, microbatches, v))


def lines(text: str) -> str:
    return "\n".join(line.strip() for line in text.strip().splitlines())


# ----------------------------------------------------------------------------- golden grids, p=4
# Each generator's docstring draws its grid at 4 ranks (4 microbatches; dualpipev 8; v=2 where
# any v is taken), laid out as the staircase it is: that drawing is the golden, written once.


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_golden_grid_is_the_one_in_the_docstring(name: str) -> None:
    doc = inspect.getdoc(SCHEDULES[name].build) or ""
    drawn = [line.strip() for line in doc.splitlines() if line.strip().startswith("rank ")]
    assert len(drawn) == 4, f"{name}'s docstring has no 4-rank grid"
    m = 8 if name == "dualpipev" else 4
    v = 2 if SCHEDULES[name].virtual == "any" else None
    assert grid(name, 4, m, v).splitlines() == drawn


# ----------------------------------------------------------------------------- invariants


def peak_1f1b(p: int, m: int) -> list[int]:
    return [min(p - r, m) for r in range(p)]


def peak_interleaved(p: int, m: int, v: int) -> list[int]:
    """Megatron's interleaved 1F1B: warm-up (v-1)*g + 2*(p-1-r) forwards, then one more F.

    g is the round size, m // max(1, m // p) (p when m is a multiple of p); a rank whose
    warm-up covers all m*v forwards holds them all. With v=1 the schedule is 1F1B.
    """
    if v == 1:
        return peak_1f1b(p, m)
    g = m // max(1, m // p)
    return [min((v - 1) * g + 2 * (p - 1 - r) + 1, m * v) for r in range(p)]


# Per rank, the most stashed activations (of its stages; a V stage is half a 1F1B stage).
PEAKS: dict[str, Callable[[int, int, int], list[int]]] = {
    "forward": lambda p, m, v: [0] * p,
    "gpipe": lambda p, m, v: [m] * p,
    "1f1b": lambda p, m, v: peak_1f1b(p, m),
    # an activation lives until its W, which lags the I by r on rank r: min(p, m) everywhere,
    # 1F1B's largest (rank 0's)
    "zb-h1": lambda p, m, v: [min(p, m)] * p,
    "interleaved-1f1b": peak_interleaved,
    "looped-bfs": lambda p, m, v: [m * v] * p,
    # 2p half-size stage activations once the V is full (m >= 2p-1): 1F1B's memory
    "zbv": lambda p, m, v: [min(2 * p, 2 * m, m + r + 1) for r in range(p)],
    # one more than ZB-V: the overlapped F of an (F, B) pair runs before its B frees
    "dualpipev": lambda p, m, v: [2 * p + 1] * p,
}


def sizes(name: str) -> Iterator[tuple[int, int, int | None]]:
    """(ranks, microbatches, v): every size up to 4 ranks x 8 microbatches, sparser above.

    1,008 of the 1,536 configurations of the full grid (ranks 1..8 x microbatches 1..16 x v
    1..3 where it applies): the edges (m around p and 2p) and a diagonal sample. The full grid
    also passes; it takes about 2.5x as long.
    """
    vs: list[int | None] = [1, 2, 3] if SCHEDULES[name].virtual == "any" else [None]
    for p in range(1, 9):
        edges = {1, 2, p - 1, p, p + 1, 2 * p - 1, 2 * p, 2 * p + 1, 3 * p, 16}
        for m in range(1, 17):
            if (p <= 4 and m <= 8) or m in edges or (m + p) % 5 == 0:
                for v in vs:
                    yield p, m, v


def accepts(name: str, p: int, m: int, v: int | None) -> bool:
    """When a generator takes a configuration (else ConfigError)."""
    if name == "dualpipev":
        return m >= 2 * p
    if name == "interleaved-1f1b" and v != 1:
        return m % max(1, m // p) == 0
    return True


def expected_actions(s: Schedule) -> Counter[Action]:
    """Every (stage, microbatch) once: F, then B, or I and W where the schedule splits it."""
    want: Counter[Action] = Counter()
    for stage in range(s.stages):
        for mb in range(s.microbatches):
            want[Action(stage, Op.F, mb)] += 1
            if s.forward_only:
                continue
            ops = (Op.I, Op.W) if (stage, mb) in s.split_backward else (Op.B,)
            want.update(Action(stage, op, mb) for op in ops)
    return want


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_size_is_valid_complete_and_has_the_known_peak(name: str) -> None:
    built = 0
    for p, m, v in sizes(name):
        if not accepts(name, p, m, v):
            with pytest.raises(ConfigError):
                get_schedule(name, p, m, v)
            continue
        s = get_schedule(name, p, m, v)
        built += 1
        where = f"{name} p={p} m={m} v={v}"
        stages = p * (v or (2 if name in ("zbv", "dualpipev") else 1))
        assert (s.ranks, s.stages, s.microbatches) == (p, stages, m), where
        # complete: exactly the actions a training (or inference) step needs, each on its rank
        assert Counter(a for row in s.actions for a in row) == expected_actions(s), where
        assert all(s.stage_to_rank[a.stage] == r for r, row in enumerate(s.actions)
                   for a in row), where
        if name in ("zb-h1", "zbv"):
            assert len(s.split_backward) == s.stages * m, where
        report = validate(s)
        assert report.ok, (where, report.errors)
        assert list(report.peak_activations) == PEAKS[name](p, m, v or 1), where
    assert built >= 40


def test_zb_h1_never_stashes_more_than_1f1b_largest() -> None:
    for p in range(1, 9):
        for m in (1, p - 1, p, 2 * p + 3):
            if m >= 1:
                zb = validate(get_schedule("zb-h1", p, m)).peak_activations
                assert max(zb) == max(validate(get_schedule("1f1b", p, m)).peak_activations)


def test_interleaved_with_one_stage_per_rank_is_1f1b() -> None:
    assert get_schedule("interleaved-1f1b", 3, 5, 1).actions == get_schedule("1f1b", 3, 5).actions


def test_placements() -> None:
    assert get_schedule("interleaved-1f1b", 3, 3, 3).stage_to_rank == (0, 1, 2) * 3
    assert get_schedule("zbv", 3, 3).stage_to_rank == (0, 1, 2, 2, 1, 0)
    assert get_schedule("dualpipev", 3, 6).stage_to_rank == (0, 1, 2, 2, 1, 0)
    assert get_schedule("gpipe", 3, 3).stage_to_rank == (0, 1, 2)


# ----------------------------------------------------------------------------- errors


def test_dualpipev_needs_two_microbatches_per_rank() -> None:
    with pytest.raises(ConfigError) as err:
        get_schedule("dualpipev", 4, 7)
    assert "at least as many microbatches as stages" in str(err.value)
    assert "8" in str(err.value) and "got 7" in str(err.value)


def test_interleaved_rejects_uneven_rounds_and_suggests_counts_that_work() -> None:
    with pytest.raises(ConfigError) as err:
        get_schedule("interleaved-1f1b", 4, 9, 2)
    message = str(err.value)
    assert "divisible by max(1, microbatches // ranks) = 2" in message
    suggested = [int(x) for x in message.split("ranks: ")[1].split(", ")]
    assert suggested and 9 not in suggested
    for m in suggested:
        assert validate(get_schedule("interleaved-1f1b", 4, m, 2)).ok


@pytest.mark.parametrize(("name", "v", "says"), [
    ("zbv", 3, "zbv always has 2 stages per rank"),
    ("dualpipev", 1, "dualpipev always has 2 stages per rank"),
    ("1f1b", 2, "1f1b always has 1 stage per rank"),
])
def test_fixed_stage_counts_reject_other_v(name: str, v: int, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        get_schedule(name, 2, 8, v)
    assert get_schedule(name, 2, 8, 2 if name in ("zbv", "dualpipev") else 1).ranks == 2


@pytest.mark.parametrize(("args", "says"), [
    ((0, 4, None), "ranks must be an integer >= 1, got 0"),
    ((2, 0, None), "microbatches must be an integer >= 1, got 0"),
    ((2, 4, 0), "virtual stages must be an integer >= 1, got 0"),
    ((2, 2.5, None), "microbatches must be an integer >= 1, got 2.5"),
    ((True, 4, None), "ranks must be an integer >= 1, got True"),
])
def test_bad_sizes_are_config_errors(args: tuple[int, int, int | None], says: str) -> None:
    name = "interleaved-1f1b" if args[2] is not None else "gpipe"
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        get_schedule(name, *args)


def test_absurd_sizes_are_refused_before_building() -> None:
    with pytest.raises(ConfigError, match="at most 5,000,000"):
        get_schedule("gpipe", 1000, 100_000)


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownScheduleError) as err:
        get_schedule("1f1b-typo", 2, 2)
    assert all(name in str(err.value) for name in SCHEDULES)
