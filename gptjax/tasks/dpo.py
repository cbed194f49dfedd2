"""The preference-tuning task (DPO, the book's chapter-7 bonus) against a frozen copy of the
starting model, and its options (`python -m train.dpo`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from gptjax.data import instruct
from gptjax.data.preference import Pairs, encode_pairs
from gptjax.model.params import count_params
from gptjax.store import Model
from gptjax.tasks.options import FinetuneOptions, Harness, HarnessOptions, starting_model
from gptjax.training import dpo, parallel
from gptjax.training.evaluator import Evaluator
from gptjax.training.task import LOSS_PLOT, Task


@dataclass(frozen=True)
class Options(FinetuneOptions, HarnessOptions):
    data: str = "instruction-data-with-preference"
    """named dataset or JSON list with chosen/rejected"""
    beta: float = 0.1
    """how far the policy may move from the reference"""
    sum_logprobs: bool = False
    """sum response log-probs (DPO paper, TRL), not average"""
    max_length: int | None = None
    """tokens per sequence (unset: the context)"""
    train_ratio: float = 0.85
    """leading fraction of the pairs for training"""
    test_ratio: float = 0.1
    """the next fraction held out; the rest validates"""
    # The book's recipe: AdamW 5e-6, weight decay 0.01, batch 8, 1 epoch, eval every 5 steps.
    lr: float = 5e-6
    """learning rate (constant unless --min-lr-ratio < 1)"""
    weight_decay: float = 0.01
    """AdamW weight decay (>= 2-D weights only)"""
    eval_every: int = 5
    """steps between evaluations"""


class DPO(Task):
    """The DPO loss of the policy against reference log-probabilities."""

    count = "count"

    def __init__(self, opts: Options):
        if not opts.init_from:
            raise ValueError("--init-from is required: DPO tunes a trained model (the reference)")
        self.opts, self.out = opts, Path(opts.out)
        start = starting_model(opts.init_from, "", opts.drop_rate)
        cfg, self.ref_params, self.start = start.cfg, start.params, start
        self.cfg = cfg
        L = cfg.fit(opts.max_length, "--max-length")
        entries = instruct.load_entries(opts.data, required=("chosen", "rejected"))
        for i, e in enumerate(entries):
            if "prompt" not in e and "instruction" not in e:
                raise ValueError(f"{opts.data}: record {i}: needs `instruction` or `prompt`")
        parts = instruct.split(entries, opts.train_ratio, opts.test_ratio)
        enc = start.encoding()  # the test split stays held out: DPO neither trains nor tunes on it
        self.data = {s: encode_pairs(parts[s], enc, L) for s in ("train", "validation")}
        self.train, self.dtype = self.data["train"], parallel.compute_dtype(opts.dtype)
        self.kernels = opts.kernels_for(self.dtype)
        self.identity = {
            "task": "dpo",
            "model": cfg.to_dict(),
            "dpo": {"beta": opts.beta, "sum": opts.sum_logprobs, "max_length": L},
        }
        self.evaluator = Evaluator(
            self.eval_step, parallel.make_mesh(), opts.batch_size, opts.eval_batches
        )
        self.reference_step = jax.jit(lambda p, b: jnp.stack(self.logprobs(p, b), axis=1))
        for name, pairs in self.data.items():
            self.reference(pairs, name)
        self.harness = Harness(cfg, opts, enc)
        margins = {"eval_train_reward_margin": "train margin", "val_reward_margin": "val margin"}
        self.plots = {
            "loss.png": ("DPO loss", LOSS_PLOT["loss.png"][1]),
            "rewards.png": ("reward margin", margins),
            **self.harness.plots,
        }

    def logprobs(self, params, batch, rng=None):
        """Policy log-probabilities of the chosen and rejected responses: [B] each."""
        average = not self.opts.sum_logprobs
        return dpo.pair_logprobs(
            self.cfg,
            params,
            batch,
            average=average,
            dtype=self.dtype,
            rng=rng,
            kernels=self.kernels,
        )

    def reference(self, pairs: Pairs, name: str) -> None:
        """The frozen reference's log-probabilities, computed once per pair before training."""
        step = self.reference_step
        B = self.opts.batch_size
        lead = jax.process_index() == 0 and self.opts.progress
        for start in tqdm(
            range(0, len(pairs), B),
            desc=f"reference log-probs ({name})",
            unit="batch",
            disable=not lead,
        ):
            rows = np.arange(start, min(start + B, len(pairs)))
            pairs.ref[rows] = np.asarray(step(self.ref_params, pairs.batch(rows)))

    def terms(self, params, batch, rng=None):
        pc, pr = self.logprobs(params, batch, rng)
        losses, cr, rr = dpo.dpo_terms(
            pc, pr, batch["ref_chosen"], batch["ref_rejected"], self.opts.beta
        )
        return losses, cr, rr, (batch["valid"] == 1).astype(jnp.float32)

    def loss_fn(self, params, batch, rng, train):
        losses, _, _, valid = self.terms(params, batch, rng if train else None)
        return jnp.sum(losses * valid), jnp.sum(valid)

    def eval_step(self, params, batch) -> dict:
        losses, cr, rr, valid = self.terms(params, batch)
        return {
            "loss": jnp.sum(losses * valid),
            "chosen_reward": jnp.sum(cr * valid),
            "rejected_reward": jnp.sum(rr * valid),
            "reward_margin": jnp.sum((cr - rr) * valid),
            "pref_acc": jnp.sum((cr > rr) * valid),
            "count": jnp.sum(valid),
        }

    def report(self, params, step: int, metrics: dict) -> tuple[dict, str]:
        m = metrics
        return {}, (
            f" | reward margin train {m['eval_train_reward_margin']:.3f}, val "
            f"{m['val_reward_margin']:.3f} | val preference accuracy {100 * m['val_pref_acc']:.1f}%"
        )

    def init_params(self):
        return self.ref_params

    def describe(self, params) -> str:
        beta = self.opts.beta
        return f"trainable parameters: {count_params(params):,} (reference frozen, beta {beta})"

    def final_model(self, params) -> Model:
        task = self.start.task or instruct.TASK
        return Model(self.cfg, params, task=task, tokenizer=self.start.tokenizer)
