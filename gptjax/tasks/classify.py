"""The classification-finetuning task (the book's chapter 6 and appendix E) and its options
(`python -m train.classify`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp

from gptjax.config import PRESETS, GPTConfig
from gptjax.data import textdata
from gptjax.files import write_json
from gptjax.model.classifier import POOLINGS, GPTClassifier, init_classifier
from gptjax.store import Model
from gptjax.tasks.options import LoRAOptions, starting_model
from gptjax.training import parallel
from gptjax.training.cross_entropy import cross_entropy_sum
from gptjax.training.evaluator import Evaluator
from gptjax.training.finetune import MODES, lora_config, trainable_paths, with_adapters
from gptjax.training.task import LOSS_PLOT, Task


@dataclass(frozen=True)
class Options(LoRAOptions):
    data: str = "sms-spam"
    """sms-spam, a labelled TSV/CSV file, or a folder of splits"""
    preset: Literal[*PRESETS] = "124M"
    """model size when no --init-from is given"""
    trainable: Literal[*MODES] = "last-block"
    """what trains"""
    pooling: Literal[*POOLINGS] = "last-non-pad"
    """where each row is read"""
    max_length: int | None = None
    """tokens per text (unset: longest training text)"""
    split_seed: int = 123
    """seed that shuffles a single labelled file into splits"""
    # The book's recipe (AdamW 5e-5, weight decay 0.1, batch 8, no clipping) over 5 epochs.
    epochs: int = 5
    """passes over the training texts when --max-steps is not given"""
    eval_every: int = 50
    """steps between evaluations"""


class Classify(Task):
    """Cross entropy of the classifier's logits against the labels."""

    count = "count"

    def __init__(self, opts: Options):
        self.opts, self.out = opts, Path(opts.out)
        self.names, splits = textdata.load(opts.data, seed=opts.split_seed)
        cfg, self.base = self._model()
        ids = {s: [self.enc.encode_ordinary(t) for t in sp.texts] for s, sp in splits.items()}
        longest = min(cfg.context_length, max(len(x) for x in ids["train"]))
        L = cfg.fit(opts.max_length, "--max-length") if opts.max_length else longest
        self.data = {
            s: textdata.Examples(textdata.pad(ids[s], L, self.enc.eot_token), sp.labels)
            for s, sp in splits.items()
        }
        self.train, self.cfg, C = self.data["train"], cfg, len(self.names)
        self.lcfg = lora_config(opts.trainable, opts.lora_rank, opts.lora_alpha, opts.lora_targets)
        self.head = {
            "labels": self.names,
            "pad_id": self.enc.eot_token,
            "pooling": opts.pooling,
            "max_length": L,
        }
        run = {"trainable": opts.trainable, "lora": self.lcfg and dataclasses.asdict(self.lcfg)}
        self.identity = {
            "task": "classify",
            "model": cfg.to_dict(),
            "classifier": {**self.head, **run},
        }
        dtype = parallel.compute_dtype(opts.dtype)
        self.kernels = opts.kernels_for(dtype)
        self.model = GPTClassifier(cfg, C, self.enc.eot_token, opts.pooling, dtype, self.kernels)
        self.trainable = trainable_paths(opts.trainable, cfg, self.lcfg)
        self.plots = {
            **LOSS_PLOT,
            "accuracy.png": ("accuracy", {"eval_train_acc": "train acc", "val_acc": "val acc"}),
        }
        self.evaluator = Evaluator(
            self.eval_step, parallel.make_mesh(), opts.batch_size, opts.eval_batches
        )

    def _model(self) -> tuple[GPTConfig, dict | None]:
        opts = self.opts
        model = starting_model(opts.init_from, opts.preset, opts.drop_rate)
        cfg, params = model.cfg, model.params
        self.enc, self.tokenizer = model.encoding(), model.tokenizer
        if (
            params is not None
            and "score" in params
            and (params["score"]["kernel"].shape[1] != len(self.names))
        ):
            raise ValueError(
                f"{opts.init_from}: a classifier of "
                f"{params['score']['kernel'].shape[1]} classes; {opts.data} has "
                f"{len(self.names)}"
            )
        return cfg, params

    def init_params(self):
        key = jax.random.key(self.opts.seed)
        base = self.base
        if base is None or "score" not in base:
            base = init_classifier(self.cfg, len(self.names), key, base=base)
        return with_adapters(base, self.lcfg, jax.random.fold_in(key, 1))

    def logits(self, params, inputs, rng=None):
        rngs = {"dropout": rng} if rng is not None else {}
        return self.model.apply(
            {"params": self.model_params(params)}, inputs, deterministic=rng is None, rngs=rngs
        )

    def loss_fn(self, params, batch, rng, train):
        logits = self.logits(params, batch["inputs"], rng if train else None)
        return cross_entropy_sum(logits, batch["labels"])  # [B, C], [B]

    def eval_step(self, params, batch) -> dict:
        s, n = self.loss_fn(params, batch, None, False)
        hit = jnp.argmax(self.logits(params, batch["inputs"]), -1) == batch["labels"]
        return {"loss": s, "count": n, "acc": jnp.sum(hit).astype(jnp.float32)}

    def report(self, params, step: int, metrics: dict) -> tuple[dict, str]:
        ta, va = metrics["eval_train_acc"], metrics["val_acc"]
        return {}, f" | train acc {100 * ta:.2f}%, val acc {100 * va:.2f}%"

    def describe(self, params) -> str:
        return f"{super().describe(params)} ({self.opts.trainable})"

    def final_model(self, params) -> Model:
        params = self.model_params(params)
        return Model(self.cfg, params, head=self.head, tokenizer=self.tokenizer)

    def finish(self, params) -> Model:
        """The accuracy on every whole split (OUT/results.json), then the classifier."""
        acc = {s: self.means(params, s, None)["acc"] for s in textdata.SPLITS}
        model = super().finish(params)
        if jax.process_index() != 0:
            return model
        results = {f"{s}_accuracy": a for s, a in acc.items()}
        results["examples"] = {s: len(d) for s, d in self.data.items()}
        write_json(self.out / "results.json", results)
        print("accuracy: " + ", ".join(f"{s} {100 * a:.2f}%" for s, a in acc.items()))
        print(f"results: {self.out / 'results.json'}")
        return model
