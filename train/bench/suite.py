"""What every bench shares: the list of benches (`gptjax bench --list`), one row record their
`--json` lines are written and read back as, one timing helper, and what machine they ran on
(the CPU's model, the instruction sets that decide its matmul speed, and the memory bandwidth
it reaches copying an array, which bounds decoding on a CPU: every weight is read once a
step)."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import numpy as np

from gptjax.accelerator import cpu_flags, cpu_model

# name -> what it measures, in one line. `gptjax bench NAME` runs it: train/bench/NAME.py, its
# dashes as underscores (`module`).
BENCHES = {
    "speed": "tokens/s of our train step and KV-cache decoding beside HF transformers (default)",
    "cpu-table": "the README's CPU rows: the fp32, bf16 and int8 speed benches 3 times, medians",
    "gpu-check": "one prepared GPU check: scatter-add, attention kernels, decoding, HF, big models",
    "recipe": "tokens to GPT-2's final loss, the modern recipe's switches one at a time",
    "weights": "quality of narrow decode weights (bf16, int8) against fp32",
    "classify": "a classifier's train step by what trains: parameters, optimizer memory, time",
    "checkpoint": "what checksums add to saving and restoring a train state",
    "convert-memory": "peak resident memory and time of converting an OpenAI checkpoint",
    "serve-load": "the server under concurrent clients: latency, tokens/s, answers equal",
}


def module(name: str) -> str:
    """The module of bench `name`."""
    return "train.bench." + name.replace("-", "_")


class Timing(NamedTuple):
    first_s: float  # the warm-up calls' overhead over a steady call: compiling, mostly
    median_s: float  # the median of the timed calls


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> Timing:
    """`warmup` calls of fn, then `repeats` timed ones, each waited for (`block_until_ready`
    on what it returns)."""
    start = time.perf_counter()
    for _ in range(warmup):
        jax.block_until_ready(fn())
    first = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        runs.append(time.perf_counter() - start)
    median = statistics.median(runs)
    return Timing(max(first - warmup * median, 0.0), median)


@dataclass
class Row:
    """One measurement, as a bench's `--json` prints it (one JSON object a line) and cpu-table
    and gpu-check read it back (`Row.parse`). Fields a bench does not fill stay out of the
    JSON; `extra` holds a bench's own figures, written beside the rest."""

    what: str  # train_step, generate, scatter_add, a recipe's or a weight format's name ...
    impl: str = "gptjax"
    preset: str | None = None
    tok_per_s: float | None = None
    median_s: float | None = None
    compile_s: float | None = None
    tokens: int | None = None
    mfu: float | None = None
    roofline: float | None = None  # share of the memory-bandwidth bound (decoding)
    bandwidth: float | None = None  # bytes/s the roofline is counted at
    ms: float | None = None
    weights: str | None = None
    device: str | None = None
    heap: str | None = None  # kept (gptjax.heap) or default
    kernels: dict | None = None  # our rows: the kernel policy that ran
    cpu: str | None = None
    isa: list[str] | None = None
    extra: dict = field(default_factory=dict)

    def record(self) -> dict:
        """The fields that are set, `extra`'s beside them."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        extra = fields.pop("extra")
        return fields | extra

    def json(self) -> str:
        return json.dumps(self.record())

    @classmethod
    def of(cls, record: dict) -> Row:
        """The row a `record()` was made from."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        rest = dict(record)
        return cls(**{k: rest.pop(k) for k in known & record.keys()}, extra=rest)

    @classmethod
    def parse(cls, output: str) -> list[Row]:
        """The rows among a bench's output lines (other lines are skipped)."""
        return [cls.of(json.loads(x)) for x in output.splitlines() if x.startswith("{")]


class Run(NamedTuple):
    rows: list[Row]
    notes: list[str]  # the other lines it printed
    error: str  # the last line on stderr
    returncode: int


def fresh(argv: list[str], timeout: float | None = None, env: dict | None = None) -> Run:
    """`python -m ARGV...` (a bench with --json) in a fresh process, read back; past `timeout`
    seconds, subprocess.TimeoutExpired."""
    done = subprocess.run(
        [sys.executable, "-m", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    notes = [x for x in done.stdout.splitlines() if x and not x.startswith("{")]
    error = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return Run(Row.parse(done.stdout), notes, error, done.returncode)


# /proc/cpuinfo flag -> the name people know it by
ISA = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX-512 BF16", "amx_bf16": "AMX-BF16",
       "amx_int8": "AMX-INT8"}  # fmt: skip


def isa() -> dict[str, bool]:
    """{AVX2, AVX-512, ...: present?} from the CPU's flags (all False where unreadable)."""
    flags = cpu_flags()
    return {name: flag in flags for flag, name in ISA.items()}


def copy_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """Bytes/s moved copying a `mib` MiB array into another (read + write, as STREAM's Copy
    counts them), median of `repeats` after a first touch: what one process reaches on this
    machine, the bound a decode step that reads its weights once is held to."""
    src = np.ones(mib << 18, np.float32)  # mib MiB
    dst = np.empty_like(src)  # its pages mapped by the warm-up copy
    return 2 * src.nbytes / timed(lambda: np.copyto(dst, src), repeats).median_s


def describe_machine(bandwidth: float | None) -> str:
    """e.g. "CPU: Intel(R) Xeon(R) Processor, 2 cores | AVX2 yes, AVX-512 yes, ... | copy
    bandwidth 20.1 GB/s"."""
    flags = ", ".join(f"{name} {'yes' if on else 'no'}" for name, on in isa().items())
    line = f"CPU: {cpu_model()}, {os.cpu_count()} cores | {flags}"
    return line + (f" | copy bandwidth {bandwidth / 1e9:.1f} GB/s" if bandwidth else "")
