"""What a narrow weight format costs in quality: validation loss and agreement with fp32.

    python -m train.bench.weights --ckpt runs/tiny [--data the-verdict] [--json]

prints one row per format of `--weights` (`gptjax.model.weights`): the validation loss in nats
per token over --windows windows of --seq-len tokens from --data's validation split (its last
10%, cut at a document start as pretraining cuts it), its change from fp32's, top-1 agreement
(the share of those positions whose most likely next token is fp32's) and greedy agreement
(the share of --new-tokens greedy tokens, continuing --prompts prompts cut from the same
windows, equal to fp32's at the same place). Without --ckpt, random weights of --preset. A toy
vocabulary smaller than GPT-2's (the converters' test checkpoints) reads the text's GPT-2 ids
folded into its rows (id mod V).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from gptjax.config import PRESETS, GPTConfig
from gptjax.data import tokenizer
from gptjax.inference.generation import generate
from gptjax.model.gpt import GPT
from gptjax.model.weights import WEIGHTS, quantize
from gptjax.options import parse, run_cli
from gptjax.store import Model, open_or_preset
from gptjax.tasks.pretrain import corpus
from gptjax.training.cross_entropy import cross_entropy_sum
from train.bench.suite import Row


@dataclass(frozen=True)
class Options:
    ckpt: str | None = None
    """checkpoint, run or HF folder (unset: random weights of --preset)"""
    preset: Literal[*PRESETS] = "tiny"
    """model size when no --ckpt is given"""
    data: str = "the-verdict"
    """text whose validation split is scored (a name, .txt file or folder)"""
    seq_len: int = 128
    """tokens per window (at most the model's context)"""
    windows: int = 32
    """validation windows scored"""
    prompts: int = 8
    """greedy continuations compared, each from the start of a window"""
    prompt_len: int = 16
    """prompt tokens of each continuation"""
    new_tokens: int = 32
    """greedy tokens per continuation"""
    weights: tuple[Literal[*WEIGHTS], ...] = WEIGHTS
    """formats to score (fp32 is always the reference)"""
    json: bool = False
    """print JSON lines instead of a table"""


@partial(jax.jit, static_argnames="cfg")
def scores(cfg: GPTConfig, params, batch):
    """{"inputs", "targets"} [W, T] -> (loss summed over the W x T targets, argmax [W, T])."""
    logits = GPT(cfg).apply({"params": params}, batch["inputs"])
    return cross_entropy_sum(logits, batch["targets"])[0], logits.argmax(-1)


def validation_batch(opts: Options, cfg: GPTConfig, enc) -> dict[str, np.ndarray]:
    """The first --windows windows of --data's validation split as pretraining cuts it
    (`train.pretrain.corpus`), ids folded into the model's vocabulary."""
    _, val = corpus(opts.data, min(opts.seq_len, cfg.context_length), 0.9, enc=enc)
    batch = val.batch(np.arange(min(opts.windows, len(val))))
    return {k: v % cfg.vocab_size for k, v in batch.items()}  # unchanged unless a toy vocabulary


def rows(opts: Options):
    # Model.open, not open_or_preset, which refuses a vocabulary GPT-2's tokenizer overflows.
    model = Model.open(opts.ckpt) if opts.ckpt else open_or_preset(None, opts.preset)
    cfg, fp32 = model.cfg, jax.device_put(model.params)
    toy = model.tokenizer is None and not tokenizer.has_eot(cfg.vocab_size)
    batch = validation_batch(opts, cfg, tokenizer.gpt2() if toy else model.encoding())
    positions = batch["targets"].size
    prompts = batch["inputs"][: opts.prompts, : opts.prompt_len]
    new = min(opts.new_tokens, cfg.context_length - prompts.shape[1])
    ref_loss = ref_top = ref_greedy = None
    for name in dict.fromkeys(("fp32", *opts.weights)):
        params = quantize(fp32, name)
        nll, top = scores(cfg, params, batch)
        greedy = np.asarray(generate(cfg, params, prompts, max_new_tokens=new))[:, -new:]
        loss = float(nll) / positions
        if name == "fp32":
            ref_loss, ref_top, ref_greedy = loss, top, greedy
        yield {
            "weights": name,
            "val_loss": loss,
            "delta_loss": loss - ref_loss,
            "top1_agreement": float(jnp.mean(top == ref_top)),
            "greedy_agreement": float(np.mean(greedy == ref_greedy)),
            "positions": int(positions),
            "greedy_tokens": int(greedy.size),
        }


def main(argv=None) -> None:
    opts = parse(Options, argv, __doc__)
    if not opts.json:
        print(
            f"{'weights':>8} {'val loss':>9} {'change':>8} {'top-1 agree':>12} {'greedy agree':>13}"
        )
    for row in rows(opts):
        if opts.json:
            figures = {k: v for k, v in row.items() if k != "weights"}
            print(Row("quality", weights=row["weights"], extra=figures).json(), flush=True)
        else:
            print(
                f"{row['weights']:>8} {row['val_loss']:>9.4f} {row['delta_loss']:>+8.4f} "
                f"{100 * row['top1_agreement']:>11.2f}% {100 * row['greedy_agreement']:>12.2f}%",
                flush=True,
            )


if __name__ == "__main__":
    run_cli(main)
