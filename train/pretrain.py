"""Pretrain a GPT on text, on one CPU, one GPU, many GPUs or a TPU slice, with the same command.

    python -m train.pretrain --data the-verdict --preset tiny --out runs/verdict

shows a progress bar with loss and tokens/s; at each eval prints train/val loss and a greedy
sample from --prompt; writes OUT/metrics.jsonl, OUT/loss.png and checkpoints in
OUT/checkpoints (continue with --resume). Sample afterwards with
`python -m gptjax.generate --ckpt OUT`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from gptjax import generate, parallel, tokenizer
from gptjax.checkpoint import RunCheckpoints, load_model
from gptjax.config import PRESETS, GPTConfig
from gptjax.corpus import Windows, load_tokens
from gptjax.data import train_val_split
from gptjax.model import init_params
from gptjax.options import option, parse, run_cli
from gptjax.plot import plot_losses
from gptjax.training import OptimConfig, init_state, make_optimizer, make_train_step
from train.evaluate import Evaluator


@dataclass(frozen=True)
class Options:
    data: str = option("the-verdict", "named dataset, .txt file or folder of .txt files")
    preset: str = option("tiny", "model size", choices=list(PRESETS))
    context_length: int | None = option(None, "tokens per window (default: the preset's)")
    batch_size: int = option(8, "global batch size B (all devices, all processes)")
    max_steps: int | None = option(None, "total optimizer steps (default: --epochs of data)")
    epochs: int = option(1, "passes over the training windows when --max-steps is not given")
    lr: float = option(4e-4, "peak learning rate")
    min_lr_ratio: float = option(0.1, "cosine decay ends at this fraction of --lr")
    warmup_steps: int = option(0, "linear warmup steps")
    weight_decay: float = option(0.1, "AdamW weight decay (>= 2-D weights only)")
    grad_clip: float = option(1.0, "global-norm clip; 0 disables")
    drop_rate: float = option(0.1, "dropout rate")
    grad_accum: int = option(1, "micro-batches per step")
    train_ratio: float = option(0.9, "leading fraction of the tokens used for training")
    eval_every: int = option(50, "steps between evaluations")
    eval_batches: int = option(5, "batches per loss estimate")
    ckpt_every: int = option(100, "steps between checkpoints")
    keep: int = option(3, "checkpoints kept")
    out: str = option("runs/default", "run directory")
    resume: bool = option(False, "continue from the latest checkpoint in --out")
    init_from: str | None = option(None, "start from a checkpoint, run or converted model")
    seed: int = option(0, "seed for init, shuffling and dropout")
    dtype: str = option("float32", "compute dtype", choices=["float32", "bfloat16"])
    parallel: str = option("jit", "data-parallel formulation", choices=["jit", "pmap"])
    fsdp: bool = option(False, "shard params and optimizer state over devices (jit only)")
    prompt: str = option("Every effort moves you", "prompt for the eval samples")
    sample_tokens: int = option(30, "tokens per eval sample")
    coordinator: str | None = option(None, "multi-host: coordinator host:port")
    num_processes: int | None = option(None, "multi-host: number of processes")
    process_id: int | None = option(None, "multi-host: this process's index")
    progress: bool = option(True, "show a progress bar")


def model_config(opts: Options) -> tuple[GPTConfig, dict | None]:
    if opts.init_from:
        cfg, params = load_model(opts.init_from)
        return dataclasses.replace(cfg, drop_rate=opts.drop_rate), params
    overrides = {"drop_rate": opts.drop_rate}
    if opts.context_length:
        overrides["context_length"] = opts.context_length
    return GPTConfig.preset(opts.preset, **overrides), None


def optim_config(opts: Options, total: int) -> OptimConfig:
    return OptimConfig(lr=opts.lr, weight_decay=opts.weight_decay, warmup_steps=opts.warmup_steps,
                       decay_steps=total, min_lr_ratio=opts.min_lr_ratio,
                       grad_clip=opts.grad_clip or None)  # fmt: skip


def start_state(opts, cfg, params, optimizer, ckpts: RunCheckpoints, mesh):
    """A fresh state, or the latest checkpoint's under --resume; laid out on the mesh."""
    if params is None:
        params = init_params(cfg, jax.random.key(opts.seed))
    fresh = lambda: init_state(params, optimizer, jax.random.PRNGKey(opts.seed + 1))
    abstract = jax.eval_shape(fresh)
    shardings = parallel.state_shardings(mesh, abstract, fsdp=opts.fsdp)
    latest = ckpts.latest_step()
    if not opts.resume:
        if latest is not None:
            raise ValueError(f"{opts.out} already has checkpoints (step {latest}); "
                             "pass --resume to continue it or choose another --out")  # fmt: skip
        return jax.jit(fresh, out_shardings=shardings)(), shardings
    if latest is None:
        raise ValueError(f"--resume: no checkpoint in {ckpts.directory}")
    saved = ckpts.meta(latest)["model"]
    if saved != cfg.to_dict():
        diff = {k: (saved.get(k), v) for k, v in cfg.to_dict().items() if saved.get(k) != v}
        raise ValueError(f"--resume: {opts.out} holds a different model config: {diff}")
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)  # fmt: skip
    return ckpts.restore(latest, target), shardings


def compile_step(opts, cfg, optimizer, oc, mesh, shardings):
    dtype = jnp.dtype(opts.dtype)
    if opts.parallel == "pmap":
        step = make_train_step(cfg, optimizer, oc, grad_accum=opts.grad_accum, dtype=dtype,
                               axis_name=parallel.AXIS)  # fmt: skip
        return jax.pmap(step, axis_name=parallel.AXIS, donate_argnums=0)
    step = make_train_step(cfg, optimizer, oc, grad_accum=opts.grad_accum, dtype=dtype)
    return jax.jit(step, in_shardings=(shardings, parallel.batch_sharding(mesh)),
                   out_shardings=(shardings, None), donate_argnums=0)  # fmt: skip


def next_batch(opts: Options, train: Windows, mesh, step: int, per_epoch: int):
    """The global batch of `step`: a function of (seed, step) only, so resuming is exact."""
    epoch, index = divmod(step, per_epoch)
    rows = train.rows(epoch, index, opts.batch_size, seed=opts.seed, shuffle=True)
    local = train.batch(rows[parallel.local_rows(opts.batch_size)])
    if opts.parallel == "pmap":
        return parallel.split_for_pmap(local)
    return parallel.global_batch(mesh, local, opts.batch_size)


def setup(opts: Options):
    cfg, params = model_config(opts)
    T = opts.context_length or cfg.context_length
    tokenizer.check_vocab(cfg.vocab_size, opts.init_from or f"preset {opts.preset}")
    if cfg.context_length < T:
        raise ValueError(f"--context-length {T} exceeds the model's {cfg.context_length}")
    lead = jax.process_index() == 0
    train_tok, val_tok = train_val_split(load_tokens(opts.data, progress=lead), opts.train_ratio)
    train = Windows(train_tok, T, T, name=f"{opts.data} (train split)")
    val = Windows(val_tok, T, T, name=f"{opts.data} (validation split)")
    per_epoch = train.batches_per_epoch(opts.batch_size)
    if per_epoch == 0:
        raise ValueError(f"{opts.data}: {len(train)} training windows, fewer than one batch "
                         f"of --batch-size {opts.batch_size}")  # fmt: skip
    return cfg, params, train, val, per_epoch


def main(argv=None) -> None:
    opts = parse(Options, argv, description=__doc__.split("\n\n")[0])
    parallel.init_distributed(opts.coordinator, opts.num_processes, opts.process_id)
    cfg, params, train, val, per_epoch = setup(opts)
    total = opts.max_steps or opts.epochs * per_epoch
    oc = optim_config(opts, total)
    optimizer = make_optimizer(oc)
    mesh = parallel.make_mesh()
    ckpts = RunCheckpoints(opts.out, keep=opts.keep)
    try:
        state, shardings = start_state(opts, cfg, params, optimizer, ckpts, mesh)
        step_fn = compile_step(opts, cfg, optimizer, oc, mesh, shardings)
        fit(opts, cfg, state, step_fn, (train, val, per_epoch), ckpts, mesh, total)
    finally:
        ckpts.close()  # waits for a save in flight, even on errors


def fit(opts: Options, cfg: GPTConfig, state, step_fn, data, ckpts, mesh, total: int) -> None:
    """Steps from state.step to `total`: log each, evaluate and checkpoint on schedule."""
    train, val, per_epoch = data
    start, pmap = int(state.step), opts.parallel == "pmap"
    log = RunLog(opts, cfg, start, total, train.T)
    evaluator = Evaluator(cfg, mesh, opts.batch_size, opts.eval_batches, jnp.dtype(opts.dtype))
    prompt = [log.enc.encode(opts.prompt)]
    # pmap keeps one copy per device; evals and checkpoints want one (taken only on those steps).
    single = parallel.unreplicate if pmap else lambda s: s
    state = parallel.replicate(state) if pmap else state
    for step in range(start, total):
        state, metrics = step_fn(state, next_batch(opts, train, mesh, step, per_epoch))
        done = step + 1
        record = log.step_record(done, metrics, pmap)
        if not math.isfinite(record["train_loss"]):
            raise ValueError(f"non-finite loss ({record['train_loss']}) at step {done}; stopped, "
                             f"the last good checkpoint is step {ckpts.latest_step()} in "
                             f"{ckpts.directory}")  # fmt: skip
        if done % opts.eval_every == 0 or done == total:
            params = single(state).params
            record.update(evaluator(params, train, val))
            log.sample(record, generate(cfg, params, prompt, max_new_tokens=opts.sample_tokens))
        log.write(record)
        if done % opts.ckpt_every == 0 or done == total:
            epoch, index = divmod(step, per_epoch)
            position = {"epoch": epoch, "batch": index + 1}
            ckpts.save(
                done, single(state), {"model": cfg.to_dict(), "step": done, "data": position}
            )
    log.close()


class RunLog:
    """Progress bar, OUT/metrics.jsonl (a record per step) and OUT/loss.png; process 0 writes."""

    def __init__(self, opts: Options, cfg: GPTConfig, start: int, total: int, T: int):
        out = Path(opts.out)
        self.lead = jax.process_index() == 0
        self.metrics, self.plot = out / "metrics.jsonl", out / "loss.png"
        self.tokens_per_step, self.start = opts.batch_size * T, start
        self.enc, self.t0 = tokenizer.gpt2(), time.perf_counter()
        self.bar = tqdm(total=total, initial=start, unit="step",
                        disable=not (self.lead and opts.progress))  # fmt: skip
        if not self.lead:
            return
        out.mkdir(parents=True, exist_ok=True)
        config = {"model": cfg.to_dict(), "options": dataclasses.asdict(opts)}
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        # On resume, drop records past the restored step: they are about to be redone.
        old = self.metrics.read_text().splitlines() if self.metrics.exists() else []
        kept = [line for line in old if line and json.loads(line)["step"] <= start]
        self.metrics.write_text("".join(line + "\n" for line in kept))

    def step_record(self, step: int, metrics, replicated: bool) -> dict:
        metrics = {k: float(v[0] if replicated else v) for k, v in metrics.items()}
        rate = (step - self.start) * self.tokens_per_step / (time.perf_counter() - self.t0)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{rate:,.0f}")
        return {
            "step": step, "train_loss": metrics["loss"], "lr": metrics["lr"],
            "grad_norm": metrics["grad_norm"], "tokens_seen": step * self.tokens_per_step,
        }  # fmt: skip

    def sample(self, record: dict, ids) -> None:
        if self.lead:
            text = self.enc.decode(np.asarray(ids[0]).tolist())
            self.bar.write(f"step {record['step']}: train loss {record['eval_train_loss']:.3f}, "
                           f"val loss {record['val_loss']:.3f} | {text!r}")  # fmt: skip

    def write(self, record: dict) -> None:
        if not self.lead:
            return
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")
        if "val_loss" in record:
            plot_losses(self.metrics, self.plot)

    def close(self) -> None:
        self.bar.close()
        if self.lead:
            print(f"metrics: {self.metrics}\nloss plot: {self.plot}")


if __name__ == "__main__":
    run_cli(main)
