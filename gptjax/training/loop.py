"""The one training loop: pretraining and every finetuning task run through `run(config, task)`.

A task (`task.Task`) says what is trained and on what (data, loss, which parameters, how to
evaluate and what to do at the end); a `LoopConfig` of plain values says how long, how often and
where; the loop does the rest the same way for all: data-parallel steps (jit over a
mesh, FSDP or pmap), a batch that is a function of (seed, step) so `--resume` is exact,
evaluations and checkpoints on schedule, OUT/metrics.jsonl, plots and a progress bar.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp

from gptjax import heap
from gptjax.kernels import resolve
from gptjax.store.checksum import ChecksumError
from gptjax.store.run import RunCheckpoints
from gptjax.training import parallel, trackers
from gptjax.training.guard import RunLock, StopSignals
from gptjax.training.profile import StepTrace
from gptjax.training.runlog import RunLog
from gptjax.training.steps import OptimConfig, init_state, make_optimizer, make_train_step
from gptjax.training.task import Task

RESUMES = ("auto", "always", "never")


@dataclass(frozen=True)
class LoopConfig:
    """How the loop runs a task, as plain values (each script fills them from its options).

    `max_steps` (else `epochs` of the training data) optimizer steps of `batch_size` rows (all
    devices, all processes) in `grad_accum` micro-batches; evaluations every `eval_every` steps
    and checkpoints every `ckpt_every` (the newest `keep` kept) in `out`; `resume`: auto, always
    or never continue from a checkpoint there; `log_every`: steps between fetches of the metrics;
    `parallel`: jit (with `fsdp`) or pmap; `profile`: a folder for a trace of 3 steady steps;
    `log_to`: jsonl (always), tensorboard, wandb. `options`: what the script was run with, for
    OUT/config.json and the trackers' hyperparameters."""

    out: str
    batch_size: int = 8
    max_steps: int | None = None
    epochs: int = 1
    optim: OptimConfig = field(default_factory=OptimConfig)  # decay_steps: set by `run`
    grad_accum: int = 1
    eval_every: int = 50
    ckpt_every: int = 100
    keep: int = 3
    resume: str = "auto"
    seed: int = 0
    log_every: int = 10
    parallel: str = "jit"
    fsdp: bool = False
    progress: bool = True
    profile: str | None = None
    log_to: tuple[str, ...] = ("jsonl",)
    wandb_project: str | None = None
    wandb_entity: str | None = None
    options: dict = field(default_factory=dict)
    command: str = ""  # the command line that made the run (OUT/config.json); "": this process's


def run(lc: LoopConfig, task: Task) -> None:
    """Train `task` from step 0 (or the latest checkpoint, see `resume`) to the last step."""
    trackers.check_installed(lc.log_to)
    per_epoch = task.train.batches_per_epoch(lc.batch_size)
    if per_epoch == 0:
        raise ValueError(
            f"{len(task.train)} training examples, fewer than one batch of "
            f"--batch-size {lc.batch_size}"
        )
    total = lc.max_steps or lc.epochs * per_epoch * task.reuse
    oc = dataclasses.replace(lc.optim, decay_steps=total)
    optimizer = make_optimizer(oc)
    mesh = parallel.make_mesh()
    # First, what runs: the kernel policy (config.json keeps it too) and the process's heap.
    task.kernels = task.kernels or resolve(mesh.devices.flat, jnp.float32)
    say(f"kernels: {task.kernels.describe()}")
    say(heap.describe())
    with RunLock(lc.out):
        ckpts = RunCheckpoints(lc.out, keep=lc.keep)
        try:
            state, shardings = start_state(lc, task, optimizer, ckpts, mesh)
            if int(state.step) >= total:
                return say(
                    f"{lc.out}: already finished (step {int(state.step)} of {total}); nothing to do"
                )
            step_fn = compile_step(lc, task, optimizer, oc, mesh, shardings)
            fit(lc, task, state, step_fn, ckpts, mesh, total, per_epoch)
        finally:
            ckpts.close()  # waits for a save in flight, even on errors


def start_state(lc: LoopConfig, task: Task, optimizer, ckpts: RunCheckpoints, mesh):
    """A fresh state, or the latest intact checkpoint's (see --resume); laid out on the mesh."""
    resume = resuming(lc, ckpts)
    params = None if resume else task.init_params()
    fresh = lambda p: init_state(p, optimizer, jax.random.PRNGKey(lc.seed + 1), task.trainable)
    abstract = jax.eval_shape(fresh, params if params is not None else task.abstract_params())
    shardings = parallel.state_shardings(mesh, abstract, fsdp=lc.fsdp)
    if not resume:
        return jax.jit(fresh, out_shardings=shardings)(params), shardings
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    return restore_intact(lc, task, ckpts, target), shardings


def resuming(lc: LoopConfig, ckpts: RunCheckpoints) -> bool:
    """Whether this run continues from a checkpoint in --out, by --resume auto|always|never."""
    latest, mode = ckpts.latest_step(), lc.resume
    if latest is None:
        if mode == "always":
            raise ValueError(f"--resume always: no checkpoint in {ckpts.directory}")
        if mode == "auto":
            say(f"--resume auto: no checkpoint in {ckpts.directory}; starting fresh")
        return False
    if mode == "never":
        raise ValueError(
            f"{lc.out} already has checkpoints (step {latest}), which --resume never refuses; "
            "run with --resume auto to continue that run, or choose another --out"
        )
    say(f"--resume {mode}: continuing from checkpoint {latest} in {ckpts.directory}")
    return True


def restore_intact(lc: LoopConfig, task: Task, ckpts: RunCheckpoints, target):
    """The newest checkpoint whose files are whole and whose arrays match their checksums;
    damaged newer ones are set aside (saying so), and their steps are redone from the intact one.
    Any other failure to read one stops the run, leaving every checkpoint where it is."""
    for step in reversed(ckpts.all_steps()):
        try:
            check_identity(lc, task, ckpts.meta(step))
            return ckpts.restore(step, target)
        except ChecksumError as e:
            aside = ckpts.set_aside(step) if jax.process_index() == 0 else None
            say(f"{e}; moved to {aside}, resuming from the checkpoint before it")
    raise ValueError(f"--resume: no intact checkpoint left in {ckpts.directory}")


def check_identity(lc: LoopConfig, task: Task, saved: dict) -> None:
    """Refuse to continue a run of another model or task in the same --out."""
    # Compared as JSON sees them: the meta was saved as JSON (tuples come back as lists).
    for key, value in json.loads(json.dumps(task.identity)).items():
        if saved.get(key) != value:
            diff = _diff(saved.get(key), value)
            what = "model config" if key == "model" else key
            raise ValueError(f"--resume: {lc.out} holds a different {what}: {diff}")


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


def compile_step(lc: LoopConfig, task: Task, optimizer, oc: OptimConfig, mesh, shardings):
    kw = dict(grad_accum=lc.grad_accum, trainable=task.trainable, sums=task.sums)
    if lc.parallel == "pmap":
        step = make_train_step(task.loss_fn, optimizer, oc, axis_name=parallel.AXIS, **kw)
        return jax.pmap(step, axis_name=parallel.AXIS, donate_argnums=0)
    step = make_train_step(task.loss_fn, optimizer, oc, **kw)
    return jax.jit(
        step,
        in_shardings=(shardings, parallel.batch_sharding(mesh)),
        out_shardings=(shardings, None),
        donate_argnums=0,
    )


def next_batch(lc: LoopConfig, task: Task, mesh, step: int, per_epoch: int, params=None):
    """The global batch of `step` and the host's figures about it: a function of (seed, step)
    only, and for an on-policy task of the params it is drawn with too, so resuming is exact.
    A task that reuses each drawn batch for `task.reuse` steps (RL) draws every that many."""
    epoch, index = divmod(step // task.reuse, per_epoch)
    rows = task.train.rows(epoch, index, lc.batch_size, seed=lc.seed, shuffle=True)
    local, figures = task.train.batch(rows[parallel.local_rows(lc.batch_size)]), {}
    if task.on_policy:
        local, figures = task.rollout(params, local, step)
    if lc.parallel == "pmap":
        return parallel.split_for_pmap(local), figures
    B = len(next(iter(local.values()))) * jax.process_count()  # a rollout may add rows
    return parallel.global_batch(mesh, local, B), figures


def fit(lc: LoopConfig, task: Task, state, step_fn, ckpts, mesh, total: int, per_epoch: int):
    """Steps from state.step to `total`: log each, evaluate and checkpoint on schedule.

    The host never waits for a step it has just dispatched: the next batch goes onto the
    devices while the current step runs, and metrics stay there until `--log-every` steps have
    queued, or an eval, a checkpoint or the end needs them (so a checkpoint never holds a state
    whose loss has not been checked)."""
    start, pmap = int(state.step), lc.parallel == "pmap"
    log = RunLog(lc, task, start, total)
    log.say(task.describe(state.params))
    log.say(f"devices: {parallel.describe_devices(software=True)}")
    trace = StepTrace(lc.profile, start + 3, end=total - 1)  # past compilation and warm-up
    # pmap keeps one copy per device; evals and checkpoints want one (taken only on those steps).
    single = parallel.unreplicate if pmap else lambda s: s
    state = parallel.replicate(state) if pmap else state
    pending = Pending(log, ckpts, pmap)
    # An on-policy task draws each batch with the params of the step before (RL's rollouts).
    policy = (lambda s: single(s).params) if task.on_policy else lambda s: None
    batch, figures = next_batch(lc, task, mesh, start, per_epoch, policy(state))
    with StopSignals() as stop:
        for step in range(start, total):
            trace.before(step)
            state, metrics = step_fn(state, batch)
            metrics = metrics | figures
            trace.after(step, metrics, log.say)
            done = step + 1
            if done < total:  # built and sent while the devices run this step
                batch, figures = next_batch(lc, task, mesh, done, per_epoch, policy(state))
            evaluated = done % lc.eval_every == 0 or done == total
            signum = stop.requested()
            saving = done % lc.ckpt_every == 0 or done == total or signum
            pending.add(done, metrics)
            if not (evaluated or saving or len(pending) >= lc.log_every):
                continue
            records = pending.fetch()
            if evaluated:
                evals, line = task.evaluate(single(state).params, done)
                records[-1].update(evals)
                log.say(line)
            log.write(records, plot=evaluated)
            if saving:
                epoch, index = divmod(step // task.reuse, per_epoch)
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
