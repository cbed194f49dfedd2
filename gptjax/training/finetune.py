"""What trains in a finetuning run: a path predicate per mode, and LoRA adapters beside the
model's params (`{"model": params, "lora": adapters}`) folded in by `lora.merge` at every use."""

from __future__ import annotations

import jax
import numpy as np

from gptjax.config import GPTConfig
from gptjax.model import lora
from gptjax.model.params import count_params
from gptjax.training.steps import split

MODES = ("head", "last-block", "all", "lora")


def trainable_paths(mode: str, cfg: GPTConfig, lcfg: lora.LoRAConfig | None):
    """The path predicate of a --trainable mode (None: everything trains). `head` is a
    classifier's `score`; `last-block` the last block, `ln_f` and `score`; `lora` the adapters
    (and `score` whole, unless it is a LoRA target itself)."""
    if mode not in MODES:
        raise ValueError(f"unknown trainable mode {mode!r}; expected one of {MODES}")
    if mode == "all":
        return None
    if mode == "head":
        return lambda p: p.startswith("score/")
    if mode == "last-block":
        return lambda p: p.split("/")[0] in (f"h_{cfg.n_layers - 1}", "ln_f", "score")
    whole_score = "score" not in lcfg.targets
    return lambda p: p.startswith("lora/") or (whole_score and p.startswith("model/score/"))


def whole_modules(params: dict, lcfg: lora.LoRAConfig) -> dict:
    """The modules a LoRA run trains whole, as `trainable_paths` says: a classifier's `score`,
    unless it is a LoRA target itself."""
    if "score" in params and "score" not in lcfg.targets:
        return {"score": jax.tree.map(np.asarray, params["score"])}
    return {}


def lora_config(mode: str, rank: int, alpha: float, targets) -> lora.LoRAConfig | None:
    """The LoRAConfig of `--trainable lora` (targets: the module names)."""
    if mode != "lora":
        return None
    return lora.LoRAConfig(rank, alpha, tuple(targets))


def with_adapters(params: dict, lcfg: lora.LoRAConfig | None, rng: jax.Array) -> dict:
    """params, or {"model": params, "lora": fresh adapters} under LoRA."""
    if lcfg is None:
        return params
    return {"model": params, "lora": lora.init(lcfg, params, rng)}


def counts(params: dict, trainable, lcfg: lora.LoRAConfig | None) -> tuple[int, int]:
    """(trainable numbers, numbers in the model itself): no merge needed to count."""
    trained, _ = split(params, trainable)
    model = params if lcfg is None else params["model"]
    return count_params(trained), count_params(model)


def merged(params: dict, lcfg: lora.LoRAConfig | None) -> dict:
    """The model's own params (adapters folded in)."""
    return params if lcfg is None else lora.merge(lcfg, params["model"], params["lora"])
