"""One prepared GPU check: what a short GPU budget should measure, in one command.

    python -m train.bench.gpu_check --out gpu-check.json            # on the GPU, < 8 min
    python -m train.bench.gpu_check --dry --out /tmp/gpu-check.json # CPU: nano, a few steps

prints a table (one row per case: status, tokens/s, MFU or roofline fraction, seconds, note)
and writes one JSON with the environment (driver, CUDA, jax, jaxlib, plugin, device kind,
scatter-add workaround) and every case's rows. The cases, most important first:

- scatter-add, float32, the embedding gradient's shape (50,304 x 768 table, 512K updates over
  2K distinct rows), ms per call with and without the workaround (`gptjax.accelerator`);
- 124M train step, T 1024, bfloat16, for each attention kernel (cudnn, xla, pallas,
  reference) at the largest batch that fits, with MFU; and the modern recipe's step
  (train/recipes/speedrun.toml: switches, Muon, document masking) beside GPT-2's;
- KV decode of 124M and 1558M at batch 1 and 8 (tokens/s, fraction of the bandwidth
  roofline), and Hugging Face torch on the same GPU for 124M train and decode;
- 355M; 774M and 1558M with --remat block (does it fit? MFU).

Every case runs in a fresh process (`train.bench.speed --json`, or this module's own scatter
check) under its own time limit, and is skipped, with the reason, when what is left of
--budget is less than that limit. --dry runs the same machinery on the nano preset so a CPU
test keeps it working.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from typing import NamedTuple

from gptjax.files import write_json
from gptjax.options import parse, run_cli
from train.bench.suite import Row, fresh, timed


@dataclass(frozen=True)
class Options:
    out: str = "gpu-check.json"
    """the JSON to write"""
    budget: float = 450.0
    """seconds for all cases; a case whose limit does not fit in what is left is skipped"""
    dry: bool = False
    """the nano preset and a few steps (a CPU check of this script)"""
    scatter: str | None = None
    """internal: time one scatter-add of ROWSxDIMxUPDATESxDISTINCT, print one JSON line"""


class Case(NamedTuple):
    name: str
    limit: float  # seconds
    argv: list[str]  # after `python -m`
    env: tuple[tuple[str, str], ...] = ()  # variables set for this case


SCATTER_FULL = "50304x768x524288x2048"
SPEED = ["train.bench.speed", "--json", "--repeats", "5"]


def cases(dry: bool) -> list[Case]:
    """The cases in the order they run; --dry: the same kinds on the nano preset."""
    off = (("GPTJAX_NO_SCATTER_WORKAROUND", "1"),)
    scatter = ["train.bench.gpu_check", "--scatter", "512x16x4096x64" if dry else SCATTER_FULL]
    if dry:
        # HF's rows in the bench's own process (on a CPU they would each take a fresh one on
        # glibc's heap: seconds of importing torch again, which the check does not need)
        small = ["--seq-len", "32", "--new-tokens", "8", "--repeats", "2", "--batch-size", "2"]
        small += ["--hf-heap", "kept"]
        return [
            Case("scatter-add, workaround", 60, scatter),
            Case("scatter-add, no workaround", 60, scatter, off),
            Case("nano train (GPT-2, modern) + decode, HF", 180, [*SPEED, *small, "--presets",
                 "nano", "--decode-presets", "nano", "--attention", "reference", "--recipes",
                 "gpt2", "modern"]),
        ]  # fmt: skip
    train = [*SPEED, "--seq-len", "1024", "--dtype", "bfloat16", "--decode-presets", "none"]
    kernel = lambda k: [*train, "--presets", "124M", "--attention", k, "--no-hf"]
    return [
        Case("scatter-add, workaround", 60, scatter),
        Case("scatter-add, no workaround", 90, scatter, off),
        Case("124M train, cudnn", 100, kernel("cudnn")),
        Case("124M train, xla", 100, kernel("xla")),
        Case("124M train, GPT-2 and modern recipes", 150, [*train, "--presets", "124M",
             "--recipes", "gpt2", "modern", "--no-hf"]),
        Case("decode 124M, 1558M", 150, [*SPEED, "--presets", "none", "--decode-presets",
             "124M", "1558M", "--decode-batches", "1", "8", "--dtype", "bfloat16", "--no-hf"]),
        Case("124M train + decode, HF torch", 200, [*train, "--presets", "124M",
             "--decode-presets", "124M", "--decode-batches", "1"]),
        Case("355M train", 120, [*train, "--presets", "355M", "--no-hf"]),
        Case("124M train, pallas", 100, kernel("pallas")),
        Case("124M train, reference", 100, kernel("reference")),
        Case("774M train, remat block", 150, [*train, "--presets", "774M", "--remat", "block",
             "--no-hf"]),
        Case("1558M train, remat block", 200, [*train, "--presets", "1558M", "--remat",
             "block", "--no-hf"]),
    ]  # fmt: skip


def environment() -> dict:
    """Driver, CUDA, jax / jaxlib / plugin versions, devices and the workaround, as seen by a
    process that imported gptjax (so the workaround was decided as in any run)."""
    import jax

    from gptjax import accelerator

    env = {
        "versions": accelerator.versions(),
        "devices": [d.device_kind for d in jax.devices()],
        "backend": jax.default_backend(),
        "scatter_workaround": accelerator.SCATTER_WORKAROUND,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    try:
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
        for key in ("Driver Version", "CUDA Version"):
            if key in smi:
                env[key.lower().replace(" ", "_")] = smi.split(key + ":")[1].split()[0]
    except (OSError, subprocess.SubprocessError):
        pass  # no NVIDIA driver here
    return env


def scatter_ms(spec: str, repeats: int = 10) -> Row:
    """Median ms of table.at[ids].add(updates) for ROWSxDIMxUPDATESxDISTINCT: float32, the ids
    drawn from DISTINCT rows (many updates per row, as token ids in a batch)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gptjax import accelerator

    rows, dim, updates, distinct = map(int, spec.split("x"))
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.choice(rng.choice(rows, distinct, replace=False), updates))
    values = jnp.ones((updates, dim), jnp.float32)
    add = jax.jit(lambda t, i, v: t.at[i].add(v))
    table = jnp.zeros((rows, dim), jnp.float32)
    ms = 1e3 * timed(lambda: add(table, ids, values), repeats).median_s
    extra = {"workaround": accelerator.SCATTER_WORKAROUND, "shape": spec}
    return Row("scatter_add", ms=ms, extra=extra)


def run_case(case: Case, left: float) -> dict:
    """One case in a fresh process: its JSON rows, or why it has none."""
    out = {"case": case.name, "limit_s": case.limit}
    if case.limit > left:
        return out | {"status": "skipped", "note": f"{left:.0f} s of the budget left"}
    start = time.perf_counter()
    try:
        run = fresh(case.argv, case.limit, dict(case.env))
    except subprocess.TimeoutExpired:
        return out | {"status": "timeout", "seconds": case.limit, "note": "past its limit"}
    rows = [row.record() for row in run.rows]
    out |= {"seconds": time.perf_counter() - start, "rows": rows}
    if run.returncode != 0 or not rows:
        return out | {"status": "failed", "note": run.error[:200]}
    return out | {"status": "ok", "note": "; ".join(run.notes)[:200]}


def table(results: list[dict]) -> str:
    lines = [f"{'case':<32} {'status':>8} {'row':<34} {'tok/s or ms':>12} {'mfu/roof':>9} {'s':>6}"]
    for r in results:
        for i, row in enumerate([Row.of(x) for x in r.get("rows", [])] or [Row("", impl="")]):
            what = " ".join(filter(None, (row.preset, row.what, row.impl))) or r.get("note", "")
            value = next((v for v in (row.tok_per_s, row.ms) if v is not None), None)
            frac = next((v for v in (row.mfu, row.roofline) if v is not None), None)
            seconds = f"{r['seconds']:.0f}" if i == 0 and "seconds" in r else ""
            case, status = (r["case"], r["status"]) if i == 0 else ("", "")
            value = "" if value is None else f"{value:.1f}"
            frac = "" if frac is None else f"{100 * frac:.1f}%"
            lines.append(f"{case:<32} {status:>8} {what:<34.34} {value:>12} {frac:>9} {seconds:>6}")
    return "\n".join(lines)


def main(argv=None) -> None:
    # This process only asks what the devices are: the cases, each in its own process, get
    # the memory (jax would otherwise take 75% of the GPU here).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    opts = parse(Options, argv, __doc__)
    if opts.scatter:
        print(scatter_ms(opts.scatter).json(), flush=True)
        return
    start = time.perf_counter()
    report = {"environment": environment(), "dry": opts.dry, "cases": []}
    for case in cases(opts.dry):
        left = opts.budget - (time.perf_counter() - start)
        report["cases"].append(run_case(case, left))
        write_json(opts.out, report)  # what is done so far survives a cut
    report["seconds"] = time.perf_counter() - start
    write_json(opts.out, report)
    print(json.dumps(report["environment"]))
    print(table(report["cases"]))
    print(f"wrote {opts.out} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    run_cli(main)
