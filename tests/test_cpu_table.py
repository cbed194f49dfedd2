"""`gptjax bench cpu-table`: the README's CPU rows from the bench's rows, medians of runs."""

import pytest

from train.bench import cpu_table
from train.bench.suite import Row


def row(impl, what, preset, tok_per_s, **fields):
    """A row as the bench's --json line carries it, read back through the record."""
    (parsed,) = Row.parse(Row(what, impl, preset, tok_per_s, **fields).json())
    return parsed


def fp32_run(scale):
    """One fp32 run: ours at `scale` times HF everywhere (decode: ours 38, HF 38 / scale)."""
    decode = dict(bandwidth=25.2e9)
    return [
        row("gptjax", "train_step", "tiny", 3000 * scale),
        row("hf-torch", "train_step", "tiny", 3000),
        row("gptjax", "train_step", "124M", 260 * scale),
        row("hf-torch", "train_step", "124M", 260),
        row("gptjax", "generate", "124M", 38.0, roofline=0.76, **decode),
        row("hf-torch", "generate", "124M", 38.0 / scale, roofline=0.83, **decode),
    ]


def test_rows_are_the_medians_of_ours_over_hf_in_each_run():
    results = {
        "fp32": [fp32_run(s) for s in (1.5, 1.2, 2.0)],
        "bf16": [[row(i, "train_step", p, t) for i, p, t in
                  [("gptjax", "tiny", 4), ("hf-torch", "tiny", 2),
                   ("gptjax", "124M", 3), ("hf-torch", "124M", 1)]]] * 3,
        "int8": [[row("gptjax int8", "generate", "124M", t, roofline=0.5),
                  row("hf-torch", "generate", "124M", 40.0, roofline=0.8)] for t in (90, 100, 95)],
    }  # fmt: skip
    fp32, bf16, int8 = cpu_table.table(results, "Some CPU, 2 cores", "2026-12-05")
    assert fp32 == (
        "| Some CPU, 2 cores (2026-12-05; median of 3), fp32 | 1.50x | 1.50x | 1.50x "
        "| 76% (38.0 tok/s; HF 83%, 25.3 tok/s) at 25.2 GB/s |"
    )
    assert bf16 == "| Some CPU, 2 cores (2026-12-05; median of 3), bf16 | 2.00x | 3.00x | | |"
    assert int8.startswith("int8 decode of 124M at batch 1: 2.38x HF's fp32 (median of 3; 50%")
    line = cpu_table.run_line("int8", results["int8"][0])
    assert line == "int8: generate 124M 90.0 / 40.0 2.25x"


def test_a_run_without_hf_rows_is_a_clear_error():
    with pytest.raises(ValueError, match="no gptjax and hf-torch rows for train_step tiny"):
        cpu_table.pick([row("gptjax", "train_step", "tiny", 1.0)], "train_step", "tiny")
