"""Hostile and careless input: one clear line and exit 2 (1 for an invalid schedule), never a
traceback or a hang. Property-based tests fuzz the schedule parser and the cost-file readers."""

from __future__ import annotations

import contextlib
import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipesim.cli import main
from pipesim.costs import CostError, CostModel
from pipesim.ir import ParseError
from pipesim.layercosts import CostFileError, parse_layer_costs
from pipesim.schedule_io import parse_schedule
from pipesim.validate import validate

_FAST = settings(max_examples=150, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])
_ACTIONISH = st.text(alphabet=string.digits + "FIWB .,#\n:-()RUNSHADOVELP_;rank\t\r\x00é",
                     max_size=300)


@_FAST
@given(st.one_of(st.text(max_size=300), _ACTIONISH))
def test_schedule_parser_raises_only_parse_errors(text: str) -> None:
    for fmt in ("auto", "text", "csv"):
        try:
            sched = parse_schedule(text, fmt)
        except ParseError:
            continue
        validate(sched)  # whatever parses can be validated without raising


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers(-10**20, 10**20)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner,
                                                                  max_size=6),
    max_leaves=25)
_COST_KEYS = ["forward", "backward", "backward_input", "backward_weight", "activation_bytes",
              "param_bytes", "comm_latency", "comm_bandwidth", "unit", "stages",
              "send_overhead", "action_overhead"]


@_FAST
@given(st.dictionaries(st.sampled_from(_COST_KEYS), _JSON, max_size=8) | _JSON)
def test_cost_model_reader_raises_only_cost_errors(data: object) -> None:
    with contextlib.suppress(CostError):
        CostModel.from_dict(data)  # type: ignore[arg-type]


@_FAST
@given(_JSON | st.fixed_dictionaries({"layers": st.lists(
    st.dictionaries(st.sampled_from(["F", "I", "W", "B", "name", "activation_bytes",
                                     "param_bytes", "stash_bytes"]), _JSON), max_size=4)}))
def test_layer_cost_reader_raises_only_cost_file_errors(data: object) -> None:
    with contextlib.suppress(CostFileError):
        parse_layer_costs(json.dumps(data, allow_nan=True), "fuzz.json")


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.binary(max_size=400))
def test_validate_cli_on_junk_files(tmp_path_factory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("junk") / "schedule.txt"
    path.write_bytes(data)
    assert main(["validate", str(path)]) in (0, 1, 2)


BAD = [
    ["run", "-w", "0"], ["run", "-w", "x"], ["run", "-m", "-3"], ["run", "-b", "1.5"],
    ["run", "--hidden-size", "0"], ["run", "--schedule", "nope"], ["run", "--layers", "2"],
    ["run", "--schedule", "dualpipev", "-m", "4"], ["run", "--balance", "1,x"],
    ["run", "--balance", "1,1"], ["run", "--schedule", "1f1b", "--balance", "0,1,1,2"],
    ["run", "--backend", "mpi"], ["run", "--backend", "nccl"], ["run", "--synthetic", "F=x"],
    ["run", "--synthetic", "Q=1"], ["run", "--stall-timeout", "0"], ["run", "--steps", "0"],
    ["run", "--model", "resnet"], ["run", "--optimizer", "lbfgs"], ["run", "-w", "100000"],
    ["run", "-w", "4", "--dp", "3"],
    ["run", "-p", "2", "-w", "4", "--dp", "3"], ["run", "gpipe", "--schedule", "1f1b"],
    ["run", "-m", "2", "--num-microbatches", "4"], ["run", "--verify"],
    ["run", "--checkpoint-every", "2"],
    ["run", "--schedule", "1f1b", "--hidden-size", "1000000", "--layers", "64"],
    ["run", "--resume", "/nonexistent/dir", "--schedule", "1f1b", "--steps", "2"],
    ["run", "--file", "/nonexistent.txt"], ["run", "--trace", "/no/such/dir/t.json"],
    ["simulate", "nope"], ["simulate", "1f1b", "-p", "0"], ["simulate", "1f1b", "--cost", "F=a"],
    ["simulate", "1f1b", "--cost", "F=-1"], ["simulate", "1f1b", "--comm-bandwidth", "0"],
    ["simulate", "1f1b", "--costs", "/nonexistent.json"], ["simulate"],
    ["compare", "-m", "0"], ["compare", "--cost", "B=2"],
    ["schedule", "zbv", "-v", "3"], ["schedule", "interleaved-1f1b", "-p", "4", "-m", "9"],
    ["schedule", "1f1b", "-p", "100000", "-m", "100000"],
    ["validate", "/nonexistent.txt"], ["validate", "/"],
    ["plan", "--costs", "/nonexistent.json", "--ranks", "2", "--batch", "4"],
    ["nosuchcommand"],
]


@pytest.mark.parametrize("argv", BAD, ids=[" ".join(a) for a in BAD])
def test_a_mistake_gets_one_line_and_exit_2(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:  # argparse exits; our own errors return 2
        raise SystemExit(main(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pipesim") or err.startswith("usage"), err
    assert "Traceback" not in err
    assert len(err.splitlines()) <= 2, err
