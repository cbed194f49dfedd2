"""What every training script shares: its options, the model a run starts from, and `main`.

Scripts subclass `RunOptions` (the loop's), `FinetuneOptions` (+ the book's finetuning
conventions: no dropout, a constant learning rate, no clipping) or `LoRAOptions`, and may
redeclare a field to change its default. Language-model scripts add `HarnessOptions` and score
lm-eval tasks at their evaluations with `Harness`.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

from convert.load import load_model
from gptjax.config import GPTConfig
from gptjax.data import tokenizer
from gptjax.options import parse
from gptjax.training import loop, parallel
from gptjax.training.loop import RunOptions


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
    lora_targets: str = "c_attn,c_proj,c_fc"
    """Dense modules LoRA adapts (comma-separated)"""


@dataclass(frozen=True)
class HarnessOptions:
    harness_tasks: str | None = None
    """lm-eval tasks to score during training, comma-separated (needs gptjax[eval])"""
    harness_every: int = 0
    """steps between lm-eval scores (a multiple of --eval-every; 0: at every eval)"""
    harness_limit: float | None = None
    """documents per lm-eval task (a fraction if < 1; unset: all)"""
    harness_include_path: str | None = None
    """a folder of your own lm-eval task YAML files"""


class Harness:
    """A run's lm-eval tasks (`--harness-tasks`), built once, with a panel in `plots`;
    `harness(params, step)` -> (harness/<task>/<metric> records, a line for the log), empty
    at evaluations it skips or when no tasks were asked for."""

    def __init__(self, cfg: GPTConfig, opts, plots: dict):
        self.every, self.tasks = opts.harness_every or 1, None  # 0: at every evaluation
        if not opts.harness_tasks:
            return
        if opts.harness_every % opts.eval_every:
            raise ValueError(
                f"--harness-every {opts.harness_every} must be a multiple of --eval-every "
                f"{opts.eval_every}"
            )
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
        )
        plots["harness.png"] = ("lm-eval", self.tasks.metrics())

    def __call__(self, params, step: int) -> tuple[dict, str]:
        if self.tasks is None or step % self.every:
            return {}, ""
        scores = self.tasks.scores(params)
        return scores, "\n  lm-eval " + ", ".join(f"{k[8:]} {v:.4f}" for k, v in scores.items())


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


def script_main(options: type, make_task, argv, doc: str, commands: dict | None = None) -> None:
    """A training script's entry point: parse its options, join a multi-host run if asked,
    build its task and run it. `commands` ({"predict": fn(argv)}) are the script's other
    subcommands, run instead when argv starts with one's name."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] and argv[0] in (commands or {}):
        return commands[argv[0]](argv[1:])
    opts = parse(options, argv, doc)
    parallel.init_distributed(opts.coordinator, opts.num_processes, opts.process_id)
    loop.run(opts, make_task(opts))
