"""Benchmark: tokens/s of one jitted forward+backward+AdamW step and of KV-cache generation, with
Hugging Face transformers (PyTorch, same config, same device, same run) beside each figure.

    python -m train.bench.speed [--presets tiny 124M] [--weights int8] [--json]

prints one row per (preset, what, impl) with steady-state tokens/s (median of --repeats timed
runs after a warm-up), MFU on GPUs/TPUs (train rows), the fraction of the memory-bandwidth
roofline (decode rows, ours and HF's: weights + KV cache read per step over the chip's bytes/s;
on a CPU the copy bandwidth measured at the start) and compile time, then our speed as a
multiple of HF's. On a CPU it first prints the model, its AVX-512 / AMX support and that
bandwidth; with --json each row carries them. `--weights bf16|int8` decodes ours from narrow
weights (`gptjax.model.weights`; "gptjax int8" in the impl column, its roofline counted in its
bytes) beside HF's usual fp32.
Ours run on gptjax's kept heap where it applies (`gptjax.heap.keep`, a CPU run); HF's rows then
run in a process of their own on glibc's defaults, as HF's users run it (`--hf-heap kept`: in
this one). Each of our rows carries the kernel policy it ran (`kernels`; `--kernels` and
`--attention` override it, as in pretraining).
Defaults follow the device: on CPU float32, train tiny and 124M at B 4, T 128 and decode batch 1;
on a GPU bfloat16 (HF under autocast with SDPA attention and fused AdamW, eager and
`torch.compile`d), train 124M and 355M at T 1024 with the largest batch that fits, decode 124M
and 1558M at batch 1 and 8, each measurement in a fresh process (`--apart`). `--compile-only`
just times compiling each preset's train step (from shapes: no memory). With --json, one JSON
object per line instead.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gptjax import generate, heap, init_params
from gptjax.accelerator import cpu_model
from gptjax.config import PRESETS, GPTConfig
from gptjax.kernels import resolve
from gptjax.kernels.policy import ATTENTION
from gptjax.model.gpt import REMAT
from gptjax.model.weights import NARROW, WEIGHTS, quantize
from gptjax.options import parse, run_cli
from gptjax.training import parallel
from gptjax.training.cross_entropy import ce_chunks_for
from gptjax.training.flops import decode_bytes, flops_per_token, peak_bandwidth, peak_flops
from gptjax.training.parallel import DTYPES
from gptjax.training.profile import StepTrace
from gptjax.training.steps import OptimConfig, init_state, lm_loss, make_optimizer, make_train_step
from train.bench import hf as bench_hf
from train.bench.suite import Row, copy_bandwidth, describe_machine, isa, timed

Preset = Literal[*PRESETS, "none"]  # "none": no rows of that kind


@dataclass(frozen=True)
class Options:
    presets: tuple[Preset, ...] | None = None
    """presets to train (unset: tiny 124M; GPU 124M 355M; none: no training rows)"""
    decode_presets: tuple[Preset, ...] | None = None
    """presets to decode (unset: --presets; GPU 124M 1558M; none: no decoding rows)"""
    batch_size: int | None = None
    """training batch B (unset: 4; GPU: largest that fits)"""
    seq_len: int | None = None
    """training sequence length T (unset: 128; GPU 1024)"""
    decode_batches: tuple[int, ...] | None = None
    """decoding batch sizes (unset: 1; GPU 1 8)"""
    prompt_len: int = 8
    """generation prompt length"""
    new_tokens: int = 128
    """tokens generated per run (per row)"""
    dtype: Literal[*DTYPES] = "auto"
    """compute dtype (auto: bfloat16 on GPU/TPU)"""
    weights: Literal[*WEIGHTS] = "fp32"
    """weight format of our decode rows (gptjax.model.weights); HF's stay in the dtype's"""
    remat: Literal[*REMAT] = "none"
    """remat of the train step's blocks"""
    attention: Literal[*ATTENTION] = "auto"
    """attention kernel of the train step"""
    kernels: str = ""
    """kernel policy overrides of the train step, e.g. head=padded,attention=xla"""
    repeats: int = 5
    """timed runs; the median is reported"""
    hf: bool = True
    """also time Hugging Face transformers (PyTorch)"""
    recipes: tuple[Literal["gpt2", "modern"], ...] = ("gpt2",)
    """train-step recipes: gpt2; modern (train/recipes/speedrun.toml's switches, Muon and
    document masking; no HF row)
    """
    compile_only: bool = False
    """only time compiling each preset's train step"""
    json: bool = False
    """print JSON lines instead of a table"""
    profile: str | None = None
    """write a jax.profiler trace of 3 train steps (per preset)"""
    hf_heap: Literal["default", "kept"] = "default"
    """on a CPU where ours run on gptjax's kept heap (gptjax/heap.py): HF's rows in a fresh
    process with glibc's defaults, as its users run it (default), or in this one (kept)"""
    apart: bool = field(default_factory=lambda: jax.default_backend() == "gpu")
    """each measurement in a fresh process (default: on a GPU, where JAX's and torch's memory
    outlive a case)"""


def resolved(opts: Options) -> Options:
    """`opts` with the device's defaults filled in."""
    gpu = jax.default_backend() == "gpu"
    presets = opts.presets or (("124M", "355M") if gpu else ("tiny", "124M"))
    real = lambda ps: tuple(p for p in ps if p != "none")  # "none": no rows of that kind
    return replace(
        opts,
        presets=real(presets),
        seq_len=opts.seq_len or (1024 if gpu else 128),
        decode_presets=real(opts.decode_presets or (("124M", "1558M") if gpu else presets)),
        decode_batches=opts.decode_batches or ((1, 8) if gpu else (1,)),
    )


def call(opts: Options, fn, *args, default_heap: bool = False):
    """fn(*args): here, or with --apart in a fresh process keeping its heap as this one does
    (on a GPU, JAX keeps the memory it grew to and torch its cache until the process ends, so
    cases run one after another in one process starve each other: HF's train step ran out of
    memory after ours on an H100); `default_heap`: in a fresh process on glibc's defaults."""
    if not (opts.apart or default_heap):
        return fn(*args)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(in_heap, heap.kept() and not default_heap, fn, *args).result()


def in_heap(keep: bool, fn, *args):
    """fn(*args) in a fresh process, which keeps its heap first if `keep` (`gptjax.heap`)."""
    if keep:
        heap.keep()
    return fn(*args)


def heap_of(opts: Options, impl: str) -> str:
    """The heap a row runs on: "kept" (gptjax.heap's settings) or "default" (glibc's). Where
    ours keep it, a row on the default heap needs a process of its own (`call`): settings and
    dispatch are fixed when a process starts."""
    kept = heap.kept() and (impl == "gptjax" or opts.hf_heap == "kept")
    return "kept" if kept else "default"


def kernels_of(opts: Options, what: str):
    """The kernel policy our row of `what` runs: a train step's with the options' overrides;
    decoding's as generation resolves it."""
    spec = (opts.kernels, opts.attention) if what.startswith("train") else ("", "auto")
    return resolve(jax.devices(), parallel.compute_dtype(opts.dtype), *spec)


MODERN = "train/recipes/speedrun.toml"
OPTIM_KEYS = ("optimizer", "muon_lr", "muon_momentum")


def modern(cfg: GPTConfig) -> tuple[GPTConfig, dict, bool]:
    """`cfg` with the modern recipe's switches (`MODERN`), its optimizer settings and whether it
    masks documents."""
    from train.bench.recipe import recipes

    on = recipes(str(Path(__file__).parents[2] / MODERN), ablate=False)["modern"]
    arch = {k: v for k, v in on.items() if k in GPTConfig.__dataclass_fields__}
    optim = {k: v for k, v in on.items() if k in OPTIM_KEYS}
    return replace(cfg, **arch), optim, bool(on.get("doc_mask"))


def train_step_for(cfg, opts: Options, B: int, optim=(), doc_mask: bool = False):
    oc = OptimConfig(lr=1e-4, **dict(optim))
    opt = make_optimizer(oc)
    dtype, kernels = parallel.compute_dtype(opts.dtype), kernels_of(opts, "train")
    # as pretrain's
    chunks = ce_chunks_for(B, opts.seq_len, cfg.vocab_size, cfg.emb_dim, kernels.ce_budget)
    loss = lm_loss(
        cfg, dtype, remat=opts.remat, ce_chunks=chunks, kernels=kernels, doc_mask=doc_mask
    )
    fresh = lambda: init_state(init_params(cfg, jax.random.key(0)), opt, jax.random.key(1))
    return jax.jit(make_train_step(loss, opt, oc), donate_argnums=0), fresh


def random_batch(cfg, B: int, T: int) -> dict:
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (B, T + 1)).astype(np.int32)
    return {"inputs": ids[:, :-1], "targets": ids[:, 1:]}


def compile_timed(step, state, batch) -> tuple[Any, float]:
    """(step compiled for these shapes, the seconds that took)."""
    start = time.perf_counter()
    return step.lower(state, batch).compile(), time.perf_counter() - start


def bench_train_jax(cfg, opts, batch, optim=(), doc_mask=False):
    step, fresh = train_step_for(cfg, opts, batch["inputs"].shape[0], optim, doc_mask)
    state = jax.jit(fresh)()
    step, compile_s = compile_timed(step, state, batch)
    box = [state]

    def run():
        box[0], metrics = step(box[0], batch)
        return metrics

    median = timed(run, opts.repeats).median_s
    if opts.profile:  # after the timed runs, so tracing never touches the figures
        trace = StepTrace(f"{opts.profile}/{cfg.n_layers}x{cfg.emb_dim}", 0)
        for i in range(3):
            trace.before(i)
            run()
            trace.after(i, box[0].params)
    return compile_s, median


def compile_seconds(cfg, opts: Options) -> float:
    """Seconds to compile the train step of `cfg` for batch B x T, from shapes alone."""
    step, fresh = train_step_for(cfg, opts, opts.batch_size or 4)
    batch = jax.eval_shape(lambda: random_batch(cfg, opts.batch_size or 4, opts.seq_len))
    return compile_timed(step, jax.eval_shape(fresh), batch)[1]


def largest_batch(cfg, opts: Options) -> int:
    """The largest power-of-two batch (up to 64) whose train step compiles and runs here."""
    for B in (64, 32, 16, 8, 4, 2, 1):
        try:
            bench_train_jax(
                cfg, replace(opts, repeats=1, profile=None), random_batch(cfg, B, opts.seq_len)
            )
            return B
        except Exception as e:  # out of memory: XlaRuntimeError RESOURCE_EXHAUSTED
            if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
                raise
    raise ValueError(f"preset {cfg}: not even batch 1 fits on {jax.devices()[0].device_kind}")


def bench_generate_jax(cfg, opts, prompt):
    dtype = parallel.compute_dtype(opts.dtype)
    params = quantize(jax.device_put(init_params(cfg, jax.random.key(0))), opts.weights)
    prompt = jnp.asarray(prompt)
    run = lambda: generate(cfg, params, prompt, max_new_tokens=opts.new_tokens, dtype=dtype)
    return timed(run, opts.repeats)


class Case(NamedTuple):
    """One row group: `ours(cfg, opts, data)` and HF's `theirs` on the same work."""

    cfg: GPTConfig
    preset: str
    what: str
    tokens: int  # per call
    ours: Callable
    theirs: Callable
    data: Any


def cases(opts: Options):
    gpu = jax.default_backend() == "gpu"
    for preset in opts.presets:
        cfg = GPTConfig.preset(preset, drop_rate=0.0)
        B = opts.batch_size or (call(opts, largest_batch, cfg, opts) if gpu else 4)
        batch = random_batch(cfg, B, opts.seq_len)
        if "gpt2" in opts.recipes:
            yield Case(
                cfg, preset, "train_step", B * opts.seq_len, bench_train_jax, bench_hf.train, batch
            )
        if "modern" in opts.recipes:
            new, optim, doc_mask = modern(cfg)
            ours = functools.partial(bench_train_jax, optim=tuple(optim.items()), doc_mask=doc_mask)
            yield Case(new, preset, "train_modern", B * opts.seq_len, ours, None, batch)
    for preset in opts.decode_presets:
        cfg = GPTConfig.preset(preset, drop_rate=0.0)
        for B in opts.decode_batches:
            rng = np.random.default_rng(0)
            prompt = rng.integers(0, cfg.vocab_size, (B, opts.prompt_len)).astype(np.int32)
            what, tokens = "generate" if B == 1 else f"generate_b{B}", B * opts.new_tokens
            yield Case(cfg, preset, what, tokens, bench_generate_jax, bench_hf.generate, prompt)


def measure(case: Case, impl: str, compiled: bool, opts: Options) -> tuple[float, float]:
    """(compile or warm-up seconds, median seconds) of one case by one implementation."""
    if impl == "gptjax":
        return case.ours(case.cfg, opts, case.data)
    return timed(case.theirs(case.cfg, opts, case.data, compiled=compiled), opts.repeats)


def roofline(case: Case, opts: Options, bandwidth: float, weights: str = "fp32") -> float:
    """Decoding's bound: B x bytes/s over the bytes a step reads (`decode_bytes`), in tok/s;
    narrow `weights` (a key of `weights.NARROW`) read fewer bytes for the matrices."""
    B = case.data.shape[0]
    itemsize = jnp.dtype(parallel.compute_dtype(opts.dtype)).itemsize
    S = opts.prompt_len + opts.new_tokens  # the cache every step reads
    weight_bytes = jnp.dtype(NARROW[weights]).itemsize if weights in NARROW else itemsize
    return B * bandwidth / decode_bytes(case.cfg, B, S, itemsize, weight_bytes)


def rows(opts: Options, bandwidth: float | None):
    peak, kind = peak_flops(), jax.devices()[0].device_kind
    on_cpu = jax.default_backend() == "cpu"  # which CPU: the figures depend on its kind
    host = dict(cpu=cpu_model(), isa=[n for n, on in isa().items() if on]) if on_cpu else {}
    ours = lambda what: {"kernels": kernels_of(opts, what).to_dict(), "device": kind}
    impls = [("gptjax", False)] + (bench_hf.variants() if opts.hf else [])
    for case in cases(opts):
        cfg, preset, what, tokens = case.cfg, case.preset, case.what, case.tokens
        for impl, comp in impls:
            if impl != "gptjax" and case.theirs is None:  # HF has no such model
                continue
            heap_here = heap_of(opts, impl)
            alone = heap.kept() and heap_here == "default"  # a process on glibc's defaults
            try:
                compile_s, median = call(opts, measure, case, impl, comp, opts, default_heap=alone)
            except Exception as e:  # torch.compile does not take every model everywhere
                if impl == "gptjax":
                    raise
                print(f"{preset} {what} {impl}: failed ({type(e).__name__}: {e})", flush=True)
                continue
            fields = ours(what) if impl == "gptjax" else {"device": bench_hf.device()}
            fields |= dict(host, heap=heap_here, compile_s=compile_s, tokens=tokens)
            row = Row(what, impl, preset, tokens / median, median, **fields)
            if what.startswith("train") and peak:
                row.mfu = row.tok_per_s * flops_per_token(cfg, opts.seq_len) / peak
            if what.startswith("generate"):
                row.weights = opts.weights if impl == "gptjax" else "fp32"
            if what.startswith("generate") and bandwidth:  # each against its weights' bound
                bound = roofline(case, opts, bandwidth, row.weights)
                row.roofline, row.bandwidth = row.tok_per_s / bound, bandwidth
            yield row


def impl_name(row: Row) -> str:
    """The table's impl column: ours with a narrow weight format named."""
    narrow = row.weights not in (None, "fp32") and row.impl == "gptjax"
    return f"gptjax {row.weights}" if narrow else row.impl


def main(argv=None) -> None:
    # Memory is held by the measurements alone (each in its own process on a GPU, see `apart`),
    # not by this process, which only asks what the devices are.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    heap.keep()  # before the first computation: ours run on the kept heap where it applies
    opts = resolved(parse(Options, argv, __doc__))
    if opts.compile_only:
        for preset in opts.presets:
            cfg = GPTConfig.preset(preset, drop_rate=0.0)
            print(
                f"{preset:>6} train step compiles in {compile_seconds(cfg, opts):.1f} s "
                f"(B {opts.batch_size or 4}, T {opts.seq_len}, remat {opts.remat}, "
                f"{jax.devices()[0].device_kind})",
                flush=True,
            )
        return
    # the chip's bytes/s from the table (`flops.CHIPS`); on a CPU, measured where a decode row's
    # roofline or the table's header shows it (first touching its 512 MiB takes seconds on a VM)
    shown = opts.decode_presets or not opts.json
    on_cpu = jax.default_backend() == "cpu"
    bandwidth = peak_bandwidth() or (copy_bandwidth() if on_cpu and shown else None)
    if not opts.json:
        if on_cpu:
            print(describe_machine(bandwidth), flush=True)
        if heap.kept():
            theirs = (
                "in its own process on glibc's defaults" if opts.hf_heap == "default" else "too"
            )
            hf = f"; HF's {theirs}" if opts.hf else ""
            print(f"heap: kept for ours (gptjax/heap.py){hf}", flush=True)
        print(f"kernels (ours, training): {kernels_of(opts, 'train').describe()}", flush=True)
        print(
            f"{'preset':>6} {'what':>12} {'impl':>16} {'tok/s':>10} {'mfu':>6} {'roof':>6} "
            f"{'compile s':>10} {'ours/HF':>8}"
        )
    ours = None
    for row in rows(opts, bandwidth):
        # HF's rows follow ours for the same (preset, what): the ratio goes on HF's rows.
        ours = row.tok_per_s if row.impl == "gptjax" else ours
        ratio = "" if row.impl == "gptjax" else f"{ours / row.tok_per_s:.2f}"
        if opts.json:
            print(row.json(), flush=True)
        else:
            mfu = "" if row.mfu is None else f"{100 * row.mfu:.1f}%"
            roof = "" if row.roofline is None else f"{100 * row.roofline:.1f}%"
            print(
                f"{row.preset:>6} {row.what:>12} {impl_name(row):>16} {row.tok_per_s:>10.1f} "
                f"{mfu:>6} {roof:>6} {row.compile_s:>10.2f} {ratio:>8}",
                flush=True,
            )


if __name__ == "__main__":
    run_cli(main)
