"""What a script plugs into the loop (`loop.run(config, task)`): a `Task`.

The base holds what every task shares, so a new task writes only what is its own: its data, its
loss, its first params and, if it has any, a few more figures for each evaluation
(`report`) and the model it leaves (`final_model`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import jax
import numpy as np

from gptjax.config import GPTConfig
from gptjax.kernels import Kernels
from gptjax.model.lora import LoRAConfig
from gptjax.store import Model
from gptjax.store.peft import to_peft
from gptjax.training.evaluator import Evaluator
from gptjax.training.finetune import counts, merged, whole_modules
from gptjax.training.steps import LossFn, Trainable

# file -> (y label, {metric key: label}), or a list of those: panels side by side
Plots = dict[str, tuple[str, dict[str, str]] | list[tuple[str, dict[str, str]]]]
LOSS_PLOT: Plots = {
    "loss.png": ("cross entropy", {"train_loss": "train loss", "val_loss": "val loss"})
}


class Dataset(Protocol):
    """Training examples: `Windows` of text, `textdata.Examples`, ..."""

    def __len__(self) -> int: ...
    def batches_per_epoch(self, B: int) -> int: ...
    def rows(self, epoch: int, index: int, B: int, *, seed: int, shuffle: bool) -> np.ndarray: ...
    def batch(self, rows: np.ndarray) -> dict[str, np.ndarray]: ...


class Task:
    """The base of the loop's tasks. A subclass sets, in its __init__:

    - `cfg`, `out` (the run's folder) and `identity` (in every checkpoint's meta: a resume must
      find it unchanged; "model": the config);
    - `data` ({"train": ..., "validation": ...}, more splits if it likes) and `train`, the
      Dataset the loop draws batches from;
    - `evaluator`: an Evaluator of its eval step, whose outputs are sums, among them `loss`, and
      the count they are divided by (`count`);

    and writes `loss_fn` and `init_params`. The rest has defaults it may change.
    """

    cfg: GPTConfig
    out: Path
    identity: dict
    data: dict[str, Dataset]
    train: Dataset
    evaluator: Evaluator
    count = "tokens"  # the eval step's output its sums are divided by
    trainable: Trainable | None = None  # path predicate; None trains everything
    lcfg: LoRAConfig | None = None  # LoRA adapters beside the params: {"model", "lora"}
    seen = ("examples_seen", 1)  # x axis of the log: ("tokens_seen", tokens per row), ...
    plots: Plots = LOSS_PLOT
    plot_x: str | None = None  # the plots' x axis (None: the `seen` key)
    harness: Any = None  # lm-eval in the loop: harness(params, step) -> (records, line)
    on_policy = False  # batches drawn from the current params (`rollout`): RL
    reuse = 1  # optimizer steps each drawn batch serves (RL: one rollout's updates)
    sums: tuple[str, ...] = ()  # the loss's other sums, logged per count (RL: kl, clip_fraction)
    kernels: Kernels | None = None  # what the task's steps run (None: resolved for float32)

    loss_fn: LossFn  # (params, batch, rng, train) -> (loss sum, count)

    def init_params(self) -> Any:
        """The starting params (not called on a resume)."""
        raise NotImplementedError

    def rollout(self, params, batch: dict, step: int) -> tuple[dict, dict]:
        """An on-policy task's batch for `step`, drawn with the current `params` from the
        dataset's `batch` (the same for the `reuse` steps it serves) -> (the batch to train
        on, host figures for the step's record)."""
        return batch, {}

    def abstract_params(self) -> Any:
        """Their shapes, for a resume."""
        return jax.eval_shape(self.init_params)

    def model_params(self, params):
        """The model's own params: LoRA adapters folded in."""
        return merged(params, self.lcfg)

    def describe(self, params) -> str:
        """The line printed at the start."""
        trained, total = counts(params, self.trainable, self.lcfg)
        return f"trainable parameters: {trained:,} of {total:,}"

    def means(self, params, split: str, n_batches: int | None = -1) -> dict[str, float]:
        """The eval step's sums over `n_batches` batches of a split (-1: the evaluator's
        number, None: all of it), each divided by the count."""
        sums = self.evaluator.sums(params, self.data[split], n_batches)
        n = sums.pop(self.count)
        return {k: v / n for k, v in sums.items()}

    def evaluate(self, params, step: int) -> tuple[dict, str]:
        """Every mean on the train split (eval_train_*) and the validation split (val_*), what
        `report` adds and the lm-eval scores -> (metrics, the line to print)."""
        train, val = self.means(params, "train"), self.means(params, "validation")
        metrics = {f"eval_train_{k}": v for k, v in train.items()}
        metrics |= {f"val_{k}": v for k, v in val.items()}
        line = f"step {step}: train loss {train['loss']:.3f}, val loss {val['loss']:.3f}"
        more, words = self.report(params, step, metrics)
        if self.harness is not None:
            scores, said = self.harness(self.model_params(params), step)
            more, words = more | scores, words + said
        return metrics | more, line + words

    def report(self, params, step: int, metrics: dict) -> tuple[dict, str]:
        """A task's own figures at an evaluation -> (more metrics, more of the line)."""
        return {}, ""

    def final_model(self, params) -> Model | None:
        """What the run leaves in OUT/model (None: its checkpoints are its result)."""
        return None

    def finish(self, params) -> Model | None:
        """After the last step: the final model (its params on the host) -> process 0 writes it
        to OUT/model and, under LoRA, the adapters in PEFT's format to OUT/peft."""
        model = self.final_model(params)  # every process: merging adapters is a computation
        if model is None:
            return None
        model = model.replace(params=jax.tree.map(np.asarray, model.params))
        if jax.process_index() == 0:
            print(f"model: {model.save(self.out / 'model')}")
            if self.lcfg is not None:
                adapters = jax.tree.map(np.asarray, params["lora"])
                whole = whole_modules(params["model"], self.lcfg)
                peft = to_peft(self.lcfg, adapters, self.out / "peft", modules=whole)
                print(f"adapters: {peft}")
        return model
