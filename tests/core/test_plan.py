"""The planner: ranking on cost models with known answers, memory, JSON, the CLI and its errors."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from pipesim.cli import main
from pipesim.ir import Action, Op, Schedule
from pipesim.layercosts import LayerCost, LayerCosts, ProfiledModel, load_layer_costs
from pipesim.planner.dataparallel import DPConfig, simulate_dp
from pipesim.planner.search import (
    Candidate,
    Config,
    PlanError,
    PlanResult,
    format_bytes,
    parse_bytes,
    peak_memory,
    plan,
    plan_world,
    run_command,
)
from pipesim.schedules import get_schedule
from pipesim.simulate import simulate
from pipesim.stagecosts import stage_costs, stage_memory
from pipesim.timeline import metrics

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "costs"


def uniform_layers(n: int, latency: float = 0.0, stash: float = 1.0, params: float = 0.0,
                   model: str = "", profiled: ProfiledModel | None = None) -> LayerCosts:
    """n identical layers: F = I = W = 1 s, B = 2 s."""
    layer = LayerCost(1.0, 1.0, 1.0, 2.0, 0.0, stash, params)
    return LayerCosts((layer,) * n, 1, model, latency, math.inf, profiled=profiled)


def step(candidates: Sequence[Candidate], schedule: str) -> float:
    return min(c.predicted_step_seconds for c in candidates if c.config.schedule == schedule)


def test_expensive_communication_favours_one_stage_per_rank() -> None:
    result = plan(uniform_layers(8, latency=100.0), ranks=4, batch=8, microbatch_counts=[8])
    assert result.best is not None and result.best.config.virtual_stages == 1
    assert step(result.candidates, "gpipe") < step(result.candidates, "interleaved-1f1b")


def test_zero_bubble_beats_gpipe_at_no_more_memory() -> None:
    result = plan(uniform_layers(8), ranks=4, batch=8, microbatch_counts=[8])
    by_name = {c.config.schedule: c for c in result.candidates}
    for name in ("zb-h1", "zbv"):
        assert by_name[name].predicted_step_seconds < by_name["gpipe"].predicted_step_seconds
        assert max(by_name[name].peak_memory_bytes) <= max(by_name["gpipe"].peak_memory_bytes)
    # 1F1B: gpipe's time at half its memory, so the tie goes to 1F1B
    assert by_name["1f1b"].predicted_step_seconds == by_name["gpipe"].predicted_step_seconds
    names = [c.config.schedule for c in result.candidates]
    assert names.index("1f1b") < names.index("gpipe")
    times = [c.predicted_step_seconds for c in result.candidates]
    assert times == sorted(times)


def test_tight_memory_limit_rejects_gpipe_and_picks_1f1b() -> None:
    # 2 layers per rank, 1 byte stashed per layer: gpipe keeps all 8 microbatches (16 B),
    # 1F1B at most 4 on rank 0 (8 B)
    result = plan(uniform_layers(8), ranks=4, batch=8, microbatch_counts=[8],
                  schedules=["gpipe", "1f1b"], memory_limit_bytes=10)
    assert result.best is not None and result.best.config.schedule == "1f1b"
    assert result.best.peak_memory_bytes == (8.0, 6.0, 4.0, 2.0)
    assert [r.config.schedule for r in result.rejected] == ["gpipe"]
    assert result.rejected[0].reason == "rank 0 needs 16 B > limit 10 B"


def test_parameters_count_with_the_optimizer_factor() -> None:
    result = plan(uniform_layers(4, params=100.0), ranks=2, batch=4, microbatch_counts=[4],
                  schedules=["1f1b"], optimizer_factor=3.0)
    assert result.best is not None
    # rank 0: 2 layers x 100 B x 3 + 2 microbatches in flight x 2 B stash
    assert result.best.peak_memory_bytes == (604.0, 602.0)


def test_peak_memory_walk_frees_on_b_and_on_w_when_split() -> None:
    one = get_schedule("1f1b", 2, 4)
    assert peak_memory(one, [1.0, 10.0], [0.0, 0.0]) == [2.0, 10.0]
    zb = get_schedule("zb-h1", 2, 4)
    assert peak_memory(zb, [1.0, 10.0], [5.0, 0.0], optimizer_factor=2.0) == [12.0, 20.0]
    # I alone frees nothing: F F I I W W holds two activations
    rows = ((Action(0, Op.F, 0), Action(0, Op.F, 1), Action(0, Op.I, 0), Action(0, Op.I, 1),
             Action(0, Op.W, 0), Action(0, Op.W, 1)),)
    manual = Schedule(1, 1, 2, (0,), rows)
    assert peak_memory(manual, [3.0], [0.0]) == [6.0]


def test_times_scale_with_microbatch_size() -> None:
    costs = uniform_layers(4)
    small = plan(costs, 2, batch=4, microbatch_counts=[4], schedules=["1f1b"])
    large = plan(costs, 2, batch=8, microbatch_counts=[4], schedules=["1f1b"])
    assert small.best is not None and large.best is not None
    assert large.best.config.microbatch_size == 2
    assert large.best.predicted_step_seconds == 2 * small.best.predicted_step_seconds
    assert large.best.peak_memory_bytes == tuple(2 * x for x in small.best.peak_memory_bytes)


def test_skips_what_a_schedule_or_the_model_does_not_accept() -> None:
    result = plan(uniform_layers(6), ranks=4, batch=4, microbatch_counts=[4],
                  schedules=["1f1b", "dualpipev"])
    assert [c.config.schedule for c in result.candidates] == ["1f1b"]
    (skip,) = result.skipped
    assert skip.schedule == "dualpipev" and "needs 8 stages but the model has 6" in skip.reason
    result = plan(uniform_layers(16), ranks=4, batch=4, microbatch_counts=[4],
                  schedules=["dualpipev"])
    assert not result.candidates and "at least as many microbatches" in result.skipped[0].reason


def test_explicit_and_named_partitions() -> None:
    costs = LayerCosts(tuple(LayerCost(f, f, f, 2 * f, 0, 0, p) for f, p in
                             [(1, 9), (1, 1), (1, 1), (3, 1)]), 1)
    time = plan(costs, 2, 2, microbatch_counts=[2], schedules=["1f1b"], partition="time")
    params = plan(costs, 2, 2, microbatch_counts=[2], schedules=["1f1b"], partition="params")
    explicit = plan(costs, 2, 2, microbatch_counts=[2], schedules=["1f1b"], partition=[2, 2])
    assert [c.config.balance for c in time.candidates] == [(3, 1)]
    assert [c.config.balance for c in params.candidates] == [(1, 3)]
    assert [(c.config.partition, c.config.balance) for c in explicit.candidates] == [
        ("explicit", (2, 2))]
    auto = plan(costs, 2, 2, microbatch_counts=[2], schedules=["1f1b"])
    assert {c.config.partition for c in auto.candidates} == {"time", "uniform"}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"batch": 10, "microbatch_counts": [4, 8]},
     r"batch 10 is not divisible by any microbatch count \(4, 8\); counts that divide it: "
     r"1, 2, 5, 10"),
    ({"ranks": 9}, "cannot place 8 layers on 9 ranks"),
    ({"ranks": 0}, "ranks must be an integer >= 1"),
    ({"schedules": ["forward"]}, "'forward' is not a training schedule"),
    ({"schedules": ["nope"]}, "'nope' is not a training schedule; valid: gpipe, 1f1b"),
    ({"virtual": [3], "schedules": ["zbv"]}, "no schedule among zbv has 3 stages per rank"),
    ({"partition": "fastest"}, "unknown partition 'fastest'"),
    ({"partition": [4, 3]}, "covers 7 layers; the model has 8"),
    ({"memory_limit_bytes": 0}, "memory limit must be > 0"),
    ({"optimizer_factor": -1.0}, "optimizer factor must be a finite number >= 0"),
])
def test_bad_planner_inputs(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"ranks": 2, "batch": 8} | kwargs
    with pytest.raises(PlanError, match=message):
        plan(uniform_layers(8), **args)  # type: ignore[arg-type]


def test_run_command() -> None:
    config = Config("zbv", 8, 2, 4, "time", (2, 3, 3, 2))
    gpt = ProfiledModel("gpt", 128, 4, "adam", seq_len=64, heads=8)
    assert run_command(config, 2, gpt) == (
        "pipesim run --model gpt --hidden-size 128 --layers 4 --optimizer adam --dtype float32 "
        "--seq-len 64 --heads 8 --schedule zbv -w 2 -m 8 -b 4 -v 2 --balance 2,3,3,2 "
        "--steps 10")
    assert run_command(config, 2).startswith("pipesim run --schedule zbv")
    assert config.pp == 2 and config.dp == 1
    assert run_command(config._replace(dp=16), 2) == (
        "pipesim run --schedule zbv -w 32 --dp 16 -m 8 -b 4 -v 2 --balance 2,3,3,2 --steps 10")


@pytest.mark.parametrize(("text", "value"), [
    ("2GB", 2 * 10**9), ("512MiB", 512 * 2**20), ("1.5GiB", 3 * 2**29), ("1000", 1000),
    (" 80 gb ", 80 * 10**9), ("4KB", 4000),
])
def test_parse_bytes(text: str, value: int) -> None:
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "GB", "2 GBs", "-1GB", "0", "1e9"])
def test_parse_bytes_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"size|at least 1 byte"):
        parse_bytes(text)


def test_format_bytes() -> None:
    assert [format_bytes(x) for x in (16, 3.1e9, 2.5e6, 1.2e12)] == [
        "16 B", "3.1 GB", "2.5 MB", "1.2 TB"]


def test_plans_64_ranks_from_the_example_file() -> None:
    costs = load_layer_costs(str(EXAMPLES / "gpt-58b-128l.json"))
    result = plan(costs, ranks=64, batch=128, microbatch_counts=[64, 128],
                  schedules=["1f1b", "zb-h1"], memory_limit_bytes=80e9)
    assert result.best is not None
    assert len(result.best.config.balance) == 64 and sum(result.best.config.balance) == 130
    assert len(result.best.peak_memory_bytes) == 64
    assert max(result.best.peak_memory_bytes) <= 80e9
    # ZB-H1's last rank keeps up to 64 stashes until their W's; with the LM head's fp32 logits
    # on it (time partition) that is over 80 GB, while 1F1B's last rank keeps one
    assert result.best.config.schedule == "1f1b" and result.best.config.microbatches == 128
    zb = [r for r in result.rejected if r.config.schedule == "zb-h1"
          and r.config.partition == "time" and r.config.microbatches == 128]
    assert zb and zb[0].reason.startswith("rank 63 needs")


# ----------------------------------------------------------------------------- the CLI


def write_costs(tmp_path: Path, costs: LayerCosts) -> str:
    path = tmp_path / "costs.json"
    path.write_text(costs.to_json())
    return str(path)


def test_cli_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_costs(tmp_path, uniform_layers(8, model="toy"))
    code = main(["plan", "--costs", path, "--ranks", "4", "--batch", "8", "--microbatches",
                 "8", "--memory-limit", "10", "--schedules", "gpipe,1f1b,zb-h1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "plan: toy (8 layers) on 4 ranks, batch 8, memory limit 10 B" in out
    assert ("best: zb-h1, 8 microbatches of 1, 1 stage(s) per rank, 54.000 s per step\n"
            '  pipesim.Pipeline(model, schedule="zb-h1", microbatches=8, loss_fn=loss_fn, '
            "balance=(2, 2, 2, 2))  # 4 processes, microbatches of 1 sample\n") in out
    assert "gpipe             m=8    v=1 time     rank 0 needs 16 B > limit 10 B" in out


def test_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_costs(tmp_path, uniform_layers(8))
    code = main(["plan", "--costs", path, "-p", "2", "--batch", "8", "--virtual", "1,2",
                 "--json", "--memory-limit", "12"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {"best", "candidates", "rejected", "skipped"} <= set(data)
    keys = {"schedule", "microbatches", "virtual_stages", "microbatch_size", "partition",
            "balance", "predicted_step_seconds", "bubble_fraction", "peak_memory_bytes",
            "command", "dp", "pp", "exposed_allreduce_seconds", "pipeline_args"}
    assert set(data["best"]) == keys and all(set(c) == keys for c in data["candidates"])
    assert data["best"] == data["candidates"][0]
    best = data["best"]
    assert (best["dp"], best["pp"], best["exposed_allreduce_seconds"]) == (1, 2, 0.0)
    assert best["pipeline_args"] == {
        "schedule": best["schedule"], "microbatches": best["microbatches"],
        "virtual_stages": best["virtual_stages"], "balance": best["balance"], "dp": 1,
        "checkpoint_activations": False}
    assert best["command"].startswith(
        f'pipesim.Pipeline(model, schedule="{best["schedule"]}", '
        f"microbatches={best['microbatches']}, loss_fn=loss_fn, ")
    assert data["rejected"] and all("> limit 12 B" in r["reason"] for r in data["rejected"])
    assert all(max(c["peak_memory_bytes"]) <= 12 for c in data["candidates"])


def test_cli_explicit_balance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_costs(tmp_path, uniform_layers(8))
    code = main(["plan", "--costs", path, "-p", "2", "--batch", "4", "--balance", "5,3",
                 "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["candidates"]
    assert {(c["partition"], tuple(c["balance"])) for c in data["candidates"]} == {
        ("explicit", (5, 3))}
    assert {s["virtual_stages"] for s in data["skipped"]} == {2}  # 4 stages != 2 in the balance


def test_cli_nothing_fits_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_costs(tmp_path, uniform_layers(4, params=1e9))
    code = main(["plan", "--costs", path, "-p", "2", "--batch", "4", "--memory-limit", "1GB"])
    assert code == 1
    assert "no configuration fits" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["--costs", "{missing}"], "cannot read cost file"),
    (["--costs", "{bad_json}"], "not JSON"),
    (["--costs", "{bad_type}"], r"layers\[0\]\.F: 'fast' is not a finite number"),
    (["--costs", "{good}", "--microbatches", "3,5"], "batch 8 is not divisible"),
    (["--costs", "{good}", "--memory-limit", "lots"], "'lots' is not a size"),
    (["--costs", "{good}", "--microbatches", "4,x"], "not a comma-separated list"),
    (["--costs", "{good}", "--balance", "2,2"], "--balance: .*covers 4 layers; the model has 8"),
    (["--costs", "{good}", "--schedules", "gpipe,warp"], "'warp' is not a training schedule"),
    (["--costs", "{good}", "--model", "gpt"], "not both"),
    (["--model", "resnet"], "unknown model 'resnet'"),
    (["--costs", "{good}", "--balance", "4,4", "--partition", "time"], "not both"),
    (["--costs", "{good}", "--optimizer-factor", "nan"], "optimizer factor must be"),
    (["--costs", "{good}", "--ranks", "9"], "cannot place 8 layers on 9 ranks"),
    ([], r"give --costs FILE\.json"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        argv: list[str], message: str) -> None:
    files = {"missing": str(tmp_path / "missing.json"), "good": write_costs(tmp_path,
             uniform_layers(8)), "bad_json": str(tmp_path / "bad.json"),
             "bad_type": str(tmp_path / "type.json")}
    Path(files["bad_json"]).write_text("{")
    Path(files["bad_type"]).write_text('{"microbatch_size": 1, "layers": [{"F": "fast"}]}')
    try:
        code = main(["plan", "--ranks", "2", "--batch", "8", *(a.format(**files) for a in argv)])
    except SystemExit as exit_:  # argparse's own errors (a flag's type) exit from the parser
        code = int(str(exit_.code))
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert re.search(message, err), err


@pytest.mark.parametrize("name", ["gpipe", "1f1b", "zb-h1", "zbv", "dualpipev",
                                  "interleaved-1f1b"])
def test_step_bubble_and_memory_agree_with_timeline_metrics(name: str) -> None:
    costs = LayerCosts(tuple(LayerCost(1.0 + i % 3, 1.5, 0.5 + i % 2, 2.0 + i % 2, 8.0,
                                       10.0 + i, 3.0) for i in range(16)), 1, "", 0.1, 80.0)
    result = plan(costs, 4, 8, microbatch_counts=[8], schedules=[name], partition="uniform")
    best = result.best
    assert best is not None
    sched = get_schedule(name, 4, 8, best.config.virtual_stages)
    stage = stage_costs(costs, best.config.balance)
    stash, params = stage_memory(costs, best.config.balance)
    expected = metrics(simulate(sched, stage), stash)
    assert best.predicted_step_seconds == pytest.approx(expected.makespan)
    assert best.bubble_fraction == pytest.approx(expected.bubble_fraction)
    assert [x - 4 * sum(params[s] for s in sched.stages_of(r))
            for r, x in enumerate(best.peak_memory_bytes)] == pytest.approx(
        [r.peak_activation_bytes for r in expected.per_rank])


# ----------------------------------------------------------------------------- data parallel


def fast_net(**kwargs: float) -> DPConfig:
    """Every ring inter-node (one GPU per node), one bucket per stage unless given."""
    args: dict[str, float] = {"latency": 0.0, "bandwidth": 1000.0, "bucket_bytes": math.inf}
    return DPConfig(1, ranks_per_node=1, **(args | kwargs))  # type: ignore[arg-type]


def test_world_candidates_agree_with_simulate_dp() -> None:
    costs = uniform_layers(8, latency=0.1, params=400.0)
    net = fast_net(latency=0.05, bucket_bytes=300.0)
    result = plan_world(costs, 8, 16, network=net, schedules=["1f1b", "zb-h1", "zbv"])
    assert {c.config.dp for c in result.candidates} == {1, 2, 4, 8}
    for c in result.candidates:
        cfg = c.config
        sched = get_schedule(cfg.schedule, cfg.pp, cfg.microbatches, cfg.virtual_stages)
        expected = simulate_dp(sched, stage_costs(costs, cfg.balance, cfg.microbatch_size),
                               replace(net, replicas=cfg.dp))
        assert c.predicted_step_seconds == pytest.approx(expected.step_time)
        assert c.exposed_allreduce_seconds == pytest.approx(expected.exposed_allreduce)
        assert c.bubble_fraction == pytest.approx(expected.bubble)
        assert cfg.dp * cfg.microbatches * cfg.microbatch_size == 16
        assert cfg.dp * cfg.pp == 8 and len(c.peak_memory_bytes) == cfg.pp
    assert any(c.exposed_allreduce_seconds > 0 for c in result.candidates)


def test_the_network_decides_between_replicas_and_pipeline_ranks() -> None:
    costs = uniform_layers(8, params=1000.0)
    # free all-reduce: 8 replicas of one rank each, no bubble at all
    free = plan_world(costs, 8, 32, network=fast_net(bandwidth=math.inf))
    assert free.best is not None and (free.best.config.dp, free.best.config.pp) == (8, 1)
    assert free.best.predicted_step_seconds == 4 * 8 * 3.0  # 4 samples x 8 layers x (F + B)
    # a slow link: every all-reduce costs more than the pipeline's bubble, so one pipeline
    slow = plan_world(costs, 8, 32, network=fast_net(bandwidth=1.0))
    assert slow.best is not None and (slow.best.config.dp, slow.best.config.pp) == (1, 8)
    assert slow.best.exposed_allreduce_seconds == 0.0


def test_pruning_keeps_the_top_rows_and_each_splits_best() -> None:
    costs = uniform_layers(8, latency=0.05, params=50.0)
    full = plan_world(costs, 8, 32, network=fast_net())
    pruned = plan_world(costs, 8, 32, network=fast_net(), keep=3)
    assert pruned.meta["pruned"] > 0 and len(pruned.candidates) < len(full.candidates)
    assert [(c.config, c.predicted_step_seconds) for c in pruned.candidates[:3]] == [
        (c.config, c.predicted_step_seconds) for c in full.candidates[:3]]

    def firsts(result: PlanResult) -> dict[int, Candidate]:
        out: dict[int, Candidate] = {}
        for c in result.candidates:
            out.setdefault(c.config.dp, c)
        return out

    assert firsts(pruned) == firsts(full)


def test_one_replica_world_is_the_pipeline_plan() -> None:
    costs = uniform_layers(8, latency=0.1, params=10.0)
    counts = [1, 2, 4, 8]  # the world search's default counts are only P to 4P
    world = plan_world(costs, 4, 8, replicas=[1], network=fast_net(bandwidth=1e-3),
                       microbatch_counts=counts)
    alone = plan(costs, 4, 8, microbatch_counts=counts)
    assert len(alone.candidates) > 10
    assert [(c.config, c.predicted_step_seconds) for c in world.candidates] == [
        (c.config, c.predicted_step_seconds) for c in alone.candidates]


def test_memory_per_rank_does_not_depend_on_replicas() -> None:
    costs = uniform_layers(8, params=100.0)
    two = plan(costs, 4, 16, microbatch_counts=[8], dp=DPConfig(2))  # 8 microbatches of 1
    one = plan(costs, 4, 8, microbatch_counts=[8])
    assert {c.config._replace(dp=1): c.peak_memory_bytes for c in two.candidates} == {
        c.config: c.peak_memory_bytes for c in one.candidates}
    assert all(c.config.dp == 2 and c.pipeline_args["dp"] == 2 and "dp=2)" in c.command
               for c in two.candidates)


def test_world_splits_not_tried_say_why() -> None:
    costs = uniform_layers(4, params=1e9)
    result = plan_world(costs, 8, 4, memory_limit_bytes=2.5e9)
    reasons = {s.dp: s.reason for s in result.skipped if not s.schedule}
    assert reasons[1] == "the model has 4 layers, fewer than the pipeline ranks"
    assert reasons[8] == "batch 4 does not split evenly over 8 replicas"
    assert reasons[4] == ("parameters and optimizer state alone need at least 8.0 GB per rank "
                          "> limit 2.5 GB")
    assert {c.config.dp for c in result.candidates} <= {2}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"world_size": 0}, "world size must be an integer >= 1"),
    ({"keep": 0}, "keep must be an integer >= 1"),
    ({"replicas": [3]}, "3 replicas do not divide 8 GPUs; valid: 1, 2, 4, 8"),
    ({"replicas": [0]}, "replicas must be integers >= 1"),
    ({"microbatch_counts": [0]}, "microbatch counts must be integers >= 1"),
])
def test_bad_world_inputs(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"world_size": 8, "batch": 8} | kwargs
    with pytest.raises(PlanError, match=re.escape(message)):
        plan_world(uniform_layers(8), **args)  # type: ignore[arg-type]


def test_plan_with_replicas_needs_an_even_split() -> None:
    with pytest.raises(PlanError, match="batch 6 does not split evenly over 4 replicas"):
        plan(uniform_layers(8), 2, 6, dp=DPConfig(4))


def test_cli_world_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mlp = ProfiledModel("mlp", 8, 8, "adam", loss="mse")
    path = write_costs(tmp_path, uniform_layers(8, model="toy", params=1000.0, profiled=mlp))
    code = main(["plan", "--costs", path, "--world-size", "8", "--batch", "32",
                 "--dp-bandwidth", "1", "--dp-latency", "0", "--ranks-per-node", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "plan: toy (8 layers) on 8 GPUs (D replicas x P pipeline ranks), batch 32" in out
    assert "inter-node 1 B/s + 0 us per ring step" in out
    assert re.search(r"#\s+dp\s+pp\s+schedule .* bubble\s+exposed\s+peak mem", out)
    assert "best of each split:" in out
    assert "best: 1 replica x 8 pipeline ranks, " in out
    data_code = main(["plan", "--costs", path, "--world-size", "8", "--batch", "32", "--dp",
                      "2,4", "--json", "--no-prune"])
    data = json.loads(capsys.readouterr().out)
    assert data_code == 0 and {c["dp"] for c in data["candidates"]} == {2, 4}
    assert data["network"]["bandwidth"] == 25e9 and data["network"]["ranks_per_node"] == 8
    assert "pruned" not in data and data["world_size"] == 8
    assert data["best"]["command"].startswith(
        "pipesim run --model mlp --hidden-size 8 --layers 8 --optimizer adam --dtype float32 "
        f"--loss mse --schedule {data['best']['schedule']} "
        f"-w {data['best']['pp'] * data['best']['dp']} --dp {data['best']['dp']} ")


@pytest.mark.parametrize(("argv", "message"), [
    (["--ranks", "3", "--world-size", "8"], "-p 3 does not divide -w 8"),
    (["--ranks", "2", "--dp", "2", "-w", "8"], "-w 8 and -p 2 x --dp 2 = 4 say different"),
    (["--dp", "2"], "--dp needs -w N"),
    (["--world-size", "8", "--dp", "3"], "3 replicas do not divide 8 GPUs"),
    (["--world-size", "8", "--dp-bandwidth", "0"], "must be a number > 0"),
    (["--world-size", "8", "--rank-order", "diagonal"], "invalid choice"),
    ([], "give -p/--ranks P (one pipeline) or -w/--world-size N"),
])
def test_cli_world_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                          message: str) -> None:
    path = write_costs(tmp_path, uniform_layers(8))
    try:
        code = main(["plan", "--costs", path, "--batch", "8", *argv])
    except SystemExit as exit_:
        code = int(str(exit_.code))
    err = capsys.readouterr().err
    assert code == 2 and message in err, err


def test_plan_model_profiles_first_and_commands_build_that_model(
        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    code = main(["plan", "--model", "mlp", "--hidden-size", "16", "--layers", "4", "--ranks", "2",
                 "--batch", "8", "--schedules", "1f1b,zb-h1", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["best"]["schedule"] in ("1f1b", "zb-h1")
    assert data["best"]["command"].startswith(
        "pipesim run --model mlp --hidden-size 16 --layers 4 --optimizer sgd --dtype float32 "
        "--loss mse --schedule ")
