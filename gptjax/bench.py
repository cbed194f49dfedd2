"""Benchmark: tokens/s of one jitted forward+backward+AdamW step and of KV-cache generation, with
Hugging Face transformers (PyTorch, same config, same machine, same run) beside each figure.

    python -m gptjax.bench [--presets tiny,124M] [--json]

prints one table row per (preset, what, impl) with steady-state tokens/s (median of --repeats
timed runs after a warm-up) and compile time, then our speed as a multiple of HF's. With --json,
one JSON object per line instead: impl, what, preset, tok_per_s, compile_s, median_s, ...
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from gptjax import generate, init_params
from gptjax.config import GPTConfig
from gptjax.options import option, parse, run_cli
from gptjax.profile import StepTrace
from gptjax.training import OptimConfig, init_state, lm_loss, make_optimizer, make_train_step


@dataclass(frozen=True)
class Options:
    presets: str = option("tiny,124M", "comma-separated presets")
    batch_size: int = option(4, "training batch size B")
    seq_len: int = option(128, "training sequence length T")
    prompt_len: int = option(8, "generation prompt length (batch 1)")
    new_tokens: int = option(128, "tokens generated per run")
    repeats: int = option(5, "timed runs; the median is reported")
    hf: bool = option(True, "also time Hugging Face transformers (PyTorch)")
    json: bool = option(False, "print JSON lines instead of a table")
    profile: str | None = option(None, "write a jax.profiler trace of 3 train steps (per preset)")


def timed(fn, repeats: int) -> tuple[float, float]:
    """(first-call overhead, i.e. compile or warm-up seconds, median seconds of `repeats` calls)."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    median = statistics.median(runs)
    return max(first - median, 0.0), median


def bench_train_jax(cfg, opts, batch):
    oc = OptimConfig(lr=1e-4)
    opt = make_optimizer(oc)
    state = init_state(init_params(cfg, jax.random.key(0)), opt, jax.random.key(1))
    step = jax.jit(make_train_step(lm_loss(cfg), opt, oc), donate_argnums=0)
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    box = [state]

    def run():
        box[0], metrics = compiled(box[0], batch)
        jax.block_until_ready(metrics)

    _, median = timed(run, opts.repeats)
    if opts.profile:  # after the timed runs, so tracing never touches the figures
        trace = StepTrace(f"{opts.profile}/{cfg.n_layers}x{cfg.emb_dim}", 0)
        for i in range(3):
            trace.before(i)
            run()
            trace.after(i, box[0].params)
    return compile_s, median


def bench_generate_jax(cfg, opts, prompt):
    params = jax.device_put(init_params(cfg, jax.random.key(0)))
    run = lambda: generate(cfg, params, prompt, max_new_tokens=opts.new_tokens).block_until_ready()
    return timed(run, opts.repeats)


def hf_model(cfg: GPTConfig):
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim,
        n_layer=cfg.n_layers, n_head=cfg.n_heads, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


def bench_train_hf(cfg, opts, batch):
    import torch

    model = hf_model(cfg).train()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    inputs, targets = (torch.tensor(batch[k], dtype=torch.long) for k in ("inputs", "targets"))

    def run():
        logits = model(inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()

    return timed(run, opts.repeats)


def bench_generate_hf(cfg, opts, prompt):
    import torch

    model = hf_model(cfg).eval()
    ids = torch.tensor(np.asarray(prompt), dtype=torch.long)

    def run():
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=opts.new_tokens,
                           do_sample=False, use_cache=True, pad_token_id=0)  # fmt: skip

    return timed(run, opts.repeats)


def rows_for(preset: str, opts: Options):
    cfg = GPTConfig.preset(preset, drop_rate=0.0)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, (opts.batch_size, opts.seq_len + 1)).astype(np.int32)
    batch = {"inputs": ids[:, :-1], "targets": ids[:, 1:]}
    prompt = jnp.asarray(rng.integers(0, cfg.vocab_size, (1, opts.prompt_len)), jnp.int32)
    cases = [
        ("train_step", opts.batch_size * opts.seq_len, bench_train_jax, bench_train_hf, batch),
        ("generate", opts.new_tokens, bench_generate_jax, bench_generate_hf, prompt),
    ]
    for what, tokens, ours, theirs, data in cases:
        for impl, fn in [("gptjax", ours), ("hf-torch", theirs)][: 2 if opts.hf else 1]:
            compile_s, median = fn(cfg, opts, data)
            yield {
                "impl": impl, "what": what, "preset": preset, "tok_per_s": tokens / median,
                "median_s": median, "compile_s": compile_s, "tokens": tokens,
                "device": jax.devices()[0].device_kind if impl == "gptjax" else "cpu",
            }  # fmt: skip


def main(argv=None) -> None:
    opts = parse(Options, argv, description=__doc__.split("\n\n")[0])
    if not opts.json:
        print(
            f"{'preset':>6} {'what':>10} {'impl':>9} {'tok/s':>10} {'compile s':>10} {'ours/HF':>8}"
        )
    ours = None
    for preset in opts.presets.split(","):
        for row in rows_for(preset.strip(), opts):
            # HF's row follows ours for the same (preset, what): the ratio goes on HF's row.
            ratio = "" if row["impl"] == "gptjax" else f"{ours / row['tok_per_s']:.2f}"
            ours = row["tok_per_s"]
            if opts.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"{row['preset']:>6} {row['what']:>10} {row['impl']:>9} {ours:>10.1f} "
                      f"{row['compile_s']:>10.2f} {ratio:>8}", flush=True)  # fmt: skip


if __name__ == "__main__":
    run_cli(main)
