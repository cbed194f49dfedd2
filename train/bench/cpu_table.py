"""The README's CPU table rows for this machine: each CPU bench `--runs` times, and the medians.

    gptjax bench cpu-table [--runs 3] [--repeats 5]     # about 20 minutes on 2 cores

runs `gptjax bench --json` in a fresh process per run: float32 training (tiny, 124M) and 124M
decoding at batch 1, bf16 training, and 124M int8 decoding. It prints each run's figures (ours /
HF's tok/s in that run), then the median ratios as the README's rows, e.g.

    | Intel(R) Xeon(R) Processor, 2 cores (2026-12-05; median of 3), fp32 | 1.65x | 1.39x | 0.93x | 76% (37.8 tok/s; HF 83%, 40.8 tok/s) at 25.2 GB/s |
    | Intel(R) Xeon(R) Processor, 2 cores (2026-12-05; median of 3), bf16 | 2.20x | 1.98x | | |
    int8 decode of 124M at batch 1: 2.33x HF's fp32 (median of 3; 53% of its own bound)
"""  # noqa: E501

from __future__ import annotations

import datetime
import os
import statistics
from dataclasses import dataclass

from gptjax.accelerator import cpu_model
from gptjax.options import parse, run_cli
from train.bench.suite import Row, fresh

RUNS = {  # kind -> `gptjax bench` arguments
    "fp32": [],
    "bf16": ["--decode-presets", "none", "--dtype", "bfloat16"],
    "int8": ["--presets", "none", "--decode-presets", "124M", "--weights", "int8"],
}


@dataclass(frozen=True)
class Options:
    runs: int = 3
    """bench runs of each kind (the README's rows are medians of 3)"""
    repeats: int = 5
    """timed calls per measurement in each run (the bench's --repeats)"""

    def __post_init__(self):
        if self.runs < 1 or self.repeats < 1:
            raise ValueError(f"--runs and --repeats must be >= 1, got {self.runs}, {self.repeats}")


def bench(kind: str, repeats: int) -> list[Row]:
    """One `gptjax bench --json` run of `kind` in a fresh process: its rows."""
    run = fresh(["train.bench.speed", *RUNS[kind], "--repeats", str(repeats), "--json"])
    if run.returncode:
        raise ValueError(f"gptjax bench ({kind}) exited {run.returncode}: {run.error}")
    return run.rows


def pick(rows: list[Row], what: str, preset: str) -> tuple[Row, Row]:
    """(ours, HF's) row of one measurement in one run."""
    found = {r.impl.split()[0]: r for r in rows if r.what == what and r.preset == preset}
    if set(found) != {"gptjax", "hf-torch"}:
        raise ValueError(f"the bench printed no gptjax and hf-torch rows for {what} {preset}")
    return found["gptjax"], found["hf-torch"]


def ratio(runs: list[list[Row]], what: str, preset: str) -> float:
    """The median over runs of ours / HF's tok/s."""
    pairs = [pick(rows, what, preset) for rows in runs]
    return statistics.median(ours.tok_per_s / hf.tok_per_s for ours, hf in pairs)


def median_of(runs: list[list[Row]], what: str, preset: str, side: int, key: str) -> float:
    """The median over runs of ours' (side 0) or HF's (side 1) `key` in one measurement."""
    return statistics.median(getattr(pick(rows, what, preset)[side], key) for rows in runs)


def table(results: dict[str, list[list[Row]]], machine: str, day: str) -> list[str]:
    """The README's rows from {kind: [one run's rows, ...]}."""
    n = len(results["fp32"])
    head = f"| {machine} ({day}; median of {n})"
    train = lambda kind: [ratio(results[kind], "train_step", p) for p in ("tiny", "124M")]
    fp32 = results["fp32"]
    ours_roof, hf_roof = (median_of(fp32, "generate", "124M", s, "roofline") for s in (0, 1))
    ours_tok, hf_tok = (median_of(fp32, "generate", "124M", s, "tok_per_s") for s in (0, 1))
    bandwidth = median_of(fp32, "generate", "124M", 0, "bandwidth")
    decode = (
        f"{ratio(fp32, 'generate', '124M'):.2f}x | {100 * ours_roof:.0f}% ({ours_tok:.1f} tok/s; "
        f"HF {100 * hf_roof:.0f}%, {hf_tok:.1f} tok/s) at {bandwidth / 1e9:.1f} GB/s"
    )
    tiny, big = train("fp32")
    bf_tiny, bf_big = train("bf16")
    int8 = results["int8"]
    return [
        f"{head}, fp32 | {tiny:.2f}x | {big:.2f}x | {decode} |",
        f"{head}, bf16 | {bf_tiny:.2f}x | {bf_big:.2f}x | | |",
        f"int8 decode of 124M at batch 1: {ratio(int8, 'generate', '124M'):.2f}x HF's fp32 "
        f"(median of {len(int8)}; {100 * median_of(int8, 'generate', '124M', 0, 'roofline'):.0f}%"
        " of its own bound)",
    ]


def run_line(kind: str, rows: list[Row]) -> str:
    """e.g. "fp32: train_step tiny 3139.0 / 2059.0 1.52x, ..." for one run."""
    parts = []
    for r in rows:
        if r.impl.startswith("gptjax"):
            ours, hf = pick(rows, r.what, r.preset)
            parts.append(
                f"{r.what} {r.preset} {ours.tok_per_s:.1f} / {hf.tok_per_s:.1f} "
                f"{ours.tok_per_s / hf.tok_per_s:.2f}x"
            )
    return f"{kind}: " + ", ".join(parts)


def main(argv=None) -> None:
    opts = parse(Options, argv, __doc__)
    results: dict[str, list[list[Row]]] = {kind: [] for kind in RUNS}
    for i in range(opts.runs):  # kinds interleaved, so a slow hour touches them alike
        for kind in RUNS:
            results[kind].append(bench(kind, opts.repeats))
            print(f"run {i + 1}, {run_line(kind, results[kind][-1])}", flush=True)
    machine = f"{cpu_model()}, {os.cpu_count()} cores"
    print("\n".join(table(results, machine, datetime.date.today().isoformat())))


if __name__ == "__main__":
    run_cli(main)
