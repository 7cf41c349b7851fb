"""Generators: golden grids, invariants over a grid of sizes, closed-form memory, config errors.

Goldens are ``views.grid.format_step_grid``: every action one unit step wide, placed at the
earliest step its rank and its dependencies allow; ``.`` is an idle step.
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


def test_golden_forward() -> None:
    # inference: each rank one step behind the one before it
    assert grid("forward", 4, 4) == lines("""
        rank 0: 0F0 0F1 0F2 0F3  .   .   .
        rank 1:  .  1F0 1F1 1F2 1F3  .   .
        rank 2:  .   .  2F0 2F1 2F2 2F3  .
        rank 3:  .   .   .  3F0 3F1 3F2 3F3
    """)


def test_golden_gpipe() -> None:
    # fill, then drain: the last rank turns round at step 7, rank r starts its B's 3-r later
    assert grid("gpipe", 4, 4) == lines("""
        rank 0: 0F0 0F1 0F2 0F3  .   .   .   .   .   .  0B0 0B1 0B2 0B3
        rank 1:  .  1F0 1F1 1F2 1F3  .   .   .   .  1B0 1B1 1B2 1B3  .
        rank 2:  .   .  2F0 2F1 2F2 2F3  .   .  2B0 2B1 2B2 2B3  .   .
        rank 3:  .   .   .  3F0 3F1 3F2 3F3 3B0 3B1 3B2 3B3  .   .   .
    """)


def test_golden_1f1b() -> None:
    # rank r: ranks-r-1 warm-up F's (3, 2, 1, 0), then F B alternating, then the cool-down B's
    assert grid("1f1b", 4, 4) == lines("""
        rank 0: 0F0 0F1 0F2 0F3  .   .   .  0B0  .  0B1  .  0B2  .  0B3
        rank 1:  .  1F0 1F1 1F2  .   .  1B0 1F3 1B1  .  1B2  .  1B3  .
        rank 2:  .   .  2F0 2F1  .  2B0 2F2 2B1 2F3 2B2  .  2B3  .   .
        rank 3:  .   .   .  3F0 3B0 3F1 3B1 3F2 3B2 3F3 3B3  .   .   .
    """)


def test_golden_zb_h1() -> None:
    # 1F1B's order with B split in I and W; rank r defers its first r W's (W0 follows I_r):
    # the I's (on the critical path) move up and the W's fill the drain
    assert grid("zb-h1", 4, 4) == lines("""
        rank 0: 0F0 0F1 0F2 0F3  .   .   .  0I0 0W0 0I1 0W1 0I2 0W2 0I3 0W3
        rank 1:  .  1F0 1F1 1F2  .   .  1I0 1F3 1I1 1W0 1I2 1W1 1I3 1W2 1W3
        rank 2:  .   .  2F0 2F1  .  2I0 2F2 2I1 2F3 2I2 2W0 2I3 2W1 2W2 2W3
        rank 3:  .   .   .  3F0 3I0 3F1 3I1 3F2 3I2 3F3 3I3 3W0 3W1 3W2 3W3
    """)


def test_golden_interleaved_1f1b() -> None:
    # stage s on rank s % 4; rounds of g=4 microbatches per chunk; warm-up (v-1)*g + 2*(3-r)
    # forwards: 10 > 8 on rank 0 (all of them), 8, 6 and 4 on rank 3, then one F one B
    assert grid("interleaved-1f1b", 4, 4, 2) == lines("""
        rank 0: 0F0 0F1 0F2 0F3 4F0 4F1 4F2 4F3  .   .   .  4B0  .  4B1  .  4B2  .  4B3 0B0 0B1 0B2 0B3
        rank 1:  .  1F0 1F1 1F2 1F3 5F0 5F1 5F2 5F3  .  5B0  .  5B1  .  5B2  .  5B3 1B0 1B1 1B2 1B3  .
        rank 2:  .   .  2F0 2F1 2F2 2F3 6F0 6F1 6F2 6B0 6F3 6B1  .  6B2  .  6B3 2B0 2B1 2B2 2B3  .   .
        rank 3:  .   .   .  3F0 3F1 3F2 3F3 7F0 7B0 7F1 7B1 7F2 7B2 7F3 7B3 3B0 3B1 3B2 3B3  .   .   .
    """)  # noqa: E501


def test_golden_looped_bfs() -> None:
    # every microbatch through chunk 0, then chunk 1; backward visits the chunks in reverse
    assert grid("looped-bfs", 4, 4, 2) == lines("""
        rank 0: 0F0 0F1 0F2 0F3 4F0 4F1 4F2 4F3  .   .   .   .   .   .  4B0 4B1 4B2 4B3 0B0 0B1 0B2 0B3
        rank 1:  .  1F0 1F1 1F2 1F3 5F0 5F1 5F2 5F3  .   .   .   .  5B0 5B1 5B2 5B3 1B0 1B1 1B2 1B3  .
        rank 2:  .   .  2F0 2F1 2F2 2F3 6F0 6F1 6F2 6F3  .   .  6B0 6B1 6B2 6B3 2B0 2B1 2B2 2B3  .   .
        rank 3:  .   .   .  3F0 3F1 3F2 3F3 7F0 7F1 7F2 7F3 7B0 7B1 7B2 7B3 3B0 3B1 3B2 3B3  .   .   .
    """)  # noqa: E501


def test_golden_zbv() -> None:
    # V placement: rank r holds stages r and 7-r, so rank 0 runs the first and the last stage.
    # Rank r starts with 2*(4-r)-1 F's of its first stage (only 4 exist), pairs of F's, then
    # F I W on its second stage; the turn of the V (3F -> 4F on rank 3) sends no message
    assert grid("zbv", 4, 4) == lines("""
        rank 0: 0F0 0F1 0F2 0F3  .   .   .  7F0 7I0 7W0 7F1 7I1 7W1 7F2 7I2 7W2 7F3 7I3 7W3 0I0 0W0  .  0I1 0W1  .  0I2 0W2  .  0I3 0W3
        rank 1:  .  1F0 1F1 1F2 1F3  .  6F0  .  6F1 6I0 6W0 6F2 6I1 6W1 6F3 6I2 6W2 1I0 1W0 6I3 6W3 1I1 1W1  .  1I2 1W2  .  1I3 1W3  .
        rank 2:  .   .  2F0 2F1 2F2 5F0 2F3 5F1  .  5F2 5I0 5W0 5F3 5I1 5W1 2I0 2W0 5I2 5W2 2I1 2W1 5I3 5W3 2I2 2W2  .  2I3 2W3  .   .
        rank 3:  .   .   .  3F0 4F0 3F1 4F1 3F2 4F2 3F3 4F3 4I0 4W0 3I0 3W0 4I1 4W1 3I1 3W1 4I2 4W2 3I2 3W2 4I3 4W3 3I3 3W3  .   .   .
    """)  # noqa: E501


def test_golden_dualpipev() -> None:
    # rank 0: 6 F's of stage 0, the pair 0F6 7F0, three (I W F) on stage 7, then the
    # overlapped (F;B) pairs, then B's whose second half is split so the W's fill the drain.
    # A pair starts only once both its inputs are in: at unit steps (B = 1) some wait a step
    assert grid("dualpipev", 4, 8) == lines("""
        rank 0: 0F0 0F1 0F2 0F3 0F4 0F5 0F6 7F0 7I0 7W0 7F1 7I1 7W1 7F2 7I2 7W2 7F3 0F7 7B3 7F4 0B0 7B4  .  7F5 0B1 7B5  .  7F6 0B2 7B6  .  7F7 0B3 7B7 0I4 0W4 0I5 0W5 0I6 0W6 0I7 0W7
        rank 1:  .  1F0 1F1 1F2 1F3 1F4 6F0 1F5 6F1 6I0 6W0 6F2 6I1 6W1 6F3 1F6 6B2 6F4 1B0 1F7 6B3 6F5 1B1 6B4  .  6F6 1B2 6B5  .  6F7 1B3 6B6 1B4  .  6I7 1I5 6W7 1I6 1W5 1I7 1W6 1W7
        rank 2:  .   .  2F0 2F1 2F2 5F0 2F3 5F1 2F4 5F2 5I0 5W0 5F3 2F5 5B1 5F4 2B0 2F6 5B2 5F5 2B1 2F7 5B3 5F6 2B2 5B4  .  5F7 2B3 5B5 2B4  .  5B6 2I5  .  5I7 2I6 2W5 2I7 5W7 2W6 2W7
        rank 3:  .   .   .  3F0 4F0 3F1 4F1 3F2 4F2 3F3 4F3 3F4 4B0 4F4 3B0 3F5 4B1 4F5 3B1 3F6 4B2 4F6 3B2 3F7 4B3 4F7 3B3 4B4 3B4  .  4B5 3B5  .  4I6 3I6  .  4I7 3I7 4W6 3W6 4W7 3W7
    """)  # noqa: E501


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_docstring_grid_is_what_the_generator_draws(name: str) -> None:
    """Each generator's docstring shows its grid at 4 ranks; it must be the real one."""
    doc = inspect.getdoc(SCHEDULES[name].build) or ""
    drawn = [line.strip() for line in doc.splitlines() if line.strip().startswith("rank ")]
    assert len(drawn) == 4, f"{name}'s docstring has no 4-rank grid"
    m = 8 if name == "dualpipev" else 4
    v = 2 if SCHEDULES[name].virtual == "any" else None
    assert drawn == grid(name, 4, m, v).splitlines()


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
