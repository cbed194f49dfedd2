"""The SAE task: a sparse autoencoder trained on one hook point's activations of a frozen
model, over a corpus, through the one training loop (`python -m train.sae`).

Activations are streamed: each batch of windows goes through the model up to the hook point
(a jitted forward, `gptjax.probe`) as it is drawn, and only the SAE's parameters train. Each
evaluation reports, on the validation windows, L0 (latents active per token), the fraction of
variance explained, the share of dead latents (active on no validation token), and the model's
cross entropy with the SAE's reconstruction spliced in at the hook against without it (and with
the activation zeroed: `val_ce_recovered` is the share of that gap the SAE closes). The SAE is
written in SAELens's format to OUT/sae.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from gptjax.data import IGNORE
from gptjax.data.corpus import Shuffled
from gptjax.probe import hook_names, run_with_cache, run_with_hooks
from gptjax.probe import sae as sparse
from gptjax.store import Model
from gptjax.tasks.options import RunOptions
from gptjax.tasks.pretrain import corpus
from gptjax.training import parallel
from gptjax.training.cross_entropy import target_logprobs
from gptjax.training.evaluator import Evaluator
from gptjax.training.task import Task


@dataclass(frozen=True)
class Options(RunOptions):
    ckpt: str = ""
    """the model: a run, a model folder, or a Hugging Face / OpenAI folder"""
    hook: str = "blocks.0.hook_resid_post"
    """the hook point (TransformerLens's name, [B, T, D] activations: gptjax.probe.hook_names)"""
    data: str = "the-verdict"
    """the corpus: a named dataset, a .txt / .jsonl(.gz) / .parquet file or a folder of them"""
    text_field: str = "text"
    """the field of a .jsonl / .parquet record that holds its text"""
    architecture: Literal[*sparse.ARCHITECTURES] = "topk"
    """topk (the k largest latents) or relu (with an L1 penalty: SAELens's standard SAE)"""
    expansion: int = 8
    """latents per activation dimension (the SAE's width is expansion x D)"""
    k: int = 32
    """topk: latents active per token"""
    l1: float = 5.0
    """relu: weight of the L1 penalty (latents weighted by their decoder norms)"""
    context_length: int = 0
    """tokens per window (0: the model's context)"""
    train_ratio: float = 0.9
    """leading fraction of the corpus's tokens used for training"""
    lr: float = 1e-3
    """learning rate"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    min_lr_ratio: float = 1.0
    """cosine decay ends at this fraction of --lr"""
    eval_every: int = 100
    """steps between evaluations"""


class Activations(Shuffled):
    """Windows of a corpus, handed on as the hook point's activations of a frozen model,
    computed a batch at a time (never stored whole): {"acts": float32 [B, T, D]}."""

    def __init__(self, windows, acts):
        self.windows, self.acts = windows, acts

    def __len__(self) -> int:
        return len(self.windows)

    def batch(self, rows) -> dict[str, np.ndarray]:
        return {"acts": np.asarray(self.acts(self.windows.batch(rows)["inputs"]))}


class SAE(Task):
    """A sparse autoencoder on one hook point of a frozen model."""

    count = "tokens"
    plot_x = "step"
    sums = ("mse", "l0", "l1")  # per token, in the train step's record

    def __init__(self, opts: Options):
        if not opts.ckpt:
            raise ValueError("--ckpt: the model whose activations the SAE learns is required")
        model = Model.open(opts.ckpt)
        self.opts, self.out, self.cfg = opts, Path(opts.out), model.cfg
        if opts.hook not in hook_names(model.cfg):
            raise ValueError(
                f"--hook {opts.hook!r}: no such hook point in this model; for example "
                f"{', '.join(hook_names(model.cfg)[:4])} (gptjax.probe.hook_names)"
            )
        self.model = jax.device_put(model.params)
        T = model.cfg.fit(opts.context_length or None, "--context-length")
        enc, field = model.encoding(), opts.text_field
        train, val = corpus(opts.data, T, opts.train_ratio, enc=enc, text_field=field)
        shape = jax.eval_shape(self.activations, self.model, jnp.zeros((1, T), jnp.int32)).shape
        if len(shape) != 3:
            raise ValueError(
                f"--hook {opts.hook}: its activations are {len(shape)}-D; an SAE reads a "
                "[B, T, D] point (hook_resid_*, hook_attn_out, hook_mlp_out, mlp.hook_post, ...)"
            )
        meta = {"hook_name": opts.hook, "model_name": opts.ckpt, "dataset_path": opts.data}
        meta |= {"context_size": T, "prepend_bos": False}
        D = shape[-1]
        self.sae = sparse.SAEConfig(
            D, opts.expansion * D, opts.architecture, opts.k, opts.l1, metadata=meta
        )
        acts = jax.jit(self.activations)
        self.train = Activations(train, lambda tokens: acts(self.model, tokens))
        self.data = {"train": self.train, "validation": val}
        self.seen = ("tokens_seen", T)
        self.identity = {"task": "sae", "model": model.cfg.to_dict(), "sae": asdict(self.sae)}
        self.evaluator = Evaluator(
            self.eval_step, parallel.make_mesh(), opts.batch_size, opts.eval_batches
        )
        self.plots = {
            "sae.png": [
                ("loss", {"train_loss": "train (per token)"}),
                ("explained variance", {"val_explained_variance": "val"}),
                ("cross entropy", {"val_ce_sae": "with the SAE", "val_ce_clean": "without"}),
            ]
        }

    def activations(self, params, tokens):
        """tokens [B, T] -> the hook point's activations [B, T, D]."""
        return run_with_cache(self.cfg, params, tokens, [self.opts.hook])[1][self.opts.hook]

    def loss_fn(self, params, batch, rng, train):
        x = batch["acts"]
        return sparse.loss_sums(self.sae, params, x.reshape(-1, x.shape[-1]))

    def eval_step(self, params, batch) -> dict:
        """Sums over a batch of windows (rows of targets IGNORE count for nothing)."""
        cfg, hook, model = self.cfg, self.opts.hook, self.model
        real = batch["targets"] != IGNORE  # [B, T]
        w = real.astype(jnp.float32)
        logits, cache = run_with_cache(cfg, model, batch["inputs"], [hook])
        x = cache[hook]
        z = sparse.encode(self.sae, params, x)
        x_hat = sparse.decode(params, z)
        mean = jnp.sum(x * w[..., None], (0, 1)) / jnp.maximum(w.sum(), 1.0)

        def ce(lg):
            targets = jnp.where(real, batch["targets"], 0)
            return -jnp.sum(target_logprobs(lg, targets) * w)

        spliced = run_with_hooks(cfg, model, batch["inputs"], {hook: lambda a, h: x_hat})
        zeroed = run_with_hooks(cfg, model, batch["inputs"], {hook: lambda a, h: 0.0 * a})
        return {
            "tokens": w.sum(),
            "mse": jnp.sum(jnp.sum(jnp.square(x_hat - x), -1) * w),
            "variance": jnp.sum(jnp.sum(jnp.square(x - mean), -1) * w),
            "l0": jnp.sum(jnp.sum(z > 0, -1) * w),
            "fired": jnp.sum((z > 0) * w[..., None], (0, 1)),
            "ce_clean": ce(logits),
            "ce_sae": ce(spliced),
            "ce_zero": ce(zeroed),
        }

    def evaluate(self, params, step: int) -> tuple[dict, str]:
        s = self.evaluator.sums(params, self.data["validation"])
        n = s["tokens"]
        ce = {k: float(s[f"ce_{k}"] / n) for k in ("clean", "sae", "zero")}
        gap = ce["zero"] - ce["clean"]
        metrics = {
            "val_mse": float(s["mse"] / n),
            "val_explained_variance": float(1.0 - s["mse"] / s["variance"]),
            "val_l0": float(s["l0"] / n),
            "val_dead": float(np.mean(np.asarray(s["fired"]) == 0)),
            **{f"val_ce_{k}": v for k, v in ce.items()},
            "val_ce_recovered": float((ce["zero"] - ce["sae"]) / gap) if gap else float("nan"),
        }
        m = metrics
        line = (
            f"step {step}: L0 {m['val_l0']:.1f}, explained variance "
            f"{m['val_explained_variance']:.3f}, dead {m['val_dead']:.1%}, CE {ce['sae']:.3f} "
            f"with the SAE vs {ce['clean']:.3f} without ({ce['zero']:.3f} zeroed)"
        )
        return metrics, line

    def init_params(self):
        return sparse.init_sae(self.sae, jax.random.key(self.opts.seed))

    def describe(self, params) -> str:
        s = self.sae
        kind = f"TopK k={s.k}" if s.architecture == "topk" else f"ReLU, L1 {s.l1:g}"
        return f"SAE on {self.opts.hook}: {s.d_in} -> {s.d_sae} latents ({kind})"

    def finish(self, params) -> None:
        sae = jax.tree.map(np.asarray, params)
        if jax.process_index() == 0:
            print(f"sae: {sparse.save(self.sae, sae, self.out / 'sae')} (SAELens's format)")
