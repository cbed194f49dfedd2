"""What every training script shares: its options, the model a run starts from, and `main`.

Scripts subclass `RunOptions` (the loop's), `FinetuneOptions` (+ the book's finetuning
conventions: no dropout, a constant learning rate, no clipping) or `LoRAOptions`, and may
redeclare a field to change its default.
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
