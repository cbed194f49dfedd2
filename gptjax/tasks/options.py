"""What every training task shares: its options, and the model a run starts from.

Tasks' options subclass `RunOptions` (what the loop needs; `loop_config()` hands it the
library's plain LoopConfig), `FinetuneOptions` (+ the book's finetuning conventions: no
dropout, a constant learning rate, no clipping) or `LoRAOptions`, and may
redeclare a field to change its default. Language-model scripts add `HarnessOptions` and score
lm-eval tasks at their evaluations with `Harness`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import jax

from gptjax.config import GPTConfig
from gptjax.kernels import Kernels, resolve
from gptjax.options import choice_or_flag
from gptjax.store import open_or_preset
from gptjax.training.loop import RESUMES, LoopConfig
from gptjax.training.parallel import DTYPES
from gptjax.training.steps import OPTIMIZERS, OptimConfig
from gptjax.training.trackers import CHOICES

RESUME = choice_or_flag(RESUMES, alone="always")
LogTo = Literal[*CHOICES]


@dataclass(frozen=True)
class RunOptions:
    """What every training script asks of the loop (`loop_config` turns them into its plain
    LoopConfig)."""

    batch_size: int = 8
    """global batch size B (all devices, all processes)"""
    max_steps: int | None = None
    """total optimizer steps (default: --epochs of data)"""
    epochs: int = 1
    """passes over the training data when --max-steps is not given"""
    optimizer: Literal[*OPTIMIZERS] = "adamw"
    """adamw, or muon: Muon on the blocks' matrices, AdamW (at --lr) on the rest"""
    lr: float = 4e-4
    """peak learning rate (AdamW's)"""
    muon_lr: float = 0.02
    """peak learning rate of Muon's matrices (--optimizer muon)"""
    muon_momentum: float = 0.95
    """Muon's Nesterov momentum (--optimizer muon)"""
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
    kernels: str = ""
    """override the kernel policy's fields, e.g. head=padded,attention=xla (fields: dense,
    head, attention, ce_budget, fence; unset: the fastest measured for these devices and
    --dtype, which the run's first log line names)
    """
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
    log_to: tuple[LogTo, ...] = ("jsonl",)
    """where the records go: jsonl (OUT/metrics.jsonl, always written), tensorboard
    (OUT/tensorboard), wandb (W&B; WANDB_MODE=offline works without an account)
    """
    wandb_project: str | None = None
    """W&B project (default: $WANDB_PROJECT, else gptjax)"""
    wandb_entity: str | None = None
    """W&B entity, a user or team (default: $WANDB_ENTITY, else your default entity)"""

    def kernels_for(self, dtype) -> Kernels:
        """The run's kernel policy: resolved for these devices and `dtype`, with --kernels (and
        --attention, where the script has it) applied."""
        attention = getattr(self, "attention", "auto")
        return resolve(jax.devices(), dtype, self.kernels, attention)

    def loop_config(self) -> LoopConfig:
        ratio = self.min_lr_ratio if self.min_lr is None else self.min_lr / self.lr
        optim = OptimConfig(
            lr=self.lr,
            weight_decay=self.weight_decay,
            warmup_steps=self.warmup_steps,
            min_lr_ratio=ratio,
            b1=self.b1,
            b2=self.b2,
            grad_clip=self.grad_clip or None,
            optimizer=self.optimizer,
            muon_lr=self.muon_lr,
            muon_momentum=self.muon_momentum,
        )
        same = {f.name for f in dataclasses.fields(LoopConfig)} - {
            "optim",
            "log_to",
            "options",
            "command",
        }
        return LoopConfig(
            **{name: getattr(self, name) for name in same},
            optim=optim,
            log_to=tuple(dict.fromkeys(self.log_to)),
            options=dataclasses.asdict(self),
        )


@dataclass(frozen=True)
class FinetuneOptions(RunOptions):
    lr: float = 5e-5
    """learning rate (constant unless --min-lr-ratio < 1)"""
    min_lr_ratio: float = 1.0
    """cosine decay ends at this fraction of --lr"""
    grad_clip: float = 0.0
    """global-norm clip; 0 disables"""
    drop_rate: float = 0.0
    """dropout rate while finetuning"""


@dataclass(frozen=True)
class LoRAOptions(FinetuneOptions):
    lora_rank: int = 16
    """LoRA rank r (--trainable lora)"""
    lora_alpha: float = 16.0
    """LoRA alpha; the update is scaled by alpha / r"""
    lora_targets: tuple[str, ...] = ("c_attn", "c_proj", "c_fc")
    """Dense modules LoRA adapts"""


@dataclass(frozen=True)
class HarnessOptions:
    harness_tasks: tuple[str, ...] = ()
    """lm-eval tasks to score during training (needs gptjax[eval])"""
    harness_every: int = 0
    """steps between lm-eval scores (a multiple of --eval-every; 0: at every eval)"""
    harness_limit: float | None = None
    """documents per lm-eval task (a fraction if < 1; unset: all)"""
    harness_include_path: str | None = None
    """a folder of your own lm-eval task YAML files"""


def check_multiple(flag: str, every: int, eval_every: int) -> None:
    """Scores taken at evaluations come every few of them: `every` must be a multiple of
    --eval-every."""
    if every % eval_every:
        raise ValueError(f"{flag} {every} must be a multiple of --eval-every {eval_every}")


class Harness:
    """A run's lm-eval tasks (`--harness-tasks`), built once, with their panel in `plots`;
    `harness(params, step)` -> (harness/<task>/<metric> records, a line for the log), empty
    at evaluations it skips or when no tasks were asked for."""

    def __init__(self, cfg: GPTConfig, opts, enc=None):
        self.every, self.tasks, self.plots = opts.harness_every or 1, None, {}
        if not opts.harness_tasks:
            return
        check_multiple("--harness-every", opts.harness_every, opts.eval_every)
        try:
            from gptjax.eval.harness import InLoop
        except ImportError:
            raise ValueError(
                "--harness-tasks: lm-eval is not installed; pip install 'gptjax[eval]'"
            ) from None
        self.tasks = InLoop(
            cfg,
            opts.harness_tasks,
            include_path=opts.harness_include_path,
            limit=opts.harness_limit,
            batch_size=opts.batch_size,
            dtype=opts.dtype,
            enc=enc,
        )
        self.plots = {"harness.png": ("lm-eval", self.tasks.metrics())}

    def __call__(self, params, step: int) -> tuple[dict, str]:
        if self.tasks is None or step % self.every:
            return {}, ""
        scores = self.tasks.scores(params)
        return scores, "\n  lm-eval " + ", ".join(f"{k[8:]} {v:.4f}" for k, v in scores.items())


def starting_model(
    init_from: str | None,
    preset: str,
    drop_rate: float,
    tokenizer_dir: str | None = None,
    **overrides,
):
    """The `Model` a run starts from: `init_from` (any folder `gptjax.store.Model` opens, with
    its weights and tokenizer), or the preset's config with `overrides`, sized for
    `tokenizer_dir`'s tokenizer if given, and no weights yet (the task draws them); either way
    with `drop_rate`."""
    model = open_or_preset(
        init_from, preset, weights=False, tokenizer_dir=tokenizer_dir, **overrides
    )
    return model.replace(cfg=dataclasses.replace(model.cfg, drop_rate=drop_rate))
