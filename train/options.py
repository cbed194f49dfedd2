"""The options every training script shares, and the model a run starts from.

Scripts subclass `RunOptions` (the loop's), `FinetuneOptions` (+ the book's finetuning
conventions: no dropout, a constant learning rate, no clipping) or `LoRAOptions`, and may
redeclare a field to change its default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from convert.load import load_model
from gptjax import tokenizer
from gptjax.config import GPTConfig
from gptjax.options import option
from gptjax.parallel import DTYPES


@dataclass(frozen=True)
class RunOptions:
    batch_size: int = option(8, "global batch size B (all devices, all processes)")
    max_steps: int | None = option(None, "total optimizer steps (default: --epochs of data)")
    epochs: int = option(1, "passes over the training data when --max-steps is not given")
    lr: float = option(4e-4, "peak learning rate")
    min_lr_ratio: float = option(0.1, "cosine decay ends at this fraction of --lr")
    min_lr: float | None = option(None, "cosine decay ends at this rate (instead of the ratio)")
    b1: float = option(0.9, "AdamW beta1")
    b2: float = option(0.999, "AdamW beta2 (GPT-2 reproductions use 0.95)")
    warmup_steps: int = option(0, "linear warmup steps")
    weight_decay: float = option(0.1, "AdamW weight decay (>= 2-D weights only)")
    grad_clip: float = option(1.0, "global-norm clip; 0 disables")
    grad_accum: int = option(1, "micro-batches per step")
    eval_every: int = option(50, "steps between evaluations")
    eval_batches: int = option(5, "batches per loss estimate")
    ckpt_every: int = option(100, "steps between checkpoints")
    keep: int = option(3, "checkpoints kept")
    out: str = option("runs/default", "run directory")
    resume: bool = option(False, "continue from the latest checkpoint in --out")
    init_from: str | None = option(None, "start from a checkpoint, run or converted model")
    seed: int = option(0, "seed for init, shuffling and dropout")
    dtype: str = option("float32", "compute dtype (auto: bfloat16 on GPU/TPU, float32 on CPU)",
                        choices=list(DTYPES))  # fmt: skip
    log_every: int = option(10, "steps between fetches of the metrics from the devices (each "
                            "step is still logged; checkpoints and evals fetch first)")  # fmt: skip
    parallel: str = option("jit", "data-parallel formulation", choices=["jit", "pmap"])
    fsdp: bool = option(False, "shard params and optimizer state over devices (jit only)")
    coordinator: str | None = option(None, "multi-host: coordinator host:port")
    num_processes: int | None = option(None, "multi-host: number of processes")
    process_id: int | None = option(None, "multi-host: this process's index")
    progress: bool = option(True, "show a progress bar")
    profile: str | None = option(None, "write a jax.profiler trace of 3 steady steps here")


@dataclass(frozen=True)
class FinetuneOptions(RunOptions):
    lr: float = option(5e-5, "learning rate (constant unless --min-lr-ratio < 1)")
    min_lr_ratio: float = option(1.0, "cosine decay ends at this fraction of --lr")
    grad_clip: float = option(0.0, "global-norm clip; 0 disables")
    drop_rate: float = option(0.0, "dropout rate while finetuning")


@dataclass(frozen=True)
class LoRAOptions(FinetuneOptions):
    lora_rank: int = option(16, "LoRA rank r (--trainable lora)")
    lora_alpha: float = option(16.0, "LoRA alpha; the update is scaled by alpha / r")
    lora_targets: str = option("c_attn,c_proj,c_fc", "Dense modules LoRA adapts (comma-separated)")


def starting_model(
    init_from: str | None, preset: str, drop_rate: float, **overrides
) -> tuple[GPTConfig, dict | None]:
    """(config, weights) of `init_from` (any folder `convert.load_model` opens), or the preset's
    config with `overrides` and no weights yet; either way with `drop_rate`, and a vocabulary
    that covers GPT-2's tokenizer."""
    if init_from:
        cfg, params = load_model(init_from)
        tokenizer.check_vocab(cfg.vocab_size, init_from)
        return dataclasses.replace(cfg, drop_rate=drop_rate), params
    cfg = GPTConfig.preset(preset, drop_rate=drop_rate, **overrides)
    tokenizer.check_vocab(cfg.vocab_size, f"preset {preset}")
    return cfg, None
