"""The bench suite (`train.bench`): `gptjax bench --list` names every bench and `gptjax bench
NAME` runs any of them; rows round-trip through one record; one timing helper."""

import importlib
from pathlib import Path

import pytest

from train import bench
from train.bench.suite import BENCHES, Row, module, timed

HELPERS = {"__init__", "suite", "hf"}  # the suite's own modules, not benches


def test_the_list_names_every_bench_and_each_runs_by_name(capsys, tmp_path):
    bench.main(["--list"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(BENCHES)
    assert all(len(line.split(None, 1)[1]) > 20 for line in lines)  # what each one measures
    modules = {p.stem for p in (Path(bench.__file__).parent).glob("*.py")} - HELPERS
    assert {module(name).removeprefix("train.bench.") for name in BENCHES} == modules
    for name in BENCHES:
        assert callable(importlib.import_module(module(name)).main)
    bench.main(["checkpoint", "--preset", "nano", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "nano train state" in out and "checksums alone" in out
    with pytest.raises(ValueError, match="unknown bench 'nosuch'; expected one of: speed, cpu"):
        bench.main(["nosuch"])


def test_rows_round_trip_through_one_record():
    row = Row("generate", preset="124M", tok_per_s=38.5, roofline=0.76, kernels={"head": "cpu"})
    row.extra = {"shape": "4x4", "tokens_to_target": None}
    (back,) = Row.parse("CPU: some line\n" + row.json() + "\n")
    assert back == row
    assert "median_s" not in row.record() and row.record()["tokens_to_target"] is None


def test_timed_warms_up_then_takes_the_median_of_the_timed_calls():
    calls = []
    timing = timed(lambda: calls.append(len(calls)), repeats=3, warmup=2)
    assert len(calls) == 5 and timing.median_s >= 0 and timing.first_s >= 0
