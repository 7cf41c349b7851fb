"""The profiler writes cost files the planner and simulator read; partition() cuts models.

No timing assertions: times are only checked to be present and >= 0; bytes are exact.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from pipesim.cli import main
from pipesim.costs import CostModel, load_costs
from pipesim.layercosts import load_layer_costs, parse_layer_costs
from pipesim.models.mlp import LinearReLU
from pipesim.profiling.comm import measure_comm
from pipesim.profiling.partitioning import balance_for, partition
from pipesim.profiling.profiler import ProfileConfig, profile_layers, profile_model
from pipesim.schedules import get_schedule
from pipesim.simulate import simulate
from pipesim.stagecosts import stage_costs
from tests.cli import run_cli


def _mlp(layers: int = 3, hidden: int = 8, batch: int = 4, model: str = "mlp",
         **kw: object) -> ProfileConfig:
    kw.setdefault("schedule", get_schedule("gpipe", 1, 1))
    return ProfileConfig(model=model, hidden_size=hidden, layers=layers,  # type: ignore[arg-type]
                         batch_size=batch, **kw)


def test_mlp_profile_has_exact_bytes_and_round_trips() -> None:
    costs = profile_model(_mlp(), repeats=2, warmup=0)
    assert len(costs) == 3 and costs.microbatch_size == 4 and costs.model == "mlp"
    for c in costs.layers:
        assert min(c.forward, c.backward_input, c.backward_weight, c.backward) > 0
        assert c.activation_bytes == 4 * 8 * 4  # [batch, hidden] float32
        assert c.param_bytes == (8 * 8 + 8) * 4
    # F keeps Linear's input and ReLU's output; the last layer also the loss's output & target
    assert [c.stash_bytes for c in costs.layers] == [256, 256, 384]
    assert costs.data_time > 0  # making a step's batch is timed too
    assert parse_layer_costs(costs.to_json()) == costs
    per_stage = stage_costs(costs, [2, 1])
    again = CostModel.from_dict(json.loads(json.dumps(per_stage.to_dict())))
    assert again.forward == per_stage.forward and again.stages == 2
    assert simulate(get_schedule("1f1b", 2, 4), again).makespan > 0


def test_gpt_profile_counts_blocks_stash_and_int_input() -> None:
    cfg = _mlp(layers=4, hidden=16, batch=2, model="gpt", seq_len=8, heads=2)
    costs = profile_model(cfg, repeats=1, warmup=0)
    names = [c.name for c in costs.layers]
    assert names == ["0:Embed", "1:Block", "2:Block", "3:Head"]
    embed, block = costs.layers[0], costs.layers[1]
    assert embed.activation_bytes == block.activation_bytes == 2 * 8 * 16 * 4
    assert block.param_bytes == 4 * (12 * 16 * 16 + 13 * 16)  # GPT block: 12h^2 + 13h params
    assert block.stash_bytes > 4 * block.activation_bytes  # attention and MLP internals
    assert embed.stash_bytes == (2 * 8 + 8) * 8  # int64 token ids and positions only


def test_profile_leaves_the_callers_layers_alone() -> None:
    layers = [nn.Linear(4, 4), nn.Linear(4, 2)]
    profile_layers(layers, torch.randn(3, 4), repeats=1, warmup=0)
    assert [type(x) for x in layers] == [nn.Linear, nn.Linear]
    assert all(p.grad is None for x in layers for p in x.parameters())


def test_a_profile_given_seconds_goes_on_until_its_passes_took_that_long(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake clock that each pass moves by 1/8 s: 2 repeats and 1 s take 8 passes; without
    seconds, 2; a clock that never moves stops at MAX_PASSES."""
    import pipesim.profiling.profiler as profiler

    clock = [0.0]
    passes = []
    real = profiler._one_pass

    def one_pass(*args: object) -> object:
        passes.append(1)
        clock[0] += step
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(profiler, "_one_pass", one_pass)
    monkeypatch.setattr(profiler.time, "perf_counter", lambda: clock[0])
    layers, x = [nn.Linear(4, 4)], torch.randn(3, 4)
    for step, seconds, want in ((0.125, 1.0, 8), (0.125, 0.0, 2), (0.0, 1.0, 50)):
        passes.clear()
        monkeypatch.setattr(profiler, "MAX_PASSES", 50)
        profile_layers(layers, x, repeats=2, warmup=1, seconds=seconds)
        assert len(passes) == 1 + want, (step, seconds)  # the warm-up pass and the timed ones
    with pytest.raises(ValueError, match="seconds >= 0"):
        profile_layers(layers, x, seconds=-1.0)


def test_the_reference_kernel_is_timed_after_every_pass_apart_from_it() -> None:
    """``probe`` runs once after each timed pass (not the warm-up), outside the layers' times;
    its mean is the profile's reference_time; without one, 0. Processes profiling at once
    average it (``mean_over_ranks``), and profile_model's processes time the real kernel."""
    calls = iter([1.0, 2.0, 6.0])
    costs = profile_layers([nn.Linear(4, 4)], torch.randn(3, 4), repeats=3, warmup=2,
                           probe=lambda: next(calls))
    assert costs.reference_time == pytest.approx(3.0)
    assert next(calls, None) is None  # three passes, three probes
    assert profile_layers([nn.Linear(4, 4)], torch.randn(3, 4), repeats=1,
                          warmup=0).reference_time == 0
    both = profile_model(_mlp(), repeats=2, warmup=0, processes=2)
    assert 0 < both.reference_time < 0.1


def test_the_optimizer_update_is_profiled_per_layer_for_training_only() -> None:
    adam = profile_model(_mlp(optimizer="adam"), repeats=1, warmup=0)
    assert all(c.optimizer > 0 for c in adam.layers) and "optimizer adam" in adam.notes
    forward = _mlp(schedule=get_schedule("forward", 1, 1))
    assert all(c.optimizer == 0 for c in profile_model(forward, repeats=1, warmup=0).layers)
    # a layer without parameters costs the optimizer nothing
    plain = profile_layers([nn.Linear(4, 4), nn.ReLU()], torch.randn(3, 4), repeats=1, warmup=0,
                           optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1))
    assert plain.layers[0].optimizer > 0 and plain.layers[1].optimizer == 0


def test_each_update_runs_right_after_a_passs_backward_from_its_gradients() -> None:
    """One update per pass (warm-up passes and one more first, which makes the optimizer's
    state), each while B's gradients are on the parameters, as a rank updates after its step;
    and each update is undone, so every pass sees the weights as given (the profile does not
    train the layer on its one batch)."""
    seen: list[bool] = []
    weights: list[torch.Tensor] = []

    class Counting(torch.optim.SGD):
        def step(self, closure: object = None) -> None:  # type: ignore[override]
            seen.append(all(p.grad is not None and bool(p.grad.abs().sum() > 0)
                            for group in self.param_groups for p in group["params"]))
            weights.append(self.param_groups[0]["params"][0].detach().clone())
            super().step()

    layer = nn.Linear(4, 4)
    profile_layers([layer], torch.randn(3, 4), repeats=5, warmup=1,
                   optimizer=lambda ps: Counting(ps, lr=0.1))
    assert seen == [True] * (1 + 1 + 5)
    assert all(torch.equal(w, layer.weight) for w in weights)  # a copy of these, never moved


def test_two_process_profile_and_ping_pong() -> None:
    solo = profile_model(_mlp(), repeats=1, warmup=0)
    both = profile_model(_mlp(), repeats=1, warmup=0, processes=2)
    assert [c.stash_bytes for c in both.layers] == [c.stash_bytes for c in solo.layers]
    assert "2 processes" in both.notes and all(c.forward > 0 for c in both.layers)
    latency, bandwidth, send = measure_comm(1 << 16, repeats=3)
    assert latency > 0 and bandwidth > 0 and send > 0


def test_cli_profile_writes_files_plan_and_simulate_read(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    out, stages = tmp_path / "c.json", tmp_path / "s.json"
    code = main(["profile", "--model", "mlp", "--layers", "3", "--hidden-size", "8", "-b", "4",
                 "--repeats", "1", "--warmup", "0", "--no-comm", "-o", str(out),
                 "--stage-costs", str(stages), "--balance", "1,2", "--stat", "mean",
                 "--seconds", "0.05"])
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    assert "mean of 1 or more (0.05 s)" in load_layer_costs(str(out)).notes
    costs = load_layer_costs(str(out))
    assert len(costs) == 3 and costs.comm_latency == 0 and math.isinf(costs.comm_bandwidth)
    per_stage = load_costs(str(stages), 2)
    assert per_stage.forward == stage_costs(costs, [1, 2]).forward
    # this machine's engine calibration (the tests' fixed one) and the reference kernel
    assert (costs.engine_action_overhead, costs.engine_step_overhead) == (2e-5, 5e-4)
    assert per_stage.action_overhead == 2e-5 and costs.reference_time > 0
    assert main(["plan", "--costs", str(out), "-p", "2", "--batch", "8", "--json"]) == 0
    assert main(["simulate", "1f1b", "-p", "2", "--costs", str(stages)]) == 0


def test_cli_profile_engine_measures_and_caches_per_machine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from pipesim.calibration import ENV, cache_path, load_engine_costs
    monkeypatch.setenv(ENV, str(tmp_path / "cache"))
    assert load_engine_costs() is None
    import os
    own, real, pinned = os.sched_getaffinity(0), os.sched_setaffinity, []

    def pin(pid: int, cpus: list[int]) -> None:  # the shared-core runs pin this process...
        pinned.append(set(cpus))
        real(pid, cpus)
    monkeypatch.setattr(os, "sched_setaffinity", pin)
    assert main(["profile", "--engine", "--json"]) == 0
    assert len(pinned[0]) == 2 and pinned[-1] == own  # ...to 2 cores, and give them back
    data = json.loads(capsys.readouterr().out)
    assert cache_path().parent == tmp_path / "cache" and cache_path().exists()
    cached = load_engine_costs()
    assert cached is not None and cached.action_overhead == data["action_overhead"]
    assert set(cached.fits) == {"gpipe", "1f1b", "zb-h1"}
    assert 0 <= cached.action_overhead < 0.1 and 0 <= cached.step_overhead < 1
    assert 0 < cached.sync < 1 and all(len(fit) == 3 for fit in cached.fits.values())
    # 2 ranks per core against a core each (on 2 of this machine's cores, which has 2 or more)
    assert 0.5 < cached.shared_compute < 3
    from pipesim.commands.profile import _engine_report
    report = _engine_report(cached)  # what `pipesim profile --engine` prints
    assert "for the ranks' meeting" in report and "1f1b " in report
    assert f"ranks sharing cores (2 per core): each action x{cached.shared_compute:.2f}" in report


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--model", "gpt", "--layers", "2"], "needs >= 3"),
    (["--model", "gpt", "--hidden-size", "10", "--heads", "4"], "not divisible"),
    (["--seq-len", "8"], "for --model gpt"),
    (["--balance", "1,1"], "give --stage-costs"),
    (["--stage-costs", "s.json", "--balance", "1,1"], "covers 2 layers"),
    (["-o", "/no/such/dir/c.json"], "does not exist"),
    (["--seconds", "-1"], "--seconds"),
])
def test_cli_profile_mistakes_exit_2_in_one_line(argv: list[str], message: str,
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    base = ["profile", "--layers", "3", "--hidden-size", "8", "-b", "2", "--repeats", "1",
            "--no-comm"]
    if "-o" not in argv:
        base += ["-o", "c.json"]
    code, _, err = run_cli(capsys, *base, *argv)
    assert code == 2
    err = err.strip()
    assert message in err and "\n" not in err


def test_partition_methods() -> None:
    layers = [nn.Linear(8, 8), nn.Linear(8, 64), nn.Linear(64, 8), nn.Linear(8, 8)]
    model = nn.Sequential(*layers)
    uniform = partition(model, 2)
    assert [len(s) for s in uniform] == [2, 2] and uniform[1][0] is layers[2]
    by_params = partition(model, 2, method="params")  # 72, 576, 520, 72 parameters
    assert [len(s) for s in by_params] == [2, 2]
    assert [len(s) for s in partition(layers, 3, method="params")] == [1, 1, 2]
    assert [len(s) for s in partition(layers, 2, virtual_stages=2, balance=[1, 1, 1, 1])] == \
        [1, 1, 1, 1]
    timed = partition(model, 2, method="time", example=torch.randn(4, 8))
    assert sum(len(s) for s in timed) == 4 and all(len(s) >= 1 for s in timed)
    with pytest.raises(ValueError, match="needs an example"):
        partition(model, 2, method="time")
    with pytest.raises(ValueError, match="unknown partition method"):
        partition(model, 2, method="flops")
    with pytest.raises(ValueError, match="need 4"):
        partition(model, 2, virtual_stages=2, balance=[2, 2])
    with pytest.raises(TypeError, match=r"nn\.Sequential"):
        partition(LinearReLU(2, 2), 2)


def test_balance_for_a_run() -> None:
    sched = get_schedule("1f1b", 2, 2)
    cfg = ProfileConfig(schedule=sched, model="gpt", hidden_size=16, layers=6, batch_size=2,
                        seq_len=8, heads=2)
    assert balance_for(cfg, "uniform") == (3, 3)
    # the embedding and head hold few parameters next to a block: 2 blocks per stage
    assert balance_for(cfg, "params") == (3, 3)
    costs = profile_model(cfg, repeats=1, warmup=0)
    assert sum(balance_for(cfg, "time", costs)) == 6
    big_head = ProfileConfig(schedule=sched, model="mlp", hidden_size=8, layers=5, batch_size=2)
    assert balance_for(big_head, "params") == (3, 2)


def test_a_run_records_when_each_rank_began_its_step_and_when_the_ranks_met() -> None:
    """Every step's timeline says, per rank on the step's clock, when it began the step and
    when the batch check's collective let it go on; the calibration reads the meeting off it."""
    from pipesim.predict import engine_gaps
    from pipesim.processes.launch import launch
    from pipesim.runtime.predict import _calibration_config
    from pipesim.runtime.train import TrainJob
    from pipesim.timeline import Timeline
    cfg = _calibration_config("1f1b", 4, 4)
    steps = [Timeline.from_dict(t) for t in launch(TrainJob(cfg), 2).timelines]
    for step in steps:
        begin, synced = step.meta["begin"], step.meta["synced"]
        assert len(begin) == len(synced) == 2
        for rank, row in enumerate(step.by_rank()):
            assert begin[rank] <= synced[rank] <= row[0].start
        assert max(begin) <= min(synced)  # nobody goes on before the last one has begun
    action, step_overhead, sync = engine_gaps(cfg.schedule, steps)
    assert action > 0 and step_overhead > 0 and sync > 0
    assert all("probe" not in step.meta for step in steps)


def test_the_shared_core_calibration_needs_two_cores_it_may_pin(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With one core there is nothing to compare 2 ranks per core with; where the process
    may not pin itself, neither: no reading (the prediction then leaves the sharing's extra
    CPU time out and says so), never an error."""
    import os

    from pipesim.runtime import predict as runtime_predict
    from pipesim.runtime.predict import calibrate_shared
    monkeypatch.setattr(runtime_predict, "available_cores", lambda: 1)
    assert calibrate_shared() is None
    monkeypatch.setattr(runtime_predict, "available_cores", lambda: 2)

    def refuse(pid: int, cpus: object) -> None:
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    assert calibrate_shared() is None


def test_a_probing_run_times_the_reference_kernel_on_every_rank_every_few_steps() -> None:
    """``TrainJob(probe_every=2)``: before steps 0, 2 and 4 every rank times the reference
    kernel; those steps say so (``meta["probe"]``, per rank) and the comparison leaves them
    out (``used_steps``); the run's mean is ``run_reference``. Training is not changed."""
    from pipesim.predict import run_reference, used_steps
    from pipesim.processes.launch import launch
    from pipesim.runtime.predict import _calibration_config
    from pipesim.runtime.train import TrainJob
    from pipesim.timeline import Timeline
    cfg = dataclasses.replace(_calibration_config("1f1b", 4, 4), steps=6)
    plain = launch(TrainJob(cfg), 2)
    probed = launch(TrainJob(cfg, probe_every=2, cpu_time=True), 2)
    steps = [Timeline.from_dict(t) for t in probed.timelines]
    # cpu_time: each step says how many CPU seconds each rank's actions used, no more than
    # the wall time they took
    for step in steps:
        assert len(step.meta["cpu"]) == 2 and min(step.meta["cpu"]) > 0
        assert all(cpu <= sum(e.duration for e in row) + 1e-3
                   for cpu, row in zip(step.meta["cpu"], step.by_rank(), strict=True))
    assert all("cpu" not in t["meta"] for t in plain.timelines)
    assert [s for s, step in enumerate(steps) if "probe" in step.meta] == [0, 2, 4]
    assert all(len(steps[s].meta["probe"]) == 2 and min(steps[s].meta["probe"]) > 0
               for s in (0, 2, 4))
    assert used_steps(steps) == [3, 5]  # 0 and 1: warm-up (the optimizer's first update)
    mean = sum(t for s in (0, 2, 4) for t in steps[s].meta["probe"]) / 6
    assert run_reference(steps) == pytest.approx(mean)
    assert probed.losses == plain.losses
