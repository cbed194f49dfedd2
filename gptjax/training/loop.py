"""The one training loop: pretraining and every finetuning task run through `run(opts, task)`.

A task says what is trained and on what (data, loss, which parameters, how to evaluate and what
to do at the end); the loop does the rest the same way for all: data-parallel steps (jit over a
mesh, FSDP or pmap), a batch that is a function of (seed, step) so `--resume` is exact,
evaluations and checkpoints on schedule, OUT/metrics.jsonl, plots and a progress bar.
"""

from __future__ import annotations

import json
import math
import signal
import sys
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import jax
import numpy as np

from gptjax.options import choice_or_flag
from gptjax.training import parallel, trackers
from gptjax.training.checkpoint import RunCheckpoints
from gptjax.training.checksum import ChecksumError
from gptjax.training.guard import RunLock, StopSignals
from gptjax.training.parallel import DTYPES
from gptjax.training.profile import StepTrace
from gptjax.training.runlog import RunLog
from gptjax.training.steps import (
    LossFn,
    OptimConfig,
    Trainable,
    init_state,
    make_optimizer,
    make_train_step,
)

RESUME = choice_or_flag(("auto", "always", "never"), alone="always")


@dataclass(frozen=True)
class RunOptions:
    """What the loop needs of any script's options (scripts subclass it)."""

    batch_size: int = 8
    """global batch size B (all devices, all processes)"""
    max_steps: int | None = None
    """total optimizer steps (default: --epochs of data)"""
    epochs: int = 1
    """passes over the training data when --max-steps is not given"""
    lr: float = 4e-4
    """peak learning rate"""
    min_lr_ratio: float = 0.1
    """cosine decay ends at this fraction of --lr"""
    min_lr: float | None = None
    """cosine decay ends at this rate (instead of the ratio)"""
    b1: float = 0.9
    """AdamW beta1"""
    b2: float = 0.999
    """AdamW beta2 (GPT-2 reproductions use 0.95)"""
    warmup_steps: int = 0
    """linear warmup steps"""
    weight_decay: float = 0.1
    """AdamW weight decay (>= 2-D weights only)"""
    grad_clip: float = 1.0
    """global-norm clip; 0 disables"""
    grad_accum: int = 1
    """micro-batches per step"""
    eval_every: int = 50
    """steps between evaluations"""
    eval_batches: int = 5
    """batches per loss estimate"""
    ckpt_every: int = 100
    """steps between checkpoints"""
    keep: int = 3
    """checkpoints kept"""
    out: str = "runs/default"
    """run directory"""
    resume: RESUME = "auto"
    """auto: continue from the newest intact checkpoint in --out if there is one, else start
    fresh (so a requeued job reruns the same command); always (or --resume alone): there must be
    one; never: refuse an --out that has checkpoints
    """
    init_from: str | None = None
    """start from a checkpoint, run or converted model"""
    seed: int = 0
    """seed for init, shuffling and dropout"""
    dtype: Literal[*DTYPES] = "float32"
    """compute dtype (auto: bfloat16 on GPU/TPU, float32 on CPU)"""
    log_every: int = 10
    """steps between fetches of the metrics from the devices (each step is still logged; checkpoints
    and evals fetch first)
    """
    parallel: Literal["jit", "pmap"] = "jit"
    """data-parallel formulation"""
    fsdp: bool = False
    """shard params and optimizer state over devices (jit only)"""
    coordinator: str | None = None
    """multi-host: coordinator host:port"""
    num_processes: int | None = None
    """multi-host: number of processes"""
    process_id: int | None = None
    """multi-host: this process's index"""
    progress: bool = True
    """show a progress bar"""
    profile: str | None = None
    """write a jax.profiler trace of 3 steady steps here"""
    log_to: str = "jsonl"
    """where the records go, comma-separated: jsonl (OUT/metrics.jsonl, always written),
    tensorboard (OUT/tensorboard), wandb (W&B; WANDB_MODE=offline works without an account)
    """
    wandb_project: str | None = None
    """W&B project (default: $WANDB_PROJECT, else gptjax)"""
    wandb_entity: str | None = None
    """W&B entity, a user or team (default: $WANDB_ENTITY, else your default entity)"""


class Dataset(Protocol):
    """Training examples: `Windows` of text, `textdata.Examples`, ..."""

    def __len__(self) -> int: ...
    def batches_per_epoch(self, B: int) -> int: ...
    def rows(self, epoch: int, index: int, B: int, *, seed: int, shuffle: bool) -> np.ndarray: ...
    def batch(self, rows: np.ndarray) -> dict[str, np.ndarray]: ...


class Task(Protocol):
    """What a script plugs into the loop."""

    train: Dataset
    identity: dict  # in every checkpoint's meta; --resume must find it unchanged ("model": cfg)
    loss_fn: LossFn  # (params, batch, rng, train) -> (loss_sum, count)
    trainable: Trainable | None  # path predicate; None trains everything
    seen: tuple[str, int]  # x axis of the log: ("tokens_seen", tokens per row), ...
    # file -> (y label, {metric key: label}), or a list of those: panels side by side
    plots: dict[str, tuple[str, dict[str, str]] | list[tuple[str, dict[str, str]]]]

    def describe(self, params) -> str: ...  # a line printed at the start (parameter counts)
    def init_params(self) -> Any: ...  # the starting params (not called on --resume)
    def abstract_params(self) -> Any: ...  # their shapes (jax.eval_shape), for --resume
    def evaluate(self, params, step: int) -> tuple[dict, str]: ...  # metrics, line to print
    def finish(self, params) -> None: ...  # after the last step: results, exports


def run(opts: RunOptions, task: Task) -> None:
    """Train `task` from step 0 (or the latest checkpoint, see --resume) to the last step."""
    trackers.check_installed(trackers.parse_log_to(opts.log_to))
    per_epoch = task.train.batches_per_epoch(opts.batch_size)
    if per_epoch == 0:
        raise ValueError(
            f"{len(task.train)} training examples, fewer than one batch of "
            f"--batch-size {opts.batch_size}"
        )
    total = opts.max_steps or opts.epochs * per_epoch
    ratio = opts.min_lr_ratio if opts.min_lr is None else opts.min_lr / opts.lr
    oc = OptimConfig(
        lr=opts.lr,
        weight_decay=opts.weight_decay,
        warmup_steps=opts.warmup_steps,
        decay_steps=total,
        min_lr_ratio=ratio,
        b1=opts.b1,
        b2=opts.b2,
        grad_clip=opts.grad_clip or None,
    )
    optimizer = make_optimizer(oc)
    mesh = parallel.make_mesh()
    with RunLock(opts.out):
        ckpts = RunCheckpoints(opts.out, keep=opts.keep)
        try:
            state, shardings = start_state(opts, task, optimizer, ckpts, mesh)
            if int(state.step) >= total:
                return say(
                    f"{opts.out}: already finished (step {int(state.step)} of {total}); "
                    "nothing to do"
                )
            step_fn = compile_step(opts, task, optimizer, oc, mesh, shardings)
            fit(opts, task, state, step_fn, ckpts, mesh, total, per_epoch)
        finally:
            ckpts.close()  # waits for a save in flight, even on errors


def start_state(opts: RunOptions, task: Task, optimizer, ckpts: RunCheckpoints, mesh):
    """A fresh state, or the latest intact checkpoint's (see --resume); laid out on the mesh."""
    resume = resuming(opts, ckpts)
    params = None if resume else task.init_params()
    fresh = lambda p: init_state(p, optimizer, jax.random.PRNGKey(opts.seed + 1), task.trainable)
    abstract = jax.eval_shape(fresh, params if params is not None else task.abstract_params())
    shardings = parallel.state_shardings(mesh, abstract, fsdp=opts.fsdp)
    if not resume:
        return jax.jit(fresh, out_shardings=shardings)(params), shardings
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    return restore_intact(opts, task, ckpts, target), shardings


def resuming(opts: RunOptions, ckpts: RunCheckpoints) -> bool:
    """Whether this run continues from a checkpoint in --out, by --resume auto|always|never."""
    latest, mode = ckpts.latest_step(), opts.resume
    if latest is None:
        if mode == "always":
            raise ValueError(f"--resume always: no checkpoint in {ckpts.directory}")
        if mode == "auto":
            say(f"--resume auto: no checkpoint in {ckpts.directory}; starting fresh")
        return False
    if mode == "never":
        raise ValueError(
            f"{opts.out} already has checkpoints (step {latest}), which --resume never refuses; "
            "run with --resume auto to continue that run, or choose another --out"
        )
    say(f"--resume {mode}: continuing from checkpoint {latest} in {ckpts.directory}")
    return True


def restore_intact(opts: RunOptions, task: Task, ckpts: RunCheckpoints, target):
    """The newest checkpoint whose files are whole and whose arrays match their checksums;
    damaged newer ones are set aside (saying so), and their steps are redone from the intact one.
    Any other failure to read one stops the run, leaving every checkpoint where it is."""
    for step in reversed(ckpts.all_steps()):
        try:
            check_identity(opts, task, ckpts.meta(step))
            return ckpts.restore(step, target)
        except ChecksumError as e:
            aside = ckpts.set_aside(step) if jax.process_index() == 0 else None
            say(f"{e}; moved to {aside}, resuming from the checkpoint before it")
    raise ValueError(f"--resume: no intact checkpoint left in {ckpts.directory}")


def check_identity(opts: RunOptions, task: Task, saved: dict) -> None:
    """Refuse to continue a run of another model or task in the same --out."""
    # Compared as JSON sees them: the meta was saved as JSON (tuples come back as lists).
    for key, value in json.loads(json.dumps(task.identity)).items():
        if saved.get(key) != value:
            diff = _diff(saved.get(key), value)
            what = "model config" if key == "model" else key
            raise ValueError(f"--resume: {opts.out} holds a different {what}: {diff}")


def say(line: str) -> None:
    if jax.process_index() == 0:
        print(line, file=sys.stderr)


def save(ckpts: RunCheckpoints, step: int, state, meta: dict, *, wait: bool = False) -> None:
    """Checkpoint `step`; a failed write (no space, read-only, ...) stops the run with one line,
    and orbax's write-then-rename leaves the previous checkpoint restorable."""
    try:
        ckpts.save(step, state, meta)
        if wait:
            ckpts.wait()
    except Exception as e:
        raise ValueError(
            f"could not write checkpoint {step} in {ckpts.directory} "
            f"({type(e).__name__}: {e}); the previous checkpoint is intact: "
            "fix the disk, then --resume"
        ) from None


def _diff(saved, now):
    if isinstance(saved, dict) and isinstance(now, dict):
        return {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
    return (saved, now)


def compile_step(opts: RunOptions, task: Task, optimizer, oc: OptimConfig, mesh, shardings):
    kw = dict(grad_accum=opts.grad_accum, trainable=task.trainable)
    if opts.parallel == "pmap":
        step = make_train_step(task.loss_fn, optimizer, oc, axis_name=parallel.AXIS, **kw)
        return jax.pmap(step, axis_name=parallel.AXIS, donate_argnums=0)
    step = make_train_step(task.loss_fn, optimizer, oc, **kw)
    return jax.jit(
        step,
        in_shardings=(shardings, parallel.batch_sharding(mesh)),
        out_shardings=(shardings, None),
        donate_argnums=0,
    )


def next_batch(opts: RunOptions, train: Dataset, mesh, step: int, per_epoch: int):
    """The global batch of `step`: a function of (seed, step) only, so resuming is exact."""
    epoch, index = divmod(step, per_epoch)
    rows = train.rows(epoch, index, opts.batch_size, seed=opts.seed, shuffle=True)
    local = train.batch(rows[parallel.local_rows(opts.batch_size)])
    if opts.parallel == "pmap":
        return parallel.split_for_pmap(local)
    return parallel.global_batch(mesh, local, opts.batch_size)


def fit(opts: RunOptions, task: Task, state, step_fn, ckpts, mesh, total: int, per_epoch: int):
    """Steps from state.step to `total`: log each, evaluate and checkpoint on schedule.

    The host never waits for a step it has just dispatched: the next batch goes onto the
    devices while the current step runs, and metrics stay there until `--log-every` steps have
    queued, or an eval, a checkpoint or the end needs them (so a checkpoint never holds a state
    whose loss has not been checked)."""
    start, pmap = int(state.step), opts.parallel == "pmap"
    log = RunLog(opts, task, start, total)
    log.say(task.describe(state.params))
    log.say(f"devices: {parallel.describe_devices(software=True)}")
    trace = StepTrace(opts.profile, start + 3, end=total - 1)  # past compilation and warm-up
    # pmap keeps one copy per device; evals and checkpoints want one (taken only on those steps).
    single = parallel.unreplicate if pmap else lambda s: s
    state = parallel.replicate(state) if pmap else state
    pending = Pending(log, ckpts, pmap)
    batch = next_batch(opts, task.train, mesh, start, per_epoch)
    with StopSignals() as stop:
        for step in range(start, total):
            trace.before(step)
            state, metrics = step_fn(state, batch)
            trace.after(step, metrics, log.say)
            done = step + 1
            if done < total:  # built and sent while the devices run this step
                batch = next_batch(opts, task.train, mesh, done, per_epoch)
            evaluated = done % opts.eval_every == 0 or done == total
            signum = stop.requested()
            saving = done % opts.ckpt_every == 0 or done == total or signum
            pending.add(done, metrics)
            if not (evaluated or saving or len(pending) >= opts.log_every):
                continue
            records = pending.fetch()
            if evaluated:
                evals, line = task.evaluate(single(state).params, done)
                records[-1].update(evals)
                log.say(line)
            log.write(records, plot=evaluated)
            if saving:
                epoch, index = divmod(step, per_epoch)
                meta = {**task.identity, "step": done, "data": {"epoch": epoch, "batch": index + 1}}
                # The last one (or one before stopping) must be on disk before we go on.
                save(ckpts, done, single(state), meta, wait=bool(signum) or done == total)
            log.restart_clock()
            if signum:
                log.close()
                say(
                    f"stopped by {signal.Signals(signum).name} after step {done} of {total}: "
                    f"checkpoint {ckpts.directory / str(done)}; run the same command again to "
                    "continue (--resume auto, the default)"
                )
                raise SystemExit(128 + signum)
    log.close()
    task.finish(single(state).params)


class Pending:
    """Metrics of dispatched steps, still on the devices; `fetch` brings them over in one
    transfer and turns them into log records, stopping the run at a non-finite loss."""

    def __init__(self, log: RunLog, ckpts: RunCheckpoints, replicated: bool):
        self.log, self.ckpts, self.replicated, self.steps = log, ckpts, replicated, []

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, step: int, metrics: dict) -> None:
        self.steps.append((step, metrics))

    def fetch(self) -> list[dict]:
        fetched = jax.device_get([m for _, m in self.steps])
        records = self.log.step_records([s for s, _ in self.steps], fetched, self.replicated)
        self.steps = []
        for i, record in enumerate(records):
            if not math.isfinite(record["train_loss"]):
                self.log.write(records[:i], plot=False)
                ckpts = self.ckpts
                raise ValueError(
                    f"non-finite loss ({record['train_loss']}) at step "
                    f"{record['step']}; stopped, the last good checkpoint is step "
                    f"{ckpts.latest_step()} in {ckpts.directory}"
                )
        return records
